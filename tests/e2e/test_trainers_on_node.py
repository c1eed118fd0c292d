"""Tiers 2 to 4 together: trainer images run as pods on the local node and log to the MLflow stack
through its in-cluster name, exactly as they will for a TrainingRun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client

from kube import apply, container_state, job_outcome, kubectl, pods_of
from mlplatform.local.stack.tracking import in_cluster_uri
from stack import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _needs_node_and_stack(mlflow_stack: Stack) -> None:
    if not mlflow_stack.config.node:
        pytest.skip("the local node needs root")


def trainer_job(
    tracking_uri: str, name: str, image: str, experiment: str, parameters: dict[str, str]
) -> dict[str, object]:
    """A Job as the operator will make it for a TrainingRun: the trainer contract's environment."""
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "MLPLATFORM_PARAMETERS": json.dumps(parameters),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "trainer",
                            "image": f"{image}:0.1.0",
                            "env": [{"name": k, "value": v} for k, v in env.items()],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                }
            },
        },
    }


def run_of(stack: Stack, experiment: str) -> dict[str, object]:
    found = stack.api("GET", "experiments/get-by-name", params={"experiment_name": experiment}).json()
    runs = stack.api("POST", "runs/search", json={"experiment_ids": [found["experiment"]["experiment_id"]]})
    [run] = runs.json()["runs"]
    return dict(run)


def test_minimal_trainer_pod_logs_to_the_stack_by_its_in_cluster_name(
    mlflow_stack: Stack,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
    experiment: str,
) -> None:
    apply(
        kubectl_bin,
        kubeconfig,
        namespace,
        trainer_job(
            in_cluster_uri(mlflow_stack.config),
            "minimal",
            "mlplatform/trainer-minimal",
            experiment,
            {"message": "from-the-node"},
        ),
    )
    outcome = job_outcome(api_client, namespace, "minimal")
    logs = kubectl(kubectl_bin, kubeconfig, "logs", "-n", namespace, "job/minimal").stdout
    assert outcome == "Complete", logs

    run = run_of(mlflow_stack, experiment)
    assert run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["message"] == "from-the-node"
    artifacts = mlflow_stack.api(
        "GET", "artifacts/list", params={"run_id": run["info"]["run_id"], "path": "images"}
    ).json()
    pngs = [f["path"] for f in artifacts.get("files", []) if f["path"].endswith(".png")]
    assert pngs, artifacts
    keys = [
        o["Key"]
        for o in mlflow_stack.s3().list_objects_v2(Bucket=mlflow_stack.endpoints.bucket).get("Contents", [])
        if o["Key"].endswith(pngs[0]) and run["info"]["run_id"] in o["Key"]
    ]
    assert keys, "the artifact is an object in MinIO"


def test_sklearn_trainer_pod_registers_a_model(
    mlflow_stack: Stack,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
    experiment: str,
) -> None:
    model = f"wine-{experiment}"
    apply(
        kubectl_bin,
        kubeconfig,
        namespace,
        trainer_job(
            in_cluster_uri(mlflow_stack.config),
            "sklearn",
            "mlplatform/trainer-sklearn",
            experiment,
            {"alpha": "0.05", "registered_model_name": model},
        ),
    )
    outcome = job_outcome(api_client, namespace, "sklearn")
    logs = kubectl(kubectl_bin, kubeconfig, "logs", "-n", namespace, "job/sklearn").stdout
    assert outcome == "Complete", logs
    run = run_of(mlflow_stack, experiment)
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert {"rmse", "mae", "r2"} <= set(metrics)
    assert mlflow_stack.query("SELECT count(*) FROM runs WHERE run_uuid = %s", run["info"]["run_id"]) == [
        (1,)
    ]


def test_trainer_with_an_unreachable_tracking_server_fails_with_the_reason(
    mlflow_stack: Stack,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
    experiment: str,
) -> None:
    job = trainer_job(
        in_cluster_uri(mlflow_stack.config), "lost", "mlplatform/trainer-minimal", experiment, {}
    )
    container = job["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    container["env"][0]["value"] = "http://nowhere.mlplatform-system.svc.cluster.local:5000"
    container["env"].append({"name": "MLPLATFORM_TRACKING_TIMEOUT", "value": "3"})
    apply(kubectl_bin, kubeconfig, namespace, job)
    assert job_outcome(api_client, namespace, "lost") == "Failed"
    [failed] = pods_of(client.CoreV1Api(api_client), namespace, "job-name=lost")
    assert container_state(failed).terminated.exit_code != 0
    logs = kubectl(kubectl_bin, kubeconfig, "logs", "-n", namespace, failed.metadata.name).stdout
    assert "nowhere.mlplatform-system" in logs
