"""The pure parts of `mlplatform demo`: the helm command, the prediction pod, and reading the examples'
status into "still going", "done" or "why not"."""

from __future__ import annotations

from typing import Any

from mlplatform.demo import (
    MODELDEPLOYMENT_EXAMPLE,
    PREDICTION_INPUT,
    TRAININGRUN_EXAMPLE,
    DemoSettings,
    example_name,
    helm_install_args,
    modeldeployment_outcome,
    prediction_pod,
    trainingrun_outcome,
)


def run(generation: int = 1, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "r", "generation": generation},
        "status": {"observedGeneration": 1, **status},
    }


def test_helm_installs_or_upgrades_and_waits() -> None:
    args = helm_install_args(DemoSettings(helm_args=("--set", "a=b"), timeout=60))
    assert args[:4] == ["helm", "upgrade", "--install", "mlplatform"]
    assert args[-5:] == ["--wait", "--timeout", "60s", "--set", "a=b"]


def test_the_release_names_follow_the_charts_full_name() -> None:
    assert DemoSettings(release="mlplatform").mlflow_service == "mlplatform-mlflow"
    assert DemoSettings(release="team").operator_deployment == "team-mlplatform-operator"


def test_the_prediction_pod_is_restricted_and_carries_the_request() -> None:
    pod = prediction_pod(DemoSettings(), "http://m.ns.svc/invocations", PREDICTION_INPUT)
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = spec["containers"][0]
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "URL", "value": "http://m.ns.svc/invocations"} in c["env"]


def test_a_trainingrun_is_done_only_when_succeeded_and_promoted() -> None:
    assert trainingrun_outcome(run(phase="Running")) is None
    assert trainingrun_outcome(run(generation=2, phase="Succeeded")) is None
    assert trainingrun_outcome(run(phase="Succeeded", model={"promotedTo": "champion"})) == ""
    not_promoted = run(phase="Succeeded", model={"promotion": {"message": "rmse 80 is not < 70"}})
    assert trainingrun_outcome(not_promoted) == "not promoted: rmse 80 is not < 70"
    failed = run(phase="Failed", conditions=[{"type": "Stalled", "status": "True", "reason": "OOMKilled",
                                              "message": "out of memory"}])  # fmt: skip
    assert trainingrun_outcome(failed) == "OOMKilled: out of memory"


def test_a_modeldeployment_is_done_when_ready_and_fails_on_reasons_that_will_not_pass() -> None:
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    rolling = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "RollingOut"}]}}
    missing = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "ModelNotFound",
                                          "message": "no alias"}]}}  # fmt: skip
    assert modeldeployment_outcome(ready) == ""
    assert modeldeployment_outcome(rolling) is None
    assert modeldeployment_outcome({}) is None
    assert modeldeployment_outcome(missing) == "ModelNotFound: no alias"


def test_the_examples_names_are_read_from_their_files() -> None:
    assert example_name(TRAININGRUN_EXAMPLE) == "diabetes-candidate"
    assert example_name(MODELDEPLOYMENT_EXAMPLE) == "diabetes"
