"""A pod's status follows the kubelet: its phase in every restart-policy case and with native sidecars,
container states with their last state, conditions (readiness gates, sidecars, terminal pods) and stable
transition times."""

from __future__ import annotations

from typing import Any

import pytest

from mlplatform.local.node.status import (
    Attempt,
    ContainerView,
    conditions,
    container_status,
    init_complete,
    phase,
    pod_status,
    with_transition_times,
)

T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z", "2026-01-01T00:00:09Z"


def running(number: int = 0) -> Attempt:
    return Attempt(number, f"mlplatform://c-{number}", started_at=T0)


def exited(code: int, number: int = 0, reason: str | None = None) -> Attempt:
    why = reason or ("Completed" if code == 0 else "Error")
    return Attempt(number, f"mlplatform://c-{number}", T0, T1, code, why)


def view(
    name: str = "main",
    latest: Attempt | None = None,
    previous: Attempt | None = None,
    waiting: tuple[str, str] | None = None,
    ready: bool = False,
) -> ContainerView:
    return ContainerView(name, "python:3.11", "", latest, previous, waiting, ready, started=True)


BACKOFF = ("CrashLoopBackOff", "back-off 10s restarting failed container=main")


@pytest.mark.parametrize(
    ("policy", "init", "views", "expected"),
    [
        ("Always", [], [view(latest=running())], "Running"),
        ("Never", [], [view(latest=exited(0)), view("b", latest=exited(0))], "Succeeded"),
        ("OnFailure", [], [view(latest=exited(0))], "Succeeded"),
        ("Never", [], [view(latest=exited(0)), view("b", latest=exited(2))], "Failed"),
        ("Never", [], [view(latest=running()), view("b", latest=exited(1))], "Running"),
        ("OnFailure", [], [view(latest=exited(1), waiting=BACKOFF)], "Running"),
        ("Always", [], [view(latest=exited(0), waiting=BACKOFF)], "Running"),
        ("Always", [], [view(latest=exited(1), waiting=BACKOFF)], "Running"),
        ("Always", [], [view(latest=running()), view("b", latest=exited(1), waiting=BACKOFF)], "Running"),
        ("Always", [], [view()], "Pending"),
        ("Always", [], [view(waiting=("ContainerCreating", ""))], "Pending"),
        ("Never", [], [view(waiting=("CreateContainerConfigError", 'secret "x" not found'))], "Pending"),
        ("Always", [view("init", latest=running())], [view()], "Pending"),
        ("Always", [view("init")], [view()], "Pending"),
        ("Never", [view("init", latest=exited(3))], [view()], "Failed"),
        ("OnFailure", [view("init", latest=exited(3), waiting=BACKOFF)], [view()], "Pending"),
        ("Always", [view("init", latest=exited(3), waiting=BACKOFF)], [view()], "Pending"),
        ("Never", [view("init", latest=exited(0))], [view(latest=running())], "Running"),
        ("Never", [view("init", latest=exited(0))], [view(latest=exited(0))], "Succeeded"),
        # One container runs while another has not started yet: the kubelet says Pending.
        ("Always", [], [view(latest=running()), view("b", waiting=("ContainerCreating", ""))], "Pending"),
        ("Always", [], [view(latest=running()), view("b")], "Pending"),
    ],
)
def test_phase_matches_the_kubelet(
    policy: str, init: list[ContainerView], views: list[ContainerView], expected: str
) -> None:
    assert phase(policy, init, views) == expected


def test_container_status_running_terminated_and_waiting() -> None:
    status = container_status(view(latest=running(), ready=True))
    assert status["state"] == {"running": {"startedAt": T0}}
    assert status["lastState"] == {}
    assert (status["ready"], status["started"], status["restartCount"]) == (True, True, 0)
    assert status["containerID"] == "mlplatform://c-0"

    done = container_status(view(latest=exited(3, number=2), previous=exited(1, number=1)))
    assert done["state"]["terminated"]["exitCode"] == 3
    assert done["state"]["terminated"]["reason"] == "Error"
    assert done["state"]["terminated"]["finishedAt"] == T1
    assert done["lastState"]["terminated"]["containerID"] == "mlplatform://c-1"
    assert done["restartCount"] == 2 and done["started"] is False

    fresh = container_status(view())
    assert fresh["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert "containerID" not in fresh and fresh["restartCount"] == 0


def test_crash_looping_container_waits_and_shows_its_last_run() -> None:
    oom = exited(137, number=3, reason="OOMKilled")
    status = container_status(view(latest=oom, previous=exited(1, number=2), waiting=BACKOFF))
    assert status["state"] == {"waiting": {"reason": BACKOFF[0], "message": BACKOFF[1]}}
    assert status["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert status["restartCount"] == 3


def test_running_container_after_a_restart_shows_the_previous_run_as_last_state() -> None:
    status = container_status(view(latest=running(1), previous=exited(1)))
    assert status["state"] == {"running": {"startedAt": T0}}
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["restartCount"] == 1


def by_type(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in found}


def test_conditions_of_a_running_ready_pod_and_of_one_that_is_not() -> None:
    pod: dict[str, Any] = {"spec": {}}
    ready = by_type(conditions(pod, "Running", True, [], [view(latest=running(), ready=True)]))
    assert {k: c["status"] for k, c in ready.items()} == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    unready = by_type(
        conditions(pod, "Pending", True, [view("setup", latest=running())], [view(), view("side")])
    )
    assert unready["Initialized"]["status"] == "False"
    assert unready["Initialized"]["reason"] == "ContainersNotInitialized"
    assert unready["Initialized"]["message"] == "containers with incomplete status: [setup]"
    assert unready["Ready"]["reason"] == "ContainersNotReady"
    assert unready["Ready"]["message"] == "containers with unready status: [main side]"


def test_readiness_gates_hold_ready_until_their_condition_is_true() -> None:
    views = [view(latest=running(), ready=True)]
    gated: dict[str, Any] = {"spec": {"readinessGates": [{"conditionType": "example.com/lb"}]}}
    found = by_type(conditions(gated, "Running", True, [], views))
    assert found["ContainersReady"]["status"] == "True"
    assert found["Ready"]["status"] == "False"
    assert found["Ready"]["reason"] == "ReadinessGatesNotReady"
    assert "example.com/lb" in found["Ready"]["message"]
    gated["status"] = {"conditions": [{"type": "example.com/lb", "status": "True"}]}
    assert by_type(conditions(gated, "Running", True, [], views))["Ready"]["status"] == "True"


def test_terminal_pod_is_not_ready_with_reason_pod_completed() -> None:
    found = by_type(conditions({"spec": {}}, "Succeeded", False, [], [view(latest=exited(0))]))
    assert found["PodReadyToStartContainers"]["status"] == "False"
    assert found["ContainersReady"]["status"] == "False"
    assert found["ContainersReady"]["reason"] == "PodCompleted"
    assert found["Ready"]["reason"] == "PodCompleted"
    assert found["Initialized"]["status"] == "True"


def test_transition_times_change_only_with_status_and_others_conditions_are_kept() -> None:
    old = [
        {"type": "Ready", "status": "False", "lastTransitionTime": T0},
        {"type": "Initialized", "status": "True", "lastTransitionTime": T0},
        {"type": "example.com/lb", "status": "True", "lastTransitionTime": T0},
    ]
    new = [
        {"type": "Ready", "status": "True"},
        {"type": "Initialized", "status": "True"},
        {"type": "ContainersReady", "status": "True"},
    ]
    merged = by_type(with_transition_times(new, old, T2))
    assert merged["Ready"]["lastTransitionTime"] == T2  # changed
    assert merged["Initialized"]["lastTransitionTime"] == T0  # unchanged: keeps its time
    assert merged["ContainersReady"]["lastTransitionTime"] == T2  # new
    assert merged["example.com/lb"] == old[2]  # owned by someone else: untouched
    assert all(merged[k]["lastProbeTime"] is None for k in ("Ready", "Initialized", "ContainersReady"))


def test_pod_status_reports_ips_init_statuses_and_a_terminal_reason() -> None:
    pod: dict[str, Any] = {"spec": {"restartPolicy": "Always", "containers": [{"name": "main"}]}}
    status = pod_status(
        pod,
        [view("init", latest=exited(0))],
        [view(latest=running(), ready=True)],
        sandbox_ready=True,
        pod_ip="10.244.0.9",
        host_ip="10.244.0.1",
        start_time=T0,
        stamp=T1,
    )
    assert status["phase"] == "Running"
    assert status["podIPs"] == [{"ip": "10.244.0.9"}] and status["hostIP"] == "10.244.0.1"
    assert status["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert status["startTime"] == T0
    deadline = {"reason": "DeadlineExceeded", "message": "Pod was active on the node longer than allowed"}
    stopped = pod_status(
        pod, [], [view(latest=exited(137))], sandbox_ready=False, pod_ip=None,
        host_ip="10.244.0.1", start_time=T0, stamp=T2, reason=deadline,
    )  # fmt: skip
    assert (stopped["phase"], stopped["reason"]) == ("Failed", "DeadlineExceeded")
    assert "podIP" not in stopped and "initContainerStatuses" not in stopped


@pytest.mark.parametrize(
    ("policy", "views", "while_running", "stopped_for_good"),
    [
        ("Always", [view(latest=exited(0)), view("b", latest=exited(0))], "Running", "Succeeded"),
        ("Always", [view(latest=exited(143))], "Running", "Failed"),
        ("OnFailure", [view(latest=exited(0)), view("b", latest=exited(1))], "Running", "Failed"),
        ("Never", [view(latest=exited(0))], "Succeeded", "Succeeded"),
    ],
)
def test_phase_of_a_pod_stopped_for_good(
    policy: str, views: list[ContainerView], while_running: str, stopped_for_good: str
) -> None:
    """Deleted, no container restarts whatever the restart policy (the kubelet's podIsTerminal)."""
    assert phase(policy, [], views) == while_running
    assert phase(policy, [], views, terminal=True) == stopped_for_good


def test_the_final_status_of_a_deleted_pod_is_terminal() -> None:
    """Kubelets since 1.27 report Succeeded or Failed before a pod goes; one that never ran a container
    ends Failed (the kubelet's TerminatePod)."""
    pod: dict[str, Any] = {"spec": {"restartPolicy": "Always", "containers": [{"name": "main"}]}}

    def final(views: list[ContainerView]) -> dict[str, Any]:
        return pod_status(
            pod, [], views, sandbox_ready=False, pod_ip=None, host_ip="10.244.0.1",
            start_time=T0, stamp=T1, terminal=True,
        )  # fmt: skip

    stopped = final([view(latest=Attempt(0, "mlplatform://c-0", T0, T1, 0, "Completed", "bye"))])
    assert stopped["phase"] == "Succeeded"
    assert stopped["containerStatuses"][0]["state"]["terminated"]["message"] == "bye"
    assert final([view(latest=exited(143))])["phase"] == "Failed"
    assert final([view()])["phase"] == "Failed"


def sidecar(
    latest: Attempt | None = None,
    waiting: tuple[str, str] | None = None,
    started: bool = True,
    ready: bool = True,
    name: str = "proxy",
) -> ContainerView:
    """A native sidecar: an init container with restartPolicy Always."""
    return ContainerView(name, "python:3.11", "", latest, None, waiting, ready, started, sidecar=True)


@pytest.mark.parametrize(
    ("policy", "init", "views", "expected"),
    [
        # A sidecar that started lets the main containers run beside it: the pod runs.
        ("Never", [sidecar(running())], [view(latest=running())], "Running"),
        # The main containers ended, the sidecar still runs (the node is about to stop it): still Running.
        ("Never", [sidecar(running())], [view(latest=exited(0))], "Running"),
        # The sidecar's own end (143 after SIGTERM) counts for nothing: the main containers decide.
        ("Never", [sidecar(exited(143))], [view(latest=exited(0))], "Succeeded"),
        ("OnFailure", [sidecar(exited(143))], [view(latest=exited(0))], "Succeeded"),
        ("Never", [sidecar(exited(143))], [view(latest=exited(1))], "Failed"),
        # A sidecar crashing (waiting to restart) fails nothing, whatever the pod's restart policy.
        ("Never", [sidecar(exited(2), waiting=BACKOFF)], [view(latest=running())], "Running"),
        ("Never", [sidecar(exited(2), waiting=BACKOFF)], [view()], "Pending"),
        # Running but not started yet (its startup probe has not passed): the init sequence waits.
        ("Always", [sidecar(running(), started=False)], [view()], "Pending"),
        ("Always", [sidecar()], [view()], "Pending"),
        # After a sidecar, a regular init container still has to succeed.
        ("Always", [sidecar(running()), view("setup", latest=running())], [view()], "Pending"),
        ("Never", [sidecar(running()), view("setup", latest=exited(3))], [view()], "Failed"),
        # Once the main containers ran, a sidecar restarting (not started again) does not make it Pending.
        ("Always", [sidecar(running(1), started=False)], [view(latest=running())], "Running"),
    ],
)
def test_phase_with_native_sidecars_matches_the_kubelet(
    policy: str, init: list[ContainerView], views: list[ContainerView], expected: str
) -> None:
    assert phase(policy, init, views) == expected


def test_a_started_sidecar_completes_its_part_of_the_init_sequence() -> None:
    assert init_complete([sidecar(running()), view("setup", latest=exited(0))])
    assert not init_complete([sidecar(running(), started=False)])  # its startup probe has not passed
    assert not init_complete([sidecar(running(), waiting=("ContainerCreating", ""))])  # postStart runs
    assert not init_complete([sidecar(exited(0))])  # a sidecar ended is not done: it restarts
    assert not init_complete([view("setup", latest=running())])


def test_a_sidecar_status_is_running_started_and_ready_as_the_kubelet_reports_it() -> None:
    status = container_status(sidecar(running()))
    assert status["state"] == {"running": {"startedAt": T0}}
    assert (status["started"], status["ready"]) == (True, True)
    stopped = container_status(sidecar(exited(143), ready=False))
    assert stopped["state"]["terminated"]["exitCode"] == 143 and stopped["started"] is False


def test_a_sidecar_readiness_counts_for_the_pod_and_its_restart_does_not_uninitialize_it() -> None:
    pod: dict[str, Any] = {"spec": {}}
    unready = by_type(
        conditions(
            pod, "Running", True, [sidecar(running(), ready=False)], [view(latest=running(), ready=True)]
        )
    )
    assert unready["Initialized"]["status"] == "True"
    assert unready["Ready"]["status"] == "False"
    assert unready["Ready"]["message"] == "containers with unready status: [proxy]"
    ready = by_type(
        conditions(pod, "Running", True, [sidecar(running())], [view(latest=running(), ready=True)])
    )
    assert ready["Ready"]["status"] == "True"
    restarting = by_type(
        conditions(pod, "Running", True, [sidecar(exited(1), BACKOFF, ready=False)], [view(latest=running())])
    )
    assert restarting["Initialized"]["status"] == "True"  # the main container ran: initialized before
    waiting = by_type(conditions(pod, "Pending", True, [sidecar(running(), started=False)], [view()]))
    assert waiting["Initialized"]["message"] == "containers with incomplete status: [proxy]"
