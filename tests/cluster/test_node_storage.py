"""PersistentVolumeClaims on the local node: the default class's provisioner makes a folder under the
state directory once a pod needs the claim, the pod mounts that real folder (read-only when asked), its
data outlives the pod, deleting the claim removes the folder, and a claim not bound yet holds the pod."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kube import (
    apply,
    container_state,
    eventually,
    finished,
    pod,
    python_pod,
    stateful_set_with_claim,
)
from mlplatform.local.config import LocalConfig, StateLayout
from mlplatform.local.storage import volumes_dir

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_node")]

WRITE = """
import errno, pathlib
pathlib.Path('/data/greeting').write_text('hello from the pod')
try:
    pathlib.Path('/ro/other').write_text('x')
except OSError as exc:
    assert exc.errno == errno.EROFS, exc
else:
    raise SystemExit('the read-only mount was writable')
"""
READ_ONLY_CLAIM = """
import errno, pathlib
assert pathlib.Path('/data/greeting').read_text() == 'hello from the pod'
try:
    pathlib.Path('/data/other').write_text('x')
except OSError as exc:
    assert exc.errno == errno.EROFS, exc
else:
    raise SystemExit('the read-only claim was writable')
"""
COUNT_VISITS = """
import pathlib, time
visits = pathlib.Path('/data/visits')
count = int(visits.read_text()) + 1 if visits.exists() else 1
visits.write_text(str(count))
print('visit', count, flush=True)
time.sleep(3600)
"""


def claim(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}, **spec},
    }


def claim_volume(claim_name: str, read_only: bool = False) -> dict[str, Any]:
    return {"name": "data", "persistentVolumeClaim": {"claimName": claim_name, "readOnly": read_only}}


def succeeded(core: client.CoreV1Api, namespace: str, name: str) -> None:
    found = finished(core, namespace, name, timeout=180)
    log = core.read_namespaced_pod_log(name, namespace)
    assert found.status.phase == "Succeeded", f"{name}: {container_state(found)}\n{log}"


def phase_of(core: client.CoreV1Api, namespace: str, name: str) -> str:
    return str(core.read_namespaced_persistent_volume_claim(name, namespace).status.phase)


def failed_mounts(core: client.CoreV1Api, namespace: str, pod_name: str) -> list[str]:
    events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod_name}").items
    return [e.message for e in events if e.reason == "FailedMount"]


def test_a_claim_binds_once_a_pod_uses_it_and_mounts_a_folder_under_the_state_directory(
    local_cluster: LocalConfig,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
) -> None:
    core = client.CoreV1Api(api_client)
    apply(kubectl_bin, kubeconfig, namespace, claim("data"))
    pvc = core.read_namespaced_persistent_volume_claim("data", namespace)
    assert pvc.spec.storage_class_name == "standard"  # the default class
    assert pvc.status.phase == "Pending"  # WaitForFirstConsumer: no pod needs it yet

    mounts = [{"name": "data", "mountPath": "/data"}, {"name": "data", "mountPath": "/ro", "readOnly": True}]
    writer = python_pod("writer", WRITE, container={"volumeMounts": mounts}, volumes=[claim_volume("data")])
    apply(kubectl_bin, kubeconfig, namespace, writer)
    succeeded(core, namespace, "writer")
    assert phase_of(core, namespace, "data") == "Bound"
    volume = core.read_persistent_volume(
        core.read_namespaced_persistent_volume_claim("data", namespace).spec.volume_name
    )
    folder = Path(volume.spec.host_path.path)
    assert folder.parent == volumes_dir(StateLayout(local_cluster.state_dir))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777  # as on kind: non-root pods can write
    assert (folder / "greeting").read_text() == "hello from the pod"

    reader = python_pod(
        "reader",
        READ_ONLY_CLAIM,
        container={"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        volumes=[claim_volume("data", read_only=True)],
    )
    apply(kubectl_bin, kubeconfig, namespace, reader)
    succeeded(core, namespace, "reader")

    for name in ("writer", "reader"):  # a claim is in use, and kept, while any pod names it
        core.delete_namespaced_pod(name, namespace)
    core.delete_namespaced_persistent_volume_claim("data", namespace)
    eventually(lambda: not folder.exists(), timeout=180, what="the teardown helper removed the folder")
    eventually(
        lambda: volume.metadata.name not in {v.metadata.name for v in core.list_persistent_volume().items},
        timeout=60,
        what="the volume deleted (reclaim policy Delete)",
    )


def test_a_stateful_sets_data_survives_its_pods_deletion(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    core = client.CoreV1Api(api_client)
    container = {"name": "main", "image": "python:3.11", "command": ["python3", "-c", COUNT_VISITS]}
    apply(kubectl_bin, kubeconfig, namespace, stateful_set_with_claim("counter", container, "/data"))

    def logged(text: str) -> str | None:
        found = pod(core, namespace, "counter-0")
        if found is None or found.metadata.deletion_timestamp or found.status.phase != "Running":
            return None
        return found.metadata.uid if text in core.read_namespaced_pod_log("counter-0", namespace) else None

    first = eventually(lambda: logged("visit 1"), timeout=180, what="the first pod counted its visit")
    assert phase_of(core, namespace, "data-counter-0") == "Bound"
    core.delete_namespaced_pod("counter-0", namespace)
    second = eventually(lambda: logged("visit 2"), timeout=180, what="the new pod read the same volume")
    assert second != first


def test_a_claim_not_bound_yet_holds_the_pod_until_it_is(
    local_cluster: LocalConfig, api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """A pod placed on the node directly (no scheduler waits for the binding) waits in ContainerCreating,
    saying why, and starts once its claim is bound to a volume."""
    core = client.CoreV1Api(api_client)
    (tmp_path / "greeting").write_text("hello from the pod")
    tmp_path.chmod(0o755)
    spec = {"nodeName": local_cluster.node_name, "volumes": [claim_volume("late", read_only=True)]}
    reader = python_pod(
        "early", READ_ONLY_CLAIM, container={"volumeMounts": [{"name": "data", "mountPath": "/data"}]}, **spec
    )
    core.create_namespaced_pod(namespace, reader)

    def waiting_because(problem: str) -> bool:
        state = container_state(pod(core, namespace, "early"))
        return bool(state and state.waiting and state.waiting.reason == "ContainerCreating") and any(
            problem in m for m in failed_mounts(core, namespace, "early")
        )

    eventually(
        lambda: waiting_because('persistentvolumeclaims "late" not found'), timeout=90, what="missing claim"
    )
    volume_name = f"static-{uuid.uuid4().hex[:8]}"
    core.create_namespaced_persistent_volume_claim(
        namespace, claim("late", storageClassName="", volumeName=volume_name)
    )
    eventually(lambda: waiting_because("has non-bound phase ('Pending')"), timeout=90, what="unbound claim")
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume_name},
        "spec": {
            "capacity": {"storage": "16Mi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(tmp_path), "type": "Directory"},
        },
    }
    core.create_persistent_volume(volume)
    try:
        succeeded(core, namespace, "early")
    finally:
        core.delete_persistent_volume(volume_name)
