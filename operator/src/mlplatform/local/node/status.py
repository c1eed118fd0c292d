"""A pod's status from what the node knows of its containers (pure functions, kubelet semantics)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Manifest = dict[str, Any]
CONTAINER_ID_SCHEME = "mlplatform"


@dataclass(frozen=True)
class Attempt:
    """One run of a container, as its shim recorded it."""

    number: int
    container_id: str
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    signal: int | None = None

    @property
    def running(self) -> bool:
        return self.started_at is not None and self.finished_at is None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def succeeded(self) -> bool:
        return self.finished and self.exit_code == 0

    def terminated(self) -> Manifest:
        state: Manifest = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "containerID": self.container_id,
        }
        if self.message:
            state["message"] = self.message
        if self.signal:
            state["signal"] = self.signal
        return state


@dataclass(frozen=True)
class ContainerView:
    """What the node knows of one container of a pod."""

    name: str
    image: str
    image_id: str = ""
    latest: Attempt | None = None
    previous: Attempt | None = None
    waiting: tuple[str, str] | None = None  # (reason, message) while it does not run
    ready: bool = False
    started: bool = False
    sidecar: bool = False  # an init container with restartPolicy Always: it runs beside the main ones

    @property
    def restart_count(self) -> int:
        return self.latest.number if self.latest else 0

    @property
    def crash_looping(self) -> bool:
        """Waiting to run again after a run that ended (the kubelet counts it as stopped, not as waiting)."""
        ended = any(attempt is not None and attempt.finished for attempt in (self.latest, self.previous))
        return self.waiting is not None and ended

    @property
    def started_and_running(self) -> bool:
        """Running and started as the kubelet reports `started`: its postStart hook ended, its startup probe
        passed."""
        return self.started and self.latest is not None and self.latest.running


def container_status(view: ContainerView) -> Manifest:
    latest = view.latest
    last_state: Manifest = {}
    if view.waiting is not None:
        state: Manifest = {"waiting": {"reason": view.waiting[0], "message": view.waiting[1]}}
        if latest and latest.finished:
            last_state = {"terminated": latest.terminated()}
    elif latest and latest.running:
        state = {"running": {"startedAt": latest.started_at}}
    elif latest and latest.finished:
        state = {"terminated": latest.terminated()}
    else:
        state = {"waiting": {"reason": "ContainerCreating"}}
    if not last_state and view.previous and view.previous.finished:
        last_state = {"terminated": view.previous.terminated()}
    status: Manifest = {
        "name": view.name,
        "image": view.image,
        "imageID": view.image_id,
        "ready": view.ready,
        "started": view.started_and_running,
        "restartCount": view.restart_count,
        "state": state,
        "lastState": last_state,
    }
    if latest:
        status["containerID"] = latest.container_id
    return status


def init_done(view: ContainerView) -> bool:
    """Whether an init container did its part of the init sequence: a sidecar once it started (it keeps
    running), any other once it succeeded."""
    if view.sidecar:
        return view.started_and_running and view.waiting is None
    return view.latest is not None and view.latest.succeeded and view.waiting is None


def init_complete(init_views: Sequence[ContainerView]) -> bool:
    return all(init_done(v) for v in init_views)


def init_failed(init_views: Sequence[ContainerView], restart_policy: str) -> bool:
    return restart_policy == "Never" and any(
        not v.sidecar and v.latest is not None and v.latest.finished and not v.latest.succeeded
        for v in init_views
    )


def any_started(views: Sequence[ContainerView]) -> bool:
    """Whether a main container has run: the init sequence was through (the kubelet's podHasInitialized)."""
    return any(v.latest is not None for v in views)


def phase(
    restart_policy: str,
    init_views: Sequence[ContainerView],
    views: Sequence[ContainerView],
    terminal: bool = False,
) -> str:
    """The kubelet's getPhase: Pending, Running, Succeeded or Failed. `terminal`: the pod is being
    stopped for good (deleted), so no container restarts whatever the restart policy."""
    if init_failed(init_views, restart_policy):
        return "Failed"
    regular_init = [v for v in init_views if not v.sidecar]
    if not init_complete(regular_init) or not (any_started(views) or init_complete(init_views)):
        return "Pending"
    running = sum(1 for v in views if v.latest and v.latest.running and v.waiting is None)
    stopped = [v for v in views if (v.latest and v.latest.finished and v.waiting is None) or v.crash_looping]
    waiting = len(views) - running - len(stopped)
    # A sidecar running counts as running; one that ended (or waits to run again) counts for nothing: the
    # main containers alone decide whether the pod succeeded.
    sidecars = [v for v in init_views if v.sidecar]
    running += sum(1 for v in sidecars if v.latest and v.latest.running and v.waiting is None)
    waiting += sum(1 for v in sidecars if v.latest is None or (v.waiting and not v.crash_looping))
    if waiting:
        return "Pending"  # as the kubelet: a container that has not started yet keeps the pod Pending
    if running:
        return "Running"
    if stopped:
        if terminal:
            return "Succeeded" if all(v.latest and v.latest.succeeded for v in stopped) else "Failed"
        if restart_policy == "Always":
            return "Running"
        if all(v.latest and v.latest.succeeded and not v.crash_looping for v in stopped):
            return "Succeeded"
        return "Failed" if restart_policy == "Never" else "Running"
    return "Pending"


def _condition(kind: str, ok: bool, reason: str = "", message: str = "") -> Manifest:
    condition: Manifest = {"type": kind, "status": "True" if ok else "False"}
    if not ok and reason:
        condition["reason"] = reason
    if not ok and message:
        condition["message"] = message
    return condition


def conditions(
    pod: Manifest,
    pod_phase: str,
    sandbox_ready: bool,
    init_views: Sequence[ContainerView],
    views: Sequence[ContainerView],
) -> list[Manifest]:
    """PodReadyToStartContainers, Initialized, ContainersReady and Ready (readiness gates included)."""
    terminal = pod_phase in ("Succeeded", "Failed")
    incomplete = [v.name for v in init_views if not init_done(v)]
    sidecars = [v for v in init_views if v.sidecar]  # their readiness counts, listed first (kubelet)
    unready = [v.name for v in [*sidecars, *views] if not v.ready]
    initialized = _condition(
        "Initialized",
        not incomplete or any_started(views) or pod_phase == "Succeeded",
        "ContainersNotInitialized",
        f"containers with incomplete status: [{' '.join(incomplete)}]",
    )
    if terminal:
        ready_reason, ready_message = "PodCompleted", ""
    else:
        ready_reason, ready_message = (
            "ContainersNotReady",
            f"containers with unready status: [{' '.join(unready)}]",
        )
    containers_ready = _condition(
        "ContainersReady", not unready and not terminal, ready_reason, ready_message
    )
    existing = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
    gates = [g["conditionType"] for g in pod["spec"].get("readinessGates") or []]
    unmet_gates = [g for g in gates if existing.get(g, {}).get("status") != "True"]
    if containers_ready["status"] == "True" and unmet_gates:
        ready = _condition(
            "Ready",
            False,
            "ReadinessGatesNotReady",
            f'corresponding condition of pod readiness gate "{unmet_gates[0]}" does not exist.',
        )
    else:
        ready = {**containers_ready, "type": "Ready"}
    return [
        _condition("PodReadyToStartContainers", sandbox_ready and not terminal),
        initialized,
        containers_ready,
        ready,
    ]


def with_transition_times(new: Sequence[Manifest], old: Sequence[Manifest], stamp: str) -> list[Manifest]:
    """Keep each condition's lastTransitionTime unless its status changed; keep conditions others own."""
    previous = {c["type"]: c for c in old}
    merged = []
    for condition in new:
        before = previous.get(condition["type"]) or {}
        unchanged = before.get("status") == condition["status"]
        merged.append(
            {
                **condition,
                "lastProbeTime": None,
                "lastTransitionTime": before.get("lastTransitionTime", stamp) if unchanged else stamp,
            }
        )
    ours = {c["type"] for c in new}
    merged += [c for c in old if c["type"] not in ours]
    return merged


def pod_status(
    pod: Manifest,
    init_views: Sequence[ContainerView],
    views: Sequence[ContainerView],
    *,
    sandbox_ready: bool,
    pod_ip: str | None,
    host_ip: str,
    start_time: str,
    stamp: str,
    reason: Mapping[str, str] | None = None,
    terminal: bool = False,
) -> Manifest:
    """The status the node reports for `pod`; `terminal`: its last, once every container stopped for
    good — Succeeded or Failed as the kubelet's getPhase computes it, Failed if it never got that far
    (the kubelet's TerminatePod)."""
    restart_policy = pod["spec"].get("restartPolicy", "Always")
    pod_phase = "Failed" if reason else phase(restart_policy, init_views, views, terminal)
    if terminal and pod_phase not in ("Succeeded", "Failed"):
        pod_phase = "Failed"
    old = (pod.get("status") or {}).get("conditions") or []
    status: Manifest = {
        "phase": pod_phase,
        "conditions": with_transition_times(
            conditions(pod, pod_phase, sandbox_ready, init_views, views), old, stamp
        ),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "containerStatuses": [container_status(v) for v in views],
    }
    if init_views:
        status["initContainerStatuses"] = [container_status(v) for v in init_views]
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if reason:
        status.update(reason)
    return status
