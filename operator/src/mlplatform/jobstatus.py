"""What a TrainingRun's Job and pods say about the run: its phase and, when it failed, why.

Pure functions over Job and Pod manifests (as the API returns them), so every failure the operator
reports is unit-tested from the objects a kubelet and the Job controller really write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlplatform.api.trainingrun import Phase

Manifest = Mapping[str, Any]

# Waiting reasons after which a container never starts on its own: the kubelet retries a pull forever,
# so the operator ends the run rather than leaving a Job that holds a slot and never trains.
IMAGE_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_FAILURES = frozenset({"CreateContainerConfigError", "CreateContainerError"})
OOM_EXIT_CODE = 137


@dataclass(frozen=True)
class Observation:
    phase: Phase
    reason: str
    message: str
    started_at: str | None = None
    finished_at: str | None = None
    stop_job: bool = False  # the Job must be stopped: its pod can never start


def observe(job: Manifest, pods: Sequence[Manifest]) -> Observation:
    """The run's state from its Job and the Job's pods (newest last is not required)."""
    status = job.get("status") or {}
    started = status.get("startTime")
    finished = _true_condition(status, "Complete") or _true_condition(status, "SuccessCriteriaMet")
    if finished is not None:
        return Observation(
            Phase.SUCCEEDED,
            "Succeeded",
            "the trainer finished",
            started,
            status.get("completionTime") or finished.get("lastTransitionTime"),
        )
    failed = _true_condition(status, "Failed") or _true_condition(status, "FailureTarget")
    if failed is not None:
        reason, message = _job_failure(job, failed, pods)
        return Observation(Phase.FAILED, reason, message, started, failed.get("lastTransitionTime"))
    if (stuck := _stuck_container(pods)) is not None:
        reason, message = stuck
        return Observation(Phase.FAILED, reason, message, started, None, stop_job=True)
    if _true_condition(status, "Suspended") is not None or (job.get("spec") or {}).get("suspend"):
        return Observation(Phase.PENDING, "Suspended", "the Job is suspended (spec.suspend)", started)
    if any((p.get("status") or {}).get("phase") == "Running" for p in pods):
        return Observation(Phase.RUNNING, "Running", "the trainer is running", started)
    return Observation(Phase.PENDING, "Pending", "waiting for the trainer pod to start", started)


def _true_condition(status: Manifest, kind: str) -> Manifest | None:
    return next(
        (c for c in status.get("conditions") or [] if c.get("type") == kind and c.get("status") == "True"),
        None,
    )


def _job_failure(job: Manifest, condition: Manifest, pods: Sequence[Manifest]) -> tuple[str, str]:
    reason = str(condition.get("reason") or "Failed")
    if reason == "DeadlineExceeded":
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        return reason, f"the run exceeded its deadline (activeDeadlineSeconds: {deadline})"
    if (terminated := _failed_container(pods)) is not None:
        return terminated
    return reason, str(condition.get("message") or "the Job failed")


def _sidecars(pod: Manifest) -> set[str]:
    """Native sidecars: init containers that run beside the main ones (restartPolicy Always)."""
    init = (pod.get("spec") or {}).get("initContainers") or []
    return {c.get("name") for c in init if c.get("restartPolicy") == "Always"}


def _by_blame(pod: Manifest) -> list[Manifest]:
    """Container statuses in the order a failure is blamed on them: main containers, then init
    containers, then sidecars (which the kubelet stops, often with 143, once the main containers end)."""
    status = pod.get("status") or {}
    sidecars = _sidecars(pod)
    init = status.get("initContainerStatuses") or []
    return [
        *(status.get("containerStatuses") or []),
        *(c for c in init if c.get("name") not in sidecars),
        *(c for c in init if c.get("name") in sidecars),
    ]


def _newest_first(pods: Sequence[Manifest]) -> list[Manifest]:
    return sorted(
        pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp", "")), reverse=True
    )


def _failed_container(pods: Sequence[Manifest]) -> tuple[str, str] | None:
    """Why the newest failed container failed: OOM, or its exit code with its termination message."""
    for pod in _newest_first(pods):
        for container in _by_blame(pod):
            for state in (container.get("state") or {}, container.get("lastState") or {}):
                terminated = state.get("terminated")
                if terminated and terminated.get("exitCode", 0) != 0:
                    return _terminated_reason(str(container.get("name")), terminated)
    return None


def _terminated_reason(container: str, terminated: Manifest) -> tuple[str, str]:
    code = terminated.get("exitCode")
    detail = str(terminated.get("message") or "").strip()
    if terminated.get("reason") == "OOMKilled":
        return "OOMKilled", f"container {container} was killed for running out of memory (exit code {code})"
    text = f"container {container} exited with code {code}"
    if signal := terminated.get("signal"):
        text += f" (signal {signal})"
    return "NonZeroExit", f"{text}: {detail}" if detail else text


def _stuck_container(pods: Sequence[Manifest]) -> tuple[str, str] | None:
    """A container the kubelet cannot start: its image cannot be pulled, or its config cannot be made."""
    for pod in _newest_first(pods)[:1]:
        for container in _by_blame(pod):
            waiting = (container.get("state") or {}).get("waiting") or {}
            why = str(waiting.get("reason") or "")
            detail = str(waiting.get("message") or why)
            name = container.get("name")
            if why in IMAGE_FAILURES:
                return "ImagePullFailed", f"container {name}: cannot pull its image: {detail}"
            if why in CONFIG_FAILURES:
                return why, f"container {name}: {detail}"
    return None


def pod_failure(pods: Sequence[Manifest]) -> tuple[str, str] | None:
    """Why pods do not come up: a container that cannot start, else the newest failed container's exit
    (a ModelDeployment's rollout that never becomes ready reports this)."""
    return _stuck_container(pods) or _failed_container(pods)
