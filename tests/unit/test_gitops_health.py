"""The Argo CD health checks of gitops/argocd/health/ (Lua, run as Argo CD runs them): on the conditions
the operator's own functions write for every state of a TrainingRun and a ModelDeployment, on objects
captured from the end-to-end tests (tests/unit/fixtures/gitops/health_test.yaml, in the format of Argo
CD's own resource_customizations tests), and the generated Argo CD configuration in step with them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from argocd_health import GENERATED, KINDS, config_key, evaluate, health, health_script
from mlplatform.api.conditions import Condition, done, in_progress, merge_conditions, stalled
from mlplatform.handlers.modeldeployment import Rollout, Versions, serving_conditions, unusable

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gitops"
STAMP = "2025-01-01T00:00:00Z"
Health = tuple[str, str]


def our_object(
    kind: str,
    conditions: Sequence[Condition] | None,
    generation: int = 1,
    observed: int | None = 1,
    **fields: Any,
) -> dict[str, Any]:
    """An object of `kind` whose status holds `conditions` as the operator writes them (None: no status)."""
    spec = fields.pop("spec", {})
    found: dict[str, Any] = {
        "apiVersion": "mlplatform.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "team-a", "generation": generation},
        "spec": spec,
    }
    if conditions is not None:
        found["status"] = {
            **fields,
            "observedGeneration": observed,
            "conditions": merge_conditions(None, conditions, observed, STAMP),
        }
    return found


def run(conditions: Sequence[Condition] | None, **fields: Any) -> dict[str, Any]:
    return our_object("TrainingRun", conditions, **fields)


TRAININGRUN_CASES: dict[str, tuple[dict[str, Any], Health]] = {
    "no status yet": (run(None), ("Progressing", "Waiting for the operator")),
    "only observedGeneration (spec changed before the operator started it)": (
        {**run(None), "status": {"observedGeneration": 1}},
        ("Progressing", "Waiting for the operator"),
    ),
    "spec changed, not yet observed": (
        run(done("Succeeded", "MLflow run r finished"), generation=2, phase="Succeeded"),
        ("Progressing", "Waiting for the operator to observe generation 2"),
    ),
    "Job created": (
        run(in_progress("Pending", "Job j created for MLflow run r"), phase="Pending"),
        ("Progressing", "Pending: Job j created for MLflow run r"),
    ),
    "running": (
        run(in_progress("Running", "the trainer is running"), phase="Running"),
        ("Progressing", "Running: the trainer is running"),
    ),
    "MLflow unreachable, retrying": (
        run(in_progress("MlflowUnavailable", "cannot create the Job: refused; retrying")),
        ("Progressing", "Pending: cannot create the Job: refused; retrying"),
    ),
    "suspended": (
        run(
            in_progress("Suspended", "the Job is suspended (spec.suspend)"),
            phase="Pending",
            spec={"suspend": True},
        ),
        ("Suspended", "The run is suspended (spec.suspend)"),
    ),
    "resumed, the Job not yet running again": (
        run(in_progress("Suspended", "the Job is suspended (spec.suspend)"), phase="Pending"),
        ("Progressing", "Pending: the Job is suspended (spec.suspend)"),
    ),
    "succeeded": (
        run(done("Succeeded", "MLflow run r finished; model m version 7"), phase="Succeeded"),
        ("Healthy", "MLflow run r finished; model m version 7"),
    ),
    "succeeded, suspended afterwards (nothing to suspend)": (
        run(done("Succeeded", "MLflow run r finished"), phase="Succeeded", spec={"suspend": True}),
        ("Healthy", "MLflow run r finished"),
    ),
    "failed": (
        run(stalled("OOMKilled", "the trainer ran out of memory (limit 64Mi)"), phase="Failed"),
        ("Degraded", "Failed: OOMKilled: the trainer ran out of memory (limit 64Mi)"),
    ),
    "invalid spec": (
        run(stalled("InvalidSpec", "spec.model.promote.when: unknown name 'x'"), phase="Failed"),
        ("Degraded", "Failed: InvalidSpec: spec.model.promote.when: unknown name 'x'"),
    ),
}


def deployment(conditions: Sequence[Condition] | None, **fields: Any) -> dict[str, Any]:
    return our_object("ModelDeployment", conditions, **fields)


def rollout(complete: bool = False, failed: bool = False, ready: int = 0) -> Rollout:
    return Rollout("7", complete, failed, ready, ready)


def versions(target: str, serving: str | None, failed: str | None = None) -> Versions:
    history = (
        [{"version": failed, "result": "RolledBack", "message": "NonZeroExit: exit 1"}] if failed else []
    )
    return Versions(target, serving, failed, None, history)


MODELDEPLOYMENT_CASES: dict[str, tuple[dict[str, Any], Health]] = {
    "no status yet": (deployment(None), ("Progressing", "Waiting for the operator")),
    "spec changed, not yet observed": (
        deployment(serving_conditions(rollout(True, ready=2), versions("7", "7")), generation=3, observed=2),
        ("Progressing", "Waiting for the operator to observe generation 3"),
    ),
    "first version rolling out": (
        deployment(serving_conditions(rollout(), versions("7", None))),
        ("Progressing", "rolling out version 7"),
    ),
    "new version rolling out, the old one serving": (
        deployment(serving_conditions(rollout(ready=2), versions("8", "7"))),
        ("Progressing", "version 7 serves while version 8 rolls out"),
    ),
    "serving": (
        deployment(serving_conditions(rollout(True, ready=2), versions("7", "7"))),
        ("Healthy", "version 7 serves on 2 replica(s)"),
    ),
    "rolled back": (
        deployment(serving_conditions(rollout(True, ready=2), versions("7", "7", failed="8"))),
        ("Degraded", "RolledBack: version 8 did not become ready (NonZeroExit: exit 1); version 7 serves"),
    ),
    "rollout past its deadline, no rollback": (
        deployment(serving_conditions(rollout(failed=True), versions("7", None))),
        ("Degraded", "RolloutFailed: version 7 did not become ready within the progress deadline"),
    ),
    "model not in the registry": (
        deployment(unusable("ModelNotFound", "the registry has no alias/champion of model 'm'")),
        ("Degraded", "ModelNotFound: the registry has no alias/champion of model 'm'"),
    ),
    "registry unreachable while serving": (
        deployment(
            [
                *serving_conditions(rollout(True, ready=2), versions("7", "7"))[:2],
                Condition("Degraded", True, "RegistryUnavailable", "connection refused"),
            ]
        ),
        ("Degraded", "RegistryUnavailable: connection refused"),
    ),
}


@pytest.mark.parametrize("case", list(TRAININGRUN_CASES))
def test_trainingrun_health(case: str) -> None:
    found, expected = TRAININGRUN_CASES[case]
    assert health(found) == expected


@pytest.mark.parametrize("case", list(MODELDEPLOYMENT_CASES))
def test_modeldeployment_health(case: str) -> None:
    found, expected = MODELDEPLOYMENT_CASES[case]
    assert health(found) == expected


def captured_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = yaml.safe_load((FIXTURES / "health_test.yaml").read_text())["tests"]
    return cases


@pytest.mark.parametrize("case", captured_cases(), ids=lambda case: str(case["inputPath"]))
def test_health_of_objects_captured_end_to_end(case: dict[str, Any]) -> None:
    found = yaml.safe_load((FIXTURES / case["inputPath"]).read_text())
    expected = case["healthStatus"]
    assert case["inputPath"].endswith(f"-{expected['status']}.yaml")  # the status it was captured at
    assert health(found) == (expected["status"], expected["message"])


def test_every_captured_object_has_an_expected_health() -> None:
    listed = {case["inputPath"] for case in captured_cases()}
    assert listed == {p.name for p in FIXTURES.glob("*.yaml") if p.name != "health_test.yaml"}
    statuses = {
        (case["inputPath"].split("-")[0], case["healthStatus"]["status"]) for case in captured_cases()
    }
    for kind in KINDS:
        assert {(kind, s) for s in ("Progressing", "Healthy", "Degraded")} <= statuses, kind


def test_the_sandbox_is_argo_cds_no_string_library_and_only_known_statuses() -> None:
    with pytest.raises(Exception, match="attempt to index a string value"):
        evaluate('return {status = ("Healthy"):sub(1)}', {})
    for name in ("string", "math", "io", "require", "loadstring", "dofile"):
        assert evaluate(f"return {{status = 'Healthy', message = type({name})}}", {}) == ("Healthy", "nil")
    with pytest.raises(ValueError, match="Unknown"):
        evaluate('return {status = "Fine"}', {})


@pytest.mark.parametrize("path", list(GENERATED), ids=lambda p: p.name)
def test_generated_configuration_is_in_step_with_the_scripts(path: Path) -> None:
    assert path.read_text() == GENERATED[path](), (
        f"regenerate with: python tests/argocd_health.py ({path.name})"
    )
    document = yaml.safe_load(path.read_text())
    entries = document["configs"]["cm"] if "configs" in document else document["data"]
    assert entries == {config_key(kind): health_script(kind) for kind in KINDS}


def test_the_models_base_is_the_examples() -> None:
    """examples/gitops/models/base holds the TrainingRun and ModelDeployment examples, spec for spec."""
    base = ROOT / "examples" / "gitops" / "models" / "base"
    pairs = {
        "trainingrun.yaml": "trainingrun-promotion.yaml",
        "modeldeployment.yaml": "modeldeployment-alias.yaml",
    }
    for ours, example in pairs.items():
        found = yaml.safe_load((base / ours).read_text())
        original = yaml.safe_load((ROOT / "examples" / example).read_text())
        assert found["spec"] == original["spec"], ours
