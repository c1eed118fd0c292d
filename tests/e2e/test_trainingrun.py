"""TrainingRun end to end: `kubectl apply` -> MLflow run -> Job on the local node -> result in status and
in MLflow; failures caused for real; the operator killed, MLflow unreachable, deletion."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kube import apply, eventually, kubectl, pods_of
from mlplatform import names
from operator_process import OPERATOR_TOKEN, WEBHOOK_SECRET, OperatorProcess
from stack import Stack
from trainingruns import (
    condition,
    events,
    get,
    mlflow_run,
    python_run,
    runs_tagged,
    status,
    tags_of,
    trainingrun,
    unique,
    wait_event,
    wait_phase,
)

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there


def example(file: str, kind: str = names.TRAININGRUN_KIND) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / file).read_text()) if d]
    found: dict[str, Any] = next(d for d in docs if d["kind"] == kind)
    return found


def promotion_run(name: str, model: str, experiment: str, when: str) -> dict[str, Any]:
    manifest = example("trainingrun-promotion.yaml")
    manifest["metadata"]["name"] = name
    manifest["spec"].update(experiment=experiment)
    manifest["spec"]["model"]["name"] = model
    manifest["spec"]["model"]["promote"]["when"] = when
    return manifest


def alias_version(stack: Stack, model: str, alias: str) -> str | None:
    answer = stack.api("GET", "registered-models/alias", params={"name": model, "alias": alias})
    return str(answer.json()["model_version"]["version"]) if answer.ok else None


def test_a_run_is_tracked_registered_and_promoted_when_its_gate_holds(
    running_operator: OperatorProcess,
    mlflow_stack: Stack,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
    experiment: str,
) -> None:
    model = unique("diabetes")
    apply(kubectl_bin, kubeconfig, namespace, promotion_run("first", model, experiment, "metrics.rmse < 70"))
    done = wait_phase(api_client, namespace, "first", "Succeeded", "Failed")
    assert done["phase"] == "Succeeded", done
    assert condition(done, "Ready")["status"] == "True"

    # kubectl get shows the phase, the run, the key metric and the version.
    table = kubectl(kubectl_bin, kubeconfig, "get", "trainingruns", "-n", namespace).stdout
    run_id = done["mlflow"]["runId"]
    assert "Succeeded" in table and run_id in table and "rmse=" in table, table
    assert done["keyMetric"].startswith("rmse=")

    # MLflow: params, metrics, the model, and the tags that link the run to its object.
    run = mlflow_run(mlflow_stack, run_id)
    assert run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["alpha"] == "0.001"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["rmse"] == pytest.approx(done["metrics"]["rmse"])
    found = get(api_client, namespace, "first")
    assert found is not None
    tags = tags_of(run)
    assert tags[names.TAG_UID] == found["metadata"]["uid"]
    assert tags[names.TAG_NAMESPACE] == namespace and tags[names.TAG_NAME] == "first"
    assert tags[names.TAG_IMAGE] == "mlplatform/trainer-sklearn:0.1.0"
    assert done["mlflow"]["runUrl"].endswith(f"#/experiments/{done['mlflow']['experimentId']}/runs/{run_id}")

    # Registered, and promoted: no champion yet, and the gate holds.
    assert done["model"]["name"] == model and done["model"]["version"] == "1"
    assert done["model"]["promotedTo"] == "champion"
    assert done["model"]["promotion"]["promoted"] is True
    assert alias_version(mlflow_stack, model, "champion") == "1"
    assert wait_event(api_client, namespace, "first", "Promoted")

    # A gate that fails: Succeeded all the same, not promoted, and the numbers say why.
    apply(kubectl_bin, kubeconfig, namespace, promotion_run("second", model, experiment, "metrics.rmse < 1"))
    second = wait_phase(api_client, namespace, "second", "Succeeded", "Failed")
    assert second["phase"] == "Succeeded", second
    assert second["model"]["version"] == "2"
    promotion = second["model"]["promotion"]
    assert promotion["promoted"] is False and "promotedTo" not in second["model"]
    assert "rmse" in promotion["message"] and "< 1" in promotion["message"], promotion
    assert f"{second['metrics']['rmse']:.4g}"[:4] in promotion["message"], promotion
    assert alias_version(mlflow_stack, model, "champion") == "1"
    assert wait_event(api_client, namespace, "second", "NotPromoted")

    # The gate holds but the version is no better than the champion (same data, same alpha): not promoted.
    apply(kubectl_bin, kubeconfig, namespace, promotion_run("third", model, experiment, "metrics.rmse < 70"))
    third = wait_phase(api_client, namespace, "third", "Succeeded", "Failed")
    assert third["model"]["promotion"]["promoted"] is False, third
    assert "current holder" in third["model"]["promotion"]["message"]
    assert alias_version(mlflow_stack, model, "champion") == "1"


FAILURES = {
    "image pull": (
        {"image": "registry.invalid/nobody/no-such-image:1"},
        "ImagePullFailed",
        "no-such-image",
    ),
    "OOM killed": (
        {
            "image": "python:3.11",
            "command": ["python3", "-c", "import time; x = bytearray(512 * 2**20); time.sleep(5)"],
            "resources": {"limits": {"memory": "64Mi"}},
        },
        "OOMKilled",
        "out of memory",
    ),
    "non-zero exit": (
        {
            "image": "python:3.11",
            "command": ["python3", "-c", "import sys; print('the data set is empty'); sys.exit(3)"],
        },
        "NonZeroExit",
        "the data set is empty",
    ),
    "deadline": (
        {"image": "python:3.11", "command": ["python3", "-c", "import time; time.sleep(60)"]},
        "DeadlineExceeded",
        "activeDeadlineSeconds",
    ),
    "missing secret": (
        {
            "image": "python:3.11",
            "command": ["python3", "-c", "print('never')"],
            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "no-such-secret", "key": "k"}}}],
        },
        "CreateContainerConfigError",
        "no-such-secret",
    ),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_failure_gives_its_reason_an_event_and_a_failed_run(
    case: str,
    running_operator: OperatorProcess,
    mlflow_stack: Stack,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
    experiment: str,
) -> None:
    spec, reason, detail = FAILURES[case]
    extra = {"activeDeadlineSeconds": 3} if case == "deadline" else {}
    apply(kubectl_bin, kubeconfig, namespace, trainingrun("doomed", experiment=experiment, **spec, **extra))
    failed = wait_phase(api_client, namespace, "doomed", "Failed", "Succeeded", timeout=120)
    assert failed["phase"] == "Failed"
    stalled = condition(failed, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == reason, failed
    assert detail in stalled["message"], stalled
    assert condition(failed, "Ready")["status"] == "False"
    kind, _, message = wait_event(api_client, namespace, "doomed", reason)
    assert kind == "Warning" and detail in message
    run = mlflow_run(mlflow_stack, failed["mlflow"]["runId"])
    assert run["info"]["status"] == "FAILED"
    assert tags_of(run)[f"{names.GROUP}/failure"].startswith(reason)
    if case in ("image pull", "missing secret"):  # a pod that can never start is not left behind
        eventually(
            lambda: not pods_of(client.CoreV1Api(api_client), namespace, f"{names.LABEL_TRAININGRUN}=doomed"),
            timeout=60,
            what="the stuck pod removed",
        )


def test_operator_killed_mid_run_records_the_run_once(
    running_operator: OperatorProcess,
    mlflow_stack: Stack,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
    experiment: str,
) -> None:
    script = "import time; time.sleep(6); print('trained')"
    apply(kubectl_bin, kubeconfig, namespace, python_run("survivor", script, experiment=experiment))
    running = wait_phase(api_client, namespace, "survivor", "Running", timeout=120)
    job_uid = client.BatchV1Api(api_client).read_namespaced_job("survivor", namespace).metadata.uid
    running_operator.kill()
    time.sleep(8)  # the trainer finishes while no operator runs
    running_operator.start()
    done = wait_phase(api_client, namespace, "survivor", "Succeeded", "Failed")
    assert done["phase"] == "Succeeded", done
    jobs = client.BatchV1Api(api_client).list_namespaced_job(namespace).items
    assert [j.metadata.uid for j in jobs] == [job_uid]
    found = get(api_client, namespace, "survivor")
    assert found is not None
    runs = runs_tagged(mlflow_stack, running["mlflow"]["experimentId"], found["metadata"]["uid"])
    assert [r["info"]["run_id"] for r in runs] == [running["mlflow"]["runId"]]
    assert runs[0]["info"]["status"] == "FINISHED"


def test_mlflow_unreachable_is_said_and_waited_out(
    running_operator: OperatorProcess,
    mlflow_stack: Stack,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
    experiment: str,
) -> None:
    running_operator.restart(tracking_uri=UNREACHABLE)
    try:
        apply(kubectl_bin, kubeconfig, namespace, python_run("patient", "print('ok')", experiment=experiment))

        def says_unreachable() -> dict[str, Any] | None:
            reconciling = condition(status(api_client, namespace, "patient"), "Reconciling")
            return reconciling if reconciling.get("reason") == "MlflowUnavailable" else None

        reconciling = eventually(says_unreachable, timeout=60, what="MlflowUnavailable in the conditions")
        assert reconciling["status"] == "True" and "127.0.0.1:9" in reconciling["message"]
        assert not client.BatchV1Api(api_client).list_namespaced_job(namespace).items, "no Job before the run"
    finally:
        running_operator.restart()
    done = wait_phase(api_client, namespace, "patient", "Succeeded", "Failed")
    assert done["phase"] == "Succeeded", done


def test_deleting_a_running_trainingrun_stops_it_and_kills_the_run(
    running_operator: OperatorProcess,
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
        python_run("stopped", "import time; time.sleep(300)", experiment=experiment),
    )
    running = wait_phase(api_client, namespace, "stopped", "Running", timeout=120)
    kubectl(kubectl_bin, kubeconfig, "delete", "trainingrun", "stopped", "-n", namespace, "--timeout=60s")
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    eventually(lambda: not batch.list_namespaced_job(namespace).items, timeout=30, what="the Job deleted")
    eventually(
        lambda: not pods_of(core, namespace, f"{names.LABEL_TRAININGRUN}=stopped"),
        timeout=60,
        what="the pod deleted",
    )
    assert mlflow_run(mlflow_stack, running["mlflow"]["runId"])["info"]["status"] == "KILLED"


def test_deletion_lets_go_when_mlflow_is_down(
    running_operator: OperatorProcess,
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
        python_run("orphan", "import time; time.sleep(300)", experiment=experiment),
    )
    wait_phase(api_client, namespace, "orphan", "Running", timeout=120)
    running_operator.restart(tracking_uri=UNREACHABLE)
    try:
        started = time.monotonic()
        kubectl(kubectl_bin, kubeconfig, "delete", "trainingrun", "orphan", "-n", namespace, "--timeout=120s")
        took = time.monotonic() - started
        assert get(api_client, namespace, "orphan") is None
        assert took < 90, f"deletion took {took:.0f}s"
        assert not client.BatchV1Api(api_client).list_namespaced_job(namespace).items
        assert any(e[1] == "RunNotKilled" for e in events(api_client, namespace, "orphan"))
    finally:
        running_operator.restart()


def test_a_finished_run_is_not_run_again_when_its_spec_changes(
    running_operator: OperatorProcess,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
    experiment: str,
) -> None:
    manifest = python_run("once", "print('trained')", experiment=experiment)
    apply(kubectl_bin, kubeconfig, namespace, manifest)
    done = wait_phase(api_client, namespace, "once", "Succeeded", "Failed")
    manifest["spec"]["parameters"] = {"alpha": "0.9"}
    apply(kubectl_bin, kubeconfig, namespace, manifest)
    wait_event(api_client, namespace, "once", "SpecChangeIgnored")

    def observed() -> dict[str, Any] | None:
        # kopf patches the handler's status after the handler (and its event): wait for that patch.
        found = get(api_client, namespace, "once")
        seen = (found or {}).get("status") or {}
        return seen if found and seen.get("observedGeneration") == found["metadata"]["generation"] else None

    again = eventually(observed, timeout=30, what="observedGeneration of the changed spec")
    assert again["mlflow"]["runId"] == done["mlflow"]["runId"] and again["phase"] == done["phase"]
    assert len(client.BatchV1Api(api_client).list_namespaced_job(namespace).items) == 1


def test_no_credential_appears_in_the_object_its_events_its_job_or_the_logs(
    running_operator: OperatorProcess,
    mlflow_stack: Stack,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
    experiment: str,
) -> None:
    secret_value = unique("s3cr3t-value")
    client.CoreV1Api(api_client).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="trainer-secrets"), string_data={"key": secret_value}
        ),
    )
    script = "import os, sys; sys.exit(0 if os.environ['API_KEY'] else 1)"
    manifest = python_run(
        "discreet",
        script,
        experiment=experiment,
        env=[{"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "trainer-secrets", "key": "key"}}}],
    )
    apply(kubectl_bin, kubeconfig, namespace, manifest)
    done = wait_phase(api_client, namespace, "discreet", "Succeeded", "Failed")
    assert done["phase"] == "Succeeded", done

    credentials = mlflow_stack.credentials
    secrets = {
        "the trainer's Secret": secret_value,
        "the operator's MLflow token": OPERATOR_TOKEN,
        "the webhook signing secret": WEBHOOK_SECRET,
        "the database password": credentials.postgres_password,
        "the MinIO password": credentials.minio_password,
    }
    seen = {
        "the TrainingRun": kubectl(
            kubectl_bin, kubeconfig, "get", "tr", "discreet", "-n", namespace, "-o", "yaml"
        ).stdout,
        "its events": kubectl(kubectl_bin, kubeconfig, "get", "events", "-n", namespace, "-o", "yaml").stdout,
        "the Job": kubectl(
            kubectl_bin, kubeconfig, "get", "job", "discreet", "-n", namespace, "-o", "yaml"
        ).stdout,
        "the operator's log": running_operator.log_text(),
    }
    assert "secretKeyRef" in seen["the Job"]
    for where, text in seen.items():
        for what, value in secrets.items():
            assert value not in text, f"{what} appears in {where}"
