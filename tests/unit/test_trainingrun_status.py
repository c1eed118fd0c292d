"""How the operator reads a Job and its pods, decides a promotion and writes conditions."""

from __future__ import annotations

from typing import Any

import pytest

from mlplatform.api.conditions import done, in_progress, merge_conditions, stalled
from mlplatform.api.trainingrun import Phase, Promote, parse_spec
from mlplatform.jobstatus import observe
from mlplatform.promotion import decide, format_metric, key_metric


def job(*conditions: tuple[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "spec": spec,
        "status": {
            "startTime": "2026-11-30T10:00:00Z",
            "conditions": [
                {"type": t, "status": "True", "reason": r, "lastTransitionTime": "2026-11-30T10:05:00Z"}
                for t, r in conditions
            ],
        },
    }


def pod(phase: str, state: dict[str, Any], created: str = "2026-11-30T10:00:01Z") -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "creationTimestamp": created},
        "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]},
    }


def test_a_complete_job_succeeds() -> None:
    seen = observe(job(("Complete", "")), [])
    assert seen.phase is Phase.SUCCEEDED
    assert (seen.started_at, seen.finished_at) == ("2026-11-30T10:00:00Z", "2026-11-30T10:05:00Z")


def test_a_running_pod_is_running_and_no_pod_is_pending() -> None:
    assert observe(job(), [pod("Running", {"running": {}})]).phase is Phase.RUNNING
    assert observe(job(), []).phase is Phase.PENDING
    assert observe(job(suspend=True), []).reason == "Suspended"


def test_an_exit_code_and_its_termination_message_explain_a_failure() -> None:
    terminated = {
        "terminated": {"exitCode": 3, "reason": "Error", "message": "Traceback ...\nValueError: empty"}
    }
    seen = observe(job(("Failed", "BackoffLimitExceeded")), [pod("Failed", terminated)])
    assert (seen.phase, seen.reason) == (Phase.FAILED, "NonZeroExit")
    assert "code 3" in seen.message and "ValueError: empty" in seen.message


def test_a_failure_is_blamed_on_the_main_container_not_on_the_sidecar_stopped_after_it() -> None:
    """The kubelet stops native sidecars (SIGTERM: 143) once the main containers end."""
    failed = pod("Failed", {"terminated": {"exitCode": 2, "reason": "Error", "message": "bad input"}})
    failed["spec"] = {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}, {"name": "setup"}]}
    failed["status"]["initContainerStatuses"] = [
        {"name": "proxy", "state": {"terminated": {"exitCode": 143, "reason": "Error"}}},
        {"name": "setup", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
    ]
    seen = observe(job(("Failed", "BackoffLimitExceeded")), [failed])
    assert seen.message == "container trainer exited with code 2: bad input"


def test_oom_and_deadline_are_named() -> None:
    oom = {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
    assert observe(job(("Failed", "BackoffLimitExceeded")), [pod("Failed", oom)]).reason == "OOMKilled"
    deadline = observe(job(("Failed", "DeadlineExceeded"), activeDeadlineSeconds=5), [])
    assert deadline.reason == "DeadlineExceeded" and "5" in deadline.message


@pytest.mark.parametrize(
    ("waiting", "reason"),
    [
        ("ImagePullBackOff", "ImagePullFailed"),
        ("ErrImagePull", "ImagePullFailed"),
        ("CreateContainerConfigError", "CreateContainerConfigError"),
    ],
)
def test_a_container_that_cannot_start_fails_the_run_and_stops_the_job(waiting: str, reason: str) -> None:
    seen = observe(job(), [pod("Pending", {"waiting": {"reason": waiting, "message": "why"}})])
    assert (seen.phase, seen.reason, seen.stop_job) == (Phase.FAILED, reason, True)
    assert "why" in seen.message


def test_only_the_newest_pod_decides_a_stuck_start() -> None:
    old = pod("Pending", {"waiting": {"reason": "ImagePullBackOff"}}, created="2026-11-30T10:00:00Z")
    new = pod("Running", {"running": {}}, created="2026-11-30T10:01:00Z")
    assert observe(job(), [old, new]).phase is Phase.RUNNING


def test_conditions_keep_their_transition_time_while_their_status_holds() -> None:
    first = merge_conditions(None, in_progress("Pending", "starting"), 1, now="t1")
    second = merge_conditions(first, in_progress("Running", "running"), 2, now="t2")
    ready = {c["type"]: c for c in second}["Ready"]
    assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == ("False", "Running", "t1")
    assert ready["observedGeneration"] == 2
    finished = {c["type"]: c for c in merge_conditions(second, done("Succeeded", "ok"), 2, now="t3")}
    assert finished["Ready"]["status"] == "True" and finished["Ready"]["lastTransitionTime"] == "t3"
    failed = {c["type"]: c for c in merge_conditions(second, stalled("OOMKilled", "oom"), 2, now="t3")}
    assert failed["Stalled"]["status"] == "True" and failed["Reconciling"]["status"] == "False"


def promote(**fields: Any) -> Promote:
    return Promote.model_validate({"alias": "champion", **fields})


def test_a_gate_that_holds_promotes_with_its_numbers() -> None:
    decision = decide(promote(when="metrics.rmse < 0.8"), "7", {"rmse": 0.74}, {}, None)
    assert decision.promoted and "0.74" in decision.message and "alias champion" in decision.message


def test_a_gate_that_fails_does_not_promote_and_says_why() -> None:
    decision = decide(promote(when="metrics.rmse < 0.8"), "7", {"rmse": 0.9}, {}, None)
    assert not decision.promoted and decision.reason == "NotPromoted" and "0.9" in decision.message


def test_better_than_compares_with_the_holder_in_the_stated_direction() -> None:
    better = {"metric": "r2", "direction": "higher"}
    assert decide(promote(betterThan=better), "8", {"r2": 0.5}, {}, ("7", 0.4)).promoted
    lost = decide(promote(betterThan=better), "8", {"r2": 0.3}, {}, ("7", 0.4))
    assert not lost.promoted and "version 7" in lost.message
    assert decide(promote(betterThan=better), "1", {"r2": 0.3}, {}, None).promoted


def test_the_key_metric_is_the_one_the_gate_names() -> None:
    spec = parse_spec(
        {"image": "x", "model": {"name": "m", "promote": {"alias": "a", "when": "metrics.mae < 3"}}}
    )
    assert key_metric(spec, {"rmse": 1.0, "mae": 2.0}) == "mae"
    assert key_metric(parse_spec({"image": "x"}), {"rmse": 1.0, "mae": 2.0}) == "mae"
    assert key_metric(parse_spec({"image": "x", "keyMetric": "rmse"}), {}) == "rmse"
    assert format_metric("rmse", {"rmse": 0.123456}) == "rmse=0.1235"
    assert format_metric("r2", {"rmse": 1.0}) is None
