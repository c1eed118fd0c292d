"""How the operator reads a ModelDeployment's spec, keeps its history, reads its Deployment's rollout and
says what serves in its conditions."""

from __future__ import annotations

from typing import Any

import pytest

from mlplatform import names
from mlplatform.api.base import SpecError
from mlplatform.api.conditions import Condition
from mlplatform.api.modeldeployment import (
    HISTORY_LIMIT,
    Outcome,
    add_history,
    mark_replaced,
    parse_spec,
)
from mlplatform.builders.modeldeployment import (
    ServedVersion,
    ServingSettings,
    build_deployment,
    labels,
)

# Importing the handlers registers them with kopf's default registry; nothing runs until kopf does.
from mlplatform.handlers.modeldeployment import (
    ModelDeploymentReconciler,
    Rollout,
    ServingError,
    Versions,
    child_key,
    degraded_condition,
    deployment_summary,
    last_message,
    own_key,
    read_rollout,
    serving_conditions,
    unusable,
)

MODEL = {"name": "wine", "alias": "champion"}
AT = "2026-12-01T10:00:00Z"

# --- the spec ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field", "why"),
    [
        ({"model": {"name": "m", "alias": "a", "version": "1"}}, "spec.model", "exactly one of"),
        ({"model": {"name": "m", "alias": "a", "stage": "Production"}}, "spec.model", "exactly one of"),
        ({"model": {"name": "m"}}, "spec.model", "exactly one of"),
        ({"model": {"name": "m", "version": "v1"}}, "spec.model.version", "pattern"),
        ({"model": {"name": "m", "version": "0"}}, "spec.model.version", "pattern"),
        ({"model": {"name": "m", "version": "1.0"}}, "spec.model.version", "pattern"),
        ({"model": {"name": "m", "stage": "Prod"}}, "spec.model.stage", ""),
        ({"model": {"name": "", "alias": "a"}}, "spec.model.name", ""),
        (
            {"model": MODEL, "autoscaling": {"minReplicas": 3, "maxReplicas": 2}},
            "spec.autoscaling",
            "minReplicas must not exceed maxReplicas",
        ),
        ({"model": MODEL, "replicas": -1}, "spec.replicas", "greater than or equal to 0"),
        (
            {"model": MODEL, "pollIntervalSeconds": 4},
            "spec.pollIntervalSeconds",
            "greater than or equal to 5",
        ),
        (
            {"model": MODEL, "rollout": {"progressDeadlineSeconds": 5}},
            "spec.rollout.progressDeadlineSeconds",
            "",
        ),
        ({}, "spec.model", "required"),
    ],
)
def test_a_spec_the_operator_cannot_use_names_the_field(spec: dict[str, Any], field: str, why: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(spec)
    assert f"{field}:" in str(raised.value)
    assert why in str(raised.value)


def test_a_missing_spec_names_the_model() -> None:
    with pytest.raises(SpecError, match=r"spec\.model"):
        parse_spec(None)


def test_a_minimal_spec_gets_the_defaults() -> None:
    spec = parse_spec({"model": {"name": "wine", "version": "3"}})
    assert (spec.replicas, spec.poll_interval_seconds, spec.workers, spec.autoscaling) == (1, 30, 1, None)
    rollout = spec.rollout
    assert (rollout.max_unavailable, rollout.max_surge, rollout.progress_deadline_seconds) == (0, 1, 300)
    assert rollout.auto_rollback is True


@pytest.mark.parametrize(
    ("selector", "resolved_from"),
    [
        ({"alias": "champion"}, "alias/champion"),
        ({"stage": "Production"}, "stage/Production"),
        ({"version": "3"}, "version/3"),
    ],
)
def test_status_names_the_selector_it_resolved(selector: dict[str, str], resolved_from: str) -> None:
    assert parse_spec({"model": {"name": "wine", **selector}}).model.resolved_from == resolved_from


def test_the_fewest_serving_replicas_come_from_the_autoscaler_when_there_is_one() -> None:
    assert parse_spec({"model": MODEL, "replicas": 3}).min_replicas == 3
    assert parse_spec({"model": MODEL, "replicas": 0}).min_replicas == 0
    autoscaled = {"model": MODEL, "replicas": 7, "autoscaling": {"minReplicas": 2, "maxReplicas": 5}}
    assert parse_spec(autoscaled).min_replicas == 2
    assert parse_spec({"model": MODEL, "autoscaling": {"maxReplicas": 5}}).min_replicas == 1


# --- history -------------------------------------------------------------------------------------------


def test_history_is_bounded_and_newest_last() -> None:
    history: list[dict[str, Any]] | None = None
    for version in range(1, HISTORY_LIMIT + 6):
        history = add_history(history, str(version), Outcome.SERVING, f"t{version}")
    assert history is not None
    assert len(history) == HISTORY_LIMIT
    assert [e["version"] for e in history] == [str(v) for v in range(6, HISTORY_LIMIT + 6)]
    assert history[-1] == {
        "version": str(HISTORY_LIMIT + 5),
        "result": "Serving",
        "at": f"t{HISTORY_LIMIT + 5}",
    }


def test_history_does_not_repeat_the_same_entry() -> None:
    once = add_history([], "3", Outcome.SERVING, "t1")
    assert add_history(once, "3", Outcome.SERVING, "t2") == once, "a pass that changes nothing adds nothing"
    failed = add_history(once, "4", Outcome.ROLLED_BACK, "t2", "ImagePullFailed: x")
    again = add_history(failed, "3", Outcome.SERVING, "t3")
    assert [(e["version"], e["result"]) for e in again] == [
        ("3", "Serving"),
        ("4", "RolledBack"),
        ("3", "Serving"),
    ]
    assert again[1]["message"] == "ImagePullFailed: x"
    assert "message" not in again[0]


def test_history_is_a_new_list() -> None:
    original = [{"version": "3", "result": "Serving", "at": "t1"}]
    add_history(original, "4", Outcome.SERVING, "t2")
    mark_replaced(original, "3", "t2")
    assert original == [{"version": "3", "result": "Serving", "at": "t1"}]


def test_a_replaced_version_changes_its_serving_entry() -> None:
    history = [
        {"version": "2", "result": "Serving", "at": "t0"},
        {"version": "2", "result": "Replaced", "at": "t1"},
        {"version": "3", "result": "Serving", "at": "t1"},
        {"version": "4", "result": "RolledBack", "at": "t2", "message": "m"},
    ]
    replaced = mark_replaced(history, "3", "t3")
    assert replaced[2] == {"version": "3", "result": "Replaced", "at": "t3"}
    assert replaced[:2] == history[:2] and replaced[3] == history[3]
    assert mark_replaced(history, "9", "t3") == history
    assert mark_replaced(None, "3", "t3") == []


# --- the Deployment's rollout, as the Deployment controller reports it ----------------------------------

SPEC = parse_spec({"model": MODEL, "replicas": 2})
SETTINGS = ServingSettings(tracking_uri="http://mlflow:5000")


def applied(
    version: str, generation: int, status: dict[str, Any] | None = None, replicas: int = 2
) -> dict[str, Any]:
    """A Deployment as the apiserver returns it: the operator's manifest, defaulted, with the metadata
    and status the Deployment controller keeps."""
    served = ServedVersion("wine", version, "img:1")
    built = build_deployment("wine-api", "team-a", "uid-1", spec=SPEC, served=served, settings=SETTINGS)
    built["metadata"].update(generation=generation, uid="d-1", resourceVersion="100")
    built["spec"]["replicas"] = replicas
    built["status"] = status or {}
    return built


def progressing(reason: str, status: str = "True") -> dict[str, Any]:
    return {
        "type": "Progressing",
        "status": status,
        "reason": reason,
        "message": f'ReplicaSet "wine-api-5d8c7b" {reason}',
        "lastUpdateTime": AT,
        "lastTransitionTime": AT,
    }


def available(status: str = "True") -> dict[str, Any]:
    reason = "MinimumReplicasAvailable" if status == "True" else "MinimumReplicasUnavailable"
    return {"type": "Available", "status": status, "reason": reason, "lastTransitionTime": AT}


def test_no_deployment_is_no_rollout() -> None:
    assert read_rollout(None) == Rollout(None, False, False, 0, 0)


def test_a_fresh_apply_the_controller_has_not_seen_is_not_complete() -> None:
    rollout = read_rollout(applied("7", generation=1))
    assert rollout == Rollout("7", complete=False, failed=False, replicas=0, ready_replicas=0)


def test_a_new_template_is_not_complete_while_the_status_describes_the_old_one() -> None:
    old_complete = {
        "observedGeneration": 1,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
        "conditions": [available(), progressing("NewReplicaSetAvailable")],
    }
    rollout = read_rollout(applied("8", generation=2, status=old_complete))
    assert rollout.version == "8"
    assert not rollout.complete and not rollout.failed
    assert rollout.ready_replicas == 2, "the old version still serves"


def test_all_replicas_updated_and_available_is_complete() -> None:
    status = {
        "observedGeneration": 2,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
        "conditions": [available(), progressing("NewReplicaSetAvailable")],
    }
    assert read_rollout(applied("8", generation=2, status=status)) == Rollout("8", True, False, 2, 2)


def test_old_replicas_still_running_is_not_complete() -> None:
    # maxSurge 1, maxUnavailable 0: both new pods are available, the last old one is not gone yet.
    status = {
        "observedGeneration": 2,
        "replicas": 3,
        "updatedReplicas": 2,
        "readyReplicas": 3,
        "availableReplicas": 3,
        "conditions": [available(), progressing("ReplicaSetUpdated")],
    }
    rollout = read_rollout(applied("8", generation=2, status=status))
    assert not rollout.complete and not rollout.failed
    assert (rollout.replicas, rollout.ready_replicas) == (3, 3)


def test_a_new_pod_that_is_not_ready_keeps_the_rollout_going() -> None:
    status = {
        "observedGeneration": 2,
        "replicas": 3,
        "updatedReplicas": 1,
        "readyReplicas": 2,
        "availableReplicas": 2,
        "unavailableReplicas": 1,
        "conditions": [available(), progressing("ReplicaSetUpdated")],
    }
    rollout = read_rollout(applied("8", generation=2, status=status))
    assert not rollout.complete and not rollout.failed


def test_a_progress_deadline_exceeded_fails_the_rollout() -> None:
    status = {
        "observedGeneration": 2,
        "replicas": 3,
        "updatedReplicas": 1,
        "readyReplicas": 2,
        "availableReplicas": 2,
        "unavailableReplicas": 1,
        "conditions": [available(), progressing("ProgressDeadlineExceeded", status="False")],
    }
    rollout = read_rollout(applied("8", generation=2, status=status))
    assert rollout.failed and not rollout.complete
    assert rollout.ready_replicas == 2


def test_an_exceeded_deadline_of_an_older_template_is_not_this_ones() -> None:
    """Rolling back re-applies the old version: until the controller sees it, the old failure stands."""
    status = {
        "observedGeneration": 2,
        "replicas": 3,
        "updatedReplicas": 1,
        "availableReplicas": 2,
        "readyReplicas": 2,
        "conditions": [available(), progressing("ProgressDeadlineExceeded", status="False")],
    }
    rollout = read_rollout(applied("7", generation=3, status=status))
    assert rollout.version == "7" and not rollout.failed and not rollout.complete


# --- conditions ----------------------------------------------------------------------------------------


def conditions(rollout: Rollout, versions: Versions) -> dict[str, Condition]:
    found = serving_conditions(rollout, versions)
    assert [c.type for c in found] == ["Ready", "Progressing", "Degraded"], "Ready first: the metric reads it"
    return {c.type: c for c in found}


def versions(
    target: str,
    serving: str | None,
    failed: str | None = None,
    problem: ServingError | None = None,
    history: list[dict[str, Any]] | None = None,
) -> Versions:
    return Versions(target, serving, failed, problem, history or [])


def test_a_first_rollout_in_progress_is_not_ready() -> None:
    found = conditions(Rollout("3", False, False, 1, 0), versions("3", None))
    assert (found["Ready"].status, found["Ready"].reason) == (False, "RollingOut")
    assert found["Progressing"].status is True
    assert (found["Degraded"].status, found["Degraded"].reason) == (False, "Healthy")


def test_a_complete_rollout_serves() -> None:
    found = conditions(Rollout("3", True, False, 2, 2), versions("3", "3"))
    assert (found["Ready"].status, found["Ready"].reason) == (True, "Serving")
    assert "version 3" in found["Ready"].message and "2 replica" in found["Ready"].message
    assert (found["Progressing"].status, found["Progressing"].reason) == (False, "Complete")
    assert found["Degraded"].status is False


def test_the_old_version_serves_while_the_new_one_rolls_out() -> None:
    found = conditions(Rollout("4", False, False, 3, 2), versions("4", "3"))
    assert (found["Ready"].status, found["Ready"].reason) == (True, "Serving")
    assert "version 3" in found["Ready"].message and "version 4" in found["Ready"].message
    assert (found["Progressing"].status, found["Progressing"].reason) == (True, "RollingOut")
    assert found["Degraded"].status is False


def rolled_back_history() -> list[dict[str, Any]]:
    history = add_history([], "3", Outcome.SERVING, "t1")
    return add_history(history, "4", Outcome.ROLLED_BACK, "t2", "ImagePullFailed: no such image img:4")


def test_a_rolled_back_version_degrades_with_the_reason_it_failed() -> None:
    # The pass that rolls back: version 4 failed its deadline, version 3 pods still serve.
    found = conditions(
        Rollout("4", False, True, 3, 2), versions("4", "3", failed="4", history=rolled_back_history())
    )
    assert found["Ready"].status is True, "the previous version keeps serving"
    assert found["Progressing"].status is False
    degraded = found["Degraded"]
    assert (degraded.status, degraded.reason) == (True, "RolledBack")
    assert "version 4" in degraded.message and "ImagePullFailed: no such image img:4" in degraded.message
    assert "version 3 serves" in degraded.message
    # Later passes: version 3 runs again, complete; Degraded stays until the registry moves on.
    found = conditions(
        Rollout("3", True, False, 2, 2), versions("3", "3", failed="4", history=rolled_back_history())
    )
    assert (found["Ready"].status, found["Progressing"].status) == (True, False)
    assert (found["Degraded"].status, found["Degraded"].reason) == (True, "RolledBack")


def test_a_registry_problem_degrades_but_the_version_keeps_serving() -> None:
    problem = ServingError("RegistryUnavailable", "the tracking server does not answer")
    found = conditions(Rollout("3", True, False, 2, 2), versions("3", "3", problem=problem))
    assert found["Ready"].status is True
    degraded = found["Degraded"]
    assert (degraded.status, degraded.reason) == (True, "RegistryUnavailable")
    assert "the tracking server does not answer" in degraded.message
    assert "version 3 keeps serving" in degraded.message
    missing = ServingError("ModelNotFound", "the registry has no alias/champion of model 'wine'")
    not_found = degraded_condition(Rollout("3", True, False, 2, 2), versions("3", "3", problem=missing))
    assert (not_found.status, not_found.reason) == (True, "ModelNotFound")


def test_a_problem_outranks_a_rollback_in_degraded() -> None:
    problem = ServingError("RegistryUnavailable", "down")
    found = degraded_condition(
        Rollout("3", True, False, 2, 2), versions("3", "3", failed="4", problem=problem)
    )
    assert found.reason == "RegistryUnavailable"


def test_a_failed_first_rollout_is_not_ready_and_degraded() -> None:
    history = add_history([], "3", Outcome.FAILED, "t1", "CrashLoopBackOff: ModuleNotFoundError")
    found = conditions(Rollout("3", False, True, 1, 0), versions("3", None, history=history))
    assert (found["Ready"].status, found["Ready"].reason) == (False, "RolloutFailed")
    assert found["Progressing"].status is False
    assert (found["Degraded"].status, found["Degraded"].reason) == (True, "RolloutFailed")
    assert "version 3" in found["Degraded"].message


def test_a_failed_rollout_without_rollback_leaves_the_old_pods_serving() -> None:
    found = conditions(Rollout("4", False, True, 3, 2), versions("4", "3"))
    assert found["Ready"].status is True, "maxUnavailable 0: the old pods are still there"
    assert found["Progressing"].status is False
    assert (found["Degraded"].status, found["Degraded"].reason) == (True, "RolloutFailed")


def test_an_unusable_modeldeployment_is_not_ready_not_progressing_and_degraded() -> None:
    found = {c.type: c for c in unusable("InvalidSpec", "spec.model: Field required")}
    assert found["Ready"] == Condition("Ready", False, "InvalidSpec", "spec.model: Field required")
    assert (found["Progressing"].status, found["Progressing"].reason) == (False, "InvalidSpec")
    assert found["Degraded"] == Condition("Degraded", True, "InvalidSpec", "spec.model: Field required")


def test_the_last_message_of_a_version_is_its_newest() -> None:
    history = [
        {"version": "4", "result": "RolledBack", "at": "t1", "message": "first"},
        {"version": "5", "result": "RolledBack", "at": "t2", "message": "other"},
        {"version": "4", "result": "RolledBack", "at": "t3", "message": "second"},
        {"version": "4", "result": "Failed", "at": "t4"},
    ]
    assert last_message(history, "4") == "second"
    assert last_message(history, "9") == "it did not become ready"
    assert last_message(None, "4") == "it did not become ready"


# --- which version runs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resolved", "serving", "failed", "chosen"),
    [
        ("4", "3", None, "4"),  # the registry moved: roll out
        ("3", "3", None, "3"),  # nothing new
        ("4", "3", "4", "3"),  # 4 failed already: keep 3
        ("4", None, "4", "4"),  # 4 failed, but nothing else ever served: keep trying 4
        ("5", "3", "4", "5"),  # a newer version than the failed one: roll it out
        ("4", None, None, "4"),  # the first version
    ],
)
def test_the_version_to_run(resolved: str, serving: str | None, failed: str | None, chosen: str) -> None:
    assert ModelDeploymentReconciler.choose(resolved, serving, failed) == chosen


def test_versions_are_what_a_pass_updates() -> None:
    found = versions("4", "3")
    found.serving, found.history = "4", add_history(found.history, "4", Outcome.SERVING, "t1")
    assert (found.target, found.serving, found.history[-1]["version"]) == ("4", "4", "4")


# --- keys ----------------------------------------------------------------------------------------------


def test_a_deployment_and_its_modeldeployment_share_a_key() -> None:
    assert child_key("team-a", {names.LABEL_MODELDEPLOYMENT: "wine-api"}) == (
        "team-a",
        "modeldeployment/wine-api",
    )
    assert own_key("team-a", "wine-api") == ("team-a", "modeldeployment/wine-api")
    assert child_key(None, {}) == ("", "modeldeployment/")
    long_name = "m" * 90
    assert own_key("team-a", long_name) == child_key("team-a", labels(long_name))
    assert own_key("team-a", long_name) != own_key("team-b", long_name)
    assert child_key("team-a", {names.LABEL_TRAININGRUN: "wine-api"}) != own_key("team-a", "wine-api")


@pytest.mark.parametrize("generation", [1, 2])
def test_the_deployment_summary_reads_as_the_whole_deployment(generation: int) -> None:
    status = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
    deployment = applied("8", generation=generation, status=status)
    summary = deployment_summary(deployment)
    assert read_rollout(summary) == read_rollout(deployment)
    assert "containers" not in str(summary), "no pod template kept"
