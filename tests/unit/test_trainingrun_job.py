"""The Job a TrainingRun becomes: the trainer contract, sources, security and the user's pod settings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlplatform import names
from mlplatform.api.base import SpecError
from mlplatform.api.trainingrun import parse_spec
from mlplatform.builders.common import LABEL_VALUE_LIMIT, short_name
from mlplatform.builders.trainingrun import RunContext, TrainerSettings, build_job

RUN = RunContext(experiment_name="wine", experiment_id="4", run_id="abc123")
SETTINGS = TrainerSettings(tracking_uri="http://mlflow.mlplatform-system.svc:5000")


def job(spec: dict[str, Any], settings: TrainerSettings = SETTINGS, name: str = "wine-01") -> dict[str, Any]:
    return build_job(name, "team-a", "uid-1", spec=parse_spec(spec), run=RUN, settings=settings)


def trainer(built: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = built["spec"]["template"]["spec"]["containers"][0]
    return container


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_trainer_gets_the_contract_and_resumes_the_operators_run() -> None:
    built = job({"image": "mlplatform/trainer-sklearn:0.1.0", "parameters": {"alpha": "0.5"}})
    env = env_of(trainer(built))
    assert env[names.ENV_TRACKING_URI] == SETTINGS.tracking_uri
    assert env[names.ENV_EXPERIMENT_NAME] == "wine"
    assert names.ENV_EXPERIMENT_ID not in env, "`mlflow run` refuses an experiment id beside its name"
    assert env[names.ENV_RUN_ID] == "abc123"
    assert json.loads(env[names.ENV_PARAMETERS]) == {"alpha": "0.5"}
    assert "args" not in trainer(built), "no command: the image's CMD runs"


def test_the_job_is_owned_labelled_and_restricted() -> None:
    built = job({"image": "x", "backoffLimit": 2, "activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 5})
    assert built["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert built["metadata"]["ownerReferences"][0]["controller"] is True
    assert built["metadata"]["labels"][names.LABEL_TRAININGRUN] == "wine-01"
    assert built["spec"]["template"]["metadata"]["labels"][names.LABEL_TRAININGRUN] == "wine-01"
    assert (built["spec"]["backoffLimit"], built["spec"]["activeDeadlineSeconds"]) == (2, 60)
    assert built["spec"]["ttlSecondsAfterFinished"] == 5
    pod = built["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert trainer(built)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
    }
    assert pod["automountServiceAccountToken"] is False
    assert trainer(built)["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_the_user_may_override_security_and_set_pod_settings() -> None:
    built = job(
        {
            "image": "x",
            "podSecurityContext": {"runAsUser": 0},
            "securityContext": {"privileged": True},
            "serviceAccountName": "trainer",
            "nodeSelector": {"gpu": "yes"},
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
            "resources": {"limits": {"nvidia.com/gpu": 1}},
            "imagePullSecrets": [{"name": "registry"}],
            "suspend": True,
        }
    )
    pod = built["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsUser": 0}
    assert trainer(built)["securityContext"] == {"privileged": True}
    assert pod["serviceAccountName"] == "trainer" and pod["automountServiceAccountToken"] is True
    assert pod["nodeSelector"] == {"gpu": "yes"} and pod["tolerations"][0]["key"] == "gpu"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert trainer(built)["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert built["spec"]["suspend"] is True


def test_the_command_runs_through_the_image_entrypoint_as_args() -> None:
    assert trainer(job({"image": "x", "command": ["python", "train.py"]}))["args"] == ["python", "train.py"]


def test_an_entry_point_runs_mlflow_run_on_the_operators_run() -> None:
    built = job({"image": "x", "entryPoint": "main", "parameters": {"b": "2", "a": "1"}})
    assert trainer(built)["args"] == [
        "mlflow",
        "run",
        ".",
        "--entry-point",
        "main",
        "--env-manager",
        "local",
        "--run-id",
        "$(MLFLOW_RUN_ID)",
        "-P",
        "a=1",
        "-P",
        "b=2",
    ]


def test_a_configmap_source_is_the_read_only_working_directory() -> None:
    built = job({"image": "x", "source": {"configMap": {"name": "code"}}})
    container = trainer(built)
    assert container["workingDir"] == "/workspace"
    assert {"name": "workspace", "mountPath": "/workspace", "readOnly": True} in container["volumeMounts"]
    assert {"name": "workspace", "configMap": {"name": "code"}} in built["spec"]["template"]["spec"][
        "volumes"
    ]


def test_a_git_source_is_cloned_by_an_init_container_with_credentials_by_reference() -> None:
    spec = {
        "image": "x",
        "source": {
            "git": {
                "repository": "https://example.com/r.git",
                "revision": "v1",
                "path": "wine",
                "credentialsSecret": {"name": "git-creds"},
            }
        },
    }
    built = job(spec, TrainerSettings(tracking_uri="http://m", git_image="alpine/git:1"))
    pod = built["spec"]["template"]["spec"]
    [clone] = pod["initContainers"]
    assert clone["image"] == "alpine/git:1"
    env = env_of(clone)
    assert env["GIT_REPOSITORY"] == "https://example.com/r.git" and env["GIT_REVISION"] == "v1"
    assert env[names.ENV_GIT_PASSWORD] == {"secretKeyRef": {"name": "git-creds", "key": "password"}}
    assert "https://example.com" not in " ".join(clone["command"]), "the URL is data, not script"
    assert trainer(built)["workingDir"] == "/workspace/wine"


def test_the_tracking_secret_reaches_pods_by_reference_only() -> None:
    built = job({"image": "x"}, TrainerSettings(tracking_uri="http://m", tracking_secret="mlflow-creds"))
    assert {"secretRef": {"name": "mlflow-creds", "optional": True}} in trainer(built)["envFrom"]


def test_a_long_name_still_fits_the_job_name_label() -> None:
    name = "a" * 200
    built = job({"image": "x"}, name=name)
    assert len(built["metadata"]["name"]) <= LABEL_VALUE_LIMIT
    assert built["metadata"]["name"] == short_name(name) != short_name("a" * 199)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"image": "x", "command": ["a"], "entryPoint": "main"}, "command and entryPoint"),
        ({"image": "x", "source": {}}, "spec.source"),
        ({"image": "x", "model": {"name": "m", "promote": {"alias": "a", "stage": "Production"}}}, "promote"),
        ({"image": "x", "activeDeadlineSeconds": 0}, "spec.activeDeadlineSeconds"),
        ({}, "spec.image"),
    ],
)
def test_a_spec_the_operator_cannot_use_names_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError, match=field):
        parse_spec(spec)
