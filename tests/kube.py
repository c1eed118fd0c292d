"""Small helpers the cluster, platform and end-to-end tests share."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from mlplatform import names

T = TypeVar("T")


def eventually(
    condition: Callable[[], T], timeout: float = 60, what: str = "condition", interval: float = 0.3
) -> T:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout}s (last value: {last!r})")


def kubectl(
    kubectl_bin: Path, kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(kubectl_bin), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def apply(kubectl_bin: Path, kubeconfig: Path, namespace: str, manifest: str | dict[str, Any]) -> None:
    text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
    kubectl(kubectl_bin, kubeconfig, "apply", "-n", namespace, "-f", "-", stdin=text)


def pod(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod | None:
    try:
        return core.read_namespaced_pod(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def container_state(found: client.V1Pod | None, name: str | None = None) -> Any:
    """The state of a pod's container (the first one unless named)."""
    if found is None or not found.status.container_statuses:
        return None
    statuses = found.status.container_statuses
    status = next((s for s in statuses if s.name == name), None) if name else statuses[0]
    return status.state if status else None


def pods_of(core: client.CoreV1Api, namespace: str, selector: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(namespace, label_selector=selector).items)


def is_ready(found: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in found.status.conditions or [])


def job_outcome(api_client: client.ApiClient, namespace: str, name: str, timeout: float = 120) -> str:
    """Wait for a Job to finish: its terminal condition, "Complete" or "Failed"."""
    batch = client.BatchV1Api(api_client)

    def condition() -> str | None:
        conditions = batch.read_namespaced_job(name, namespace).status.conditions or []
        done = [c.type for c in conditions if c.status == "True" and c.type in ("Complete", "Failed")]
        return done[0] if done else None

    outcome: str = eventually(condition, timeout=timeout, what=f"job {name} finished")
    return outcome


def finished(core: client.CoreV1Api, namespace: str, name: str, timeout: float = 60) -> client.V1Pod:
    """Wait for a pod to end (Succeeded or Failed) and return it."""

    def ended() -> client.V1Pod | None:
        found = pod(core, namespace, name)
        return found if found is not None and found.status.phase in ("Succeeded", "Failed") else None

    result: client.V1Pod = eventually(ended, timeout=timeout, what=f"pod {name} finished")
    return result


def python_pod(
    name: str, script: str, *args: str, container: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    """A pod whose one container runs `python3 -c script args…` (image python:3.11, the machine's Python);
    `container` adds to the container, keywords to the pod's spec."""
    main = {
        "name": "main",
        "image": "python:3.11",
        "command": ["python3", "-c", script, *args],
        **(container or {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5, **spec, "containers": [main]},
    }


def stateful_set_with_claim(
    name: str, container: dict[str, Any], mount_path: str | None, storage: str = "64Mi", **spec: Any
) -> dict[str, Any]:
    """A one-replica StatefulSet of `container` (its Service name is `name`) whose volumeClaimTemplate
    `data` (the default class) is mounted at `mount_path` (None: the container mounts `data` itself); its
    claim is `data-<name>-0`. Keywords add to the pod's spec."""
    labels = {"app": name}
    mounts = [*(container.get("volumeMounts") or [])]
    if mount_path is not None:
        mounts.append({"name": "data", "mountPath": mount_path})
    claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    **spec,
                    "containers": [{**container, "volumeMounts": mounts}],
                },
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": claim}],
        },
    }


def processes_with(marker: str) -> list[psutil.Process]:
    """Live host processes with `marker` as an argument of their command line (a container's process)."""
    return [
        p
        for p in psutil.process_iter(["cmdline", "status"])
        if marker in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE
    ]


def custom_object(
    api_client: client.ApiClient, plural: str, namespace: str, name: str
) -> dict[str, Any] | None:
    """One of our custom objects (group mlplatform.dev), or None if it does not exist."""
    try:
        found: dict[str, Any] = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, plural, name
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found


@contextlib.contextmanager
def fresh_namespace(api_client: client.ApiClient, prefix: str = "test") -> Iterator[str]:
    """A new namespace, deleted (with all it holds) when the block ends."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


def pod_events(
    core: client.CoreV1Api, namespace: str, name: str, version: str | None = None, timeout: int = 90
) -> Iterator[dict[str, Any]]:
    """The watch events of the pod `name` (from `version` on, or from its current state), for at most
    `timeout` seconds; stop by leaving the loop."""
    stream = watch.Watch()
    since = {"resource_version": version} if version is not None else {}
    try:
        yield from stream.stream(
            core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            timeout_seconds=timeout,
            **since,
        )
    finally:
        stream.stop()
