"""What the node reports of a pod: each container's view (from its attempts, why it waits, its probes and its
postStart hook), the pod's status built from those views (status.py), and the report itself: patched only
when it changed, and a final one before the node removes a pod, as kubelets since 1.27 write it."""

from __future__ import annotations

import json
import logging
from typing import Any

from kubernetes_asyncio.client.rest import ApiException

from mlplatform.local.images import prepared_key
from mlplatform.local.node import runtime
from mlplatform.local.node.api import rfc3339
from mlplatform.local.node.containers import PodContainers
from mlplatform.local.node.podcontext import PodContext
from mlplatform.local.node.podprobes import PodProbes
from mlplatform.local.node.status import Attempt, ContainerView, pod_status

Manifest = dict[str, Any]
log = logging.getLogger(__name__)
TERMINAL_PHASES = ("Succeeded", "Failed")


def container_view(
    container: Manifest,
    latest: Attempt | None,
    previous: Attempt | None,
    waiting: tuple[str, str] | None,
    *,
    restarts: bool,
    post_start_running: bool,
    startup_passed: bool,
    readiness_passed: bool,
    runs_to_completion: bool,
    sidecar: bool,
    image_id: str = "",
) -> ContainerView:
    """A container's view as the kubelet reports it. `waiting` is why it does not run, `restarts` whether
    its latest attempt runs again once ended, `post_start_running` whether that attempt's postStart hook
    still runs, `startup_passed`/`readiness_passed` what its probes last said."""
    if latest is not None and (latest.running or not restarts):
        waiting = None  # a reason to wait only counts for a container that is to (re)start
    if latest is not None and latest.running and post_start_running:
        waiting = ("ContainerCreating", "")  # the kubelet reports a container once its postStart ended
    running = latest is not None and latest.running and waiting is None
    started = waiting is None and startup_passed
    if runs_to_completion:
        ready = latest is not None and latest.succeeded  # the kubelet's: an init container done is ready
    else:
        ready = running and started and readiness_passed
    if waiting is None and latest is not None and latest.running and latest.started_at is None:
        waiting = ("ContainerCreating", "")
    return ContainerView(
        container["name"],
        container["image"],
        image_id,
        latest,
        previous,
        waiting,
        bool(ready),
        started,
        sidecar=sidecar,
    )


def without_times(status: Manifest) -> Manifest:
    """The status without its conditions' transition times: what tells whether anything changed."""
    copy: Manifest = json.loads(json.dumps(status))
    for condition in copy.get("conditions", []):
        condition.pop("lastTransitionTime", None)
    return copy


class PodStatusReporter:
    def __init__(self, pod: PodContext, probes: PodProbes, containers: PodContainers) -> None:
        self.pod = pod
        self.probes = probes
        self.containers = containers
        self.reported: Manifest | None = None  # the status last written
        self.terminal_reason: dict[str, str] | None = None  # why the node ended the pod (a deadline)

    def finished(self) -> bool:
        return (self.reported or {}).get("phase") in TERMINAL_PHASES

    def view(self, container: Manifest, final: bool = False) -> ContainerView:
        """What the node knows of a container; `final`: the pod is stopping for good, nothing restarts."""
        name, pod = container["name"], self.pod
        latest, previous = pod.attempts(name)
        environment = pod.images.get(name)
        prepared = pod.node.environments.get(prepared_key(environment)) if environment else None
        return container_view(
            container,
            latest,
            previous,
            None if final else pod.waiting.get(name),
            restarts=latest is not None and pod.restarts(container, latest),
            post_start_running=latest is not None and self.containers.post_start_running(name, latest.number),
            startup_passed=self.probes.started(name),
            readiness_passed=self.probes.ready(name),
            runs_to_completion=pod.runs_to_completion(name),
            sidecar=pod.is_sidecar(name),
            image_id=prepared.image_id if prepared else "",
        )

    async def report_final(self) -> None:
        """The pod's last status, written before the node removes it, as kubelets since 1.27 do: the
        terminal phase and how each container ended (exit code, reason, termination message), which is
        what a Job's controller and a user read about why the pod ended."""
        if self.finished() or (self.pod.manifest.get("status") or {}).get("phase") in TERMINAL_PHASES:
            return  # a pod that had ended keeps the status it ended with
        try:
            await self.report(final=True)
        except ApiException as exc:
            if exc.status != 404:  # gone already: nobody is left to read it
                raise

    def status(self, final: bool) -> Manifest:
        pod = self.pod
        init_views = [self.view(c, final) for c in pod.spec.get("initContainers") or []]
        views = [self.view(c, final) for c in pod.spec["containers"]]
        record = runtime.read_sandbox(pod.layout)
        host = pod.node.config.network.host_address
        pod_ip = (
            (host if pod.spec.get("hostNetwork") else record.ip)
            if record
            else (self.reported or {}).get("podIP")
        )
        return pod_status(
            pod.manifest,
            init_views,
            views,
            sandbox_ready=record is not None and record.holder.alive(),
            pod_ip=pod_ip,
            host_ip=host,
            start_time=(pod.manifest.get("status") or {}).get("startTime") or rfc3339(),
            stamp=rfc3339(),
            reason=self.terminal_reason,
            terminal=final,
        )

    async def report(self, final: bool = False) -> None:
        """Write the pod's status if it changed since last written."""
        status = self.status(final)
        if self.reported is not None and without_times(self.reported) == without_times(status):
            return
        if status["phase"] != (self.reported or {}).get("phase"):
            log.info("pod %s: %s", self.pod.name, status["phase"])
        metadata = self.pod.manifest["metadata"]
        updated = await self.pod.node.api.patch_pod_status(metadata["namespace"], metadata["name"], status)
        self.pod.manifest = {**self.pod.manifest, "status": updated.get("status", status)}
        self.reported = status
