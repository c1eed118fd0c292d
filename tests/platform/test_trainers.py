"""Trainers against the real stack: runs land in PostgreSQL, artifacts in MinIO, models serve by alias."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from mlplatform.versions import MLFLOW_VERSION

if TYPE_CHECKING:  # the fixtures' types, from tests/platform/conftest.py
    from conftest import Image
    from stack import Stack

pytestmark = pytest.mark.platform
SCRIPTS = Path(__file__).parent / "scripts"


def artifact_keys(stack: Stack, experiment_id: str, run_id: str) -> dict[str, int]:
    """The run's artifacts as MinIO holds them (key -> size), read with boto3, not through MLflow."""
    listing = stack.s3().list_objects_v2(Bucket=stack.endpoints.bucket, Prefix=f"{experiment_id}/{run_id}/")
    return {item["Key"]: item["Size"] for item in listing.get("Contents", [])}


def test_minimal_trainer_with_only_the_documented_environment(
    mlflow_stack: Stack, images: dict[str, Image], experiment: str
) -> None:
    env = mlflow_stack.trainer_env(
        experiment, MLPLATFORM_PARAMETERS=json.dumps({"message": "hello from a test"})
    )
    result = images["trainer-minimal"].train(env)
    run_id, experiment_id = result["run_id"], result["experiment_id"]

    # The run, its parameter and its tag are rows in PostgreSQL.
    assert mlflow_stack.query(
        "SELECT r.status, e.name FROM runs r JOIN experiments e USING (experiment_id) WHERE r.run_uuid = %s",
        run_id,
    ) == [("FINISHED", experiment)]
    assert mlflow_stack.query("SELECT key, value FROM params WHERE run_uuid = %s", run_id) == [
        ("message", "hello from a test")
    ]
    assert ("mlplatform.trainer", "minimal") in mlflow_stack.query(
        "SELECT key, value FROM tags WHERE run_uuid = %s", run_id
    )

    # The PNG is an object in the MinIO bucket.
    key = f"{experiment_id}/{run_id}/artifacts/images/badge.png"
    assert key in artifact_keys(mlflow_stack, experiment_id, run_id)
    body = mlflow_stack.s3().get_object(Bucket=mlflow_stack.endpoints.bucket, Key=key)["Body"].read()
    assert body.startswith(b"\x89PNG\r\n\x1a\n")


def test_the_trainer_resumes_the_run_the_operator_created(
    mlflow_stack: Stack, images: dict[str, Image], experiment: str
) -> None:
    experiment_id = mlflow_stack.api("POST", "experiments/create", json={"name": experiment}).json()[
        "experiment_id"
    ]
    created = mlflow_stack.api("POST", "runs/create", json={"experiment_id": experiment_id}).json()["run"][
        "info"
    ]
    env = mlflow_stack.trainer_env(experiment, MLFLOW_RUN_ID=created["run_id"])
    result = images["trainer-minimal"].train(env, ["python", "train.py", "--message", "resumed"])
    assert result["run_id"] == created["run_id"]
    run = mlflow_stack.api("GET", "runs/get", params={"run_id": created["run_id"]}).json()["run"]
    assert run["info"]["status"] == "FINISHED"
    assert {"key": "message", "value": "resumed"} in run["data"]["params"]
    assert mlflow_stack.query("SELECT count(*) FROM runs WHERE experiment_id = %s", int(experiment_id)) == [
        (1,)
    ]


def test_the_trainer_runs_unchanged_as_an_mlflow_project(
    mlflow_stack: Stack, images: dict[str, Image], experiment: str
) -> None:
    minimal = images["trainer-minimal"]
    result = minimal.run(
        mlflow_stack.trainer_env(experiment),
        ["mlflow", "run", ".", "-P", "message=from-mlflow-run", "--env-manager", "local"],
    )
    assert result.returncode == 0, result.stderr
    runs = mlflow_stack.query(
        "SELECT p.value FROM params p JOIN runs r USING (run_uuid) JOIN experiments e USING (experiment_id) "
        "WHERE e.name = %s AND p.key = 'message'",
        experiment,
    )
    assert runs == [("from-mlflow-run",)]


def serve(image: Image, stack: Stack, model_uri: str, port: int, stopper: list[Any]) -> str:
    """`mlflow models serve --env-manager local` from the image, as a ModelDeployment's pod would run it."""
    argv = [
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    proc = subprocess.Popen(
        image.command(argv),
        env=image.environ({"MLFLOW_TRACKING_URI": stack.tracking_uri}),
        cwd=image.environment.context,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    stopper.append(proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mlflow models serve exited: {proc.stdout.read() if proc.stdout else ''}"
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return url
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise AssertionError("mlflow models serve was not ready within 180s")


def test_sklearn_trainer_registers_a_version_that_serves_by_alias(
    mlflow_stack: Stack, images: dict[str, Image], experiment: str, port: int, stopper: list[Any]
) -> None:
    started = time.monotonic()
    sklearn = images["trainer-sklearn"]
    model_name = f"diabetes-{uuid.uuid4().hex[:8]}"
    env = mlflow_stack.trainer_env(experiment, MLPLATFORM_PARAMETERS=json.dumps({"alpha": "0.002"}))
    result = sklearn.train(env, ["python", "train.py", "--registered-model-name", model_name])
    run_id, version = result["run_id"], result["registered_model_version"]
    trained = time.monotonic()

    # Parameters and metrics are rows in PostgreSQL; the metrics are sane for this data set.
    params = dict(mlflow_stack.query("SELECT key, value FROM params WHERE run_uuid = %s", run_id))
    assert params == {"alpha": "0.002", "l1_ratio": "0.5", "test_size": "0.25", "random_state": "42"}
    metrics = dict(mlflow_stack.query("SELECT key, value FROM latest_metrics WHERE run_uuid = %s", run_id))
    assert (
        set(metrics) == {"rmse", "mae", "r2"} and 0.3 < metrics["r2"] < 1 and metrics["mae"] < metrics["rmse"]
    )

    # Coefficients, plot and model (with signature and input example) are objects in MinIO.
    experiment_id = str(
        mlflow_stack.query("SELECT experiment_id FROM runs WHERE run_uuid = %s", run_id)[0][0]
    )
    keys = artifact_keys(mlflow_stack, experiment_id, run_id)
    assert {
        f"{experiment_id}/{run_id}/artifacts/coefficients.csv",
        f"{experiment_id}/{run_id}/artifacts/plots/predicted_vs_actual.png",
    } <= set(keys)
    s3, bucket = mlflow_stack.s3(), mlflow_stack.endpoints.bucket
    model_files = {
        item["Key"]: item["Key"].rsplit("/", 1)[1]
        for item in s3.list_objects_v2(Bucket=bucket, Prefix=f"{experiment_id}/models/")["Contents"]
    }
    assert {"MLmodel", "input_example.json", "serving_input_example.json"} <= set(model_files.values())
    mlmodel_key = next(key for key, name in model_files.items() if name == "MLmodel")
    mlmodel = s3.get_object(Bucket=bucket, Key=mlmodel_key)["Body"].read().decode()
    assert "signature:" in mlmodel and '"name": "bmi"' in mlmodel and "saved_input_example_info:" in mlmodel

    # Registered, then promoted by alias, as a promotion gate would.
    registered = mlflow_stack.api(
        "GET", "model-versions/get", params={"name": model_name, "version": version}
    )
    assert registered.json()["model_version"]["run_id"] == run_id
    alias = {"name": model_name, "alias": "champion", "version": version}
    assert mlflow_stack.api("POST", "registered-models/alias", json=alias).ok

    model_uri = f"models:/{model_name}@champion"
    expected = json.loads(
        sklearn.python(
            str(SCRIPTS / "predict.py"), model_uri, env={"MLFLOW_TRACKING_URI": mlflow_stack.tracking_uri}
        )
    )
    url = serve(sklearn, mlflow_stack, model_uri, port, stopper)
    columns, data = expected["columns"], expected["data"]
    records = [dict(zip(columns, row, strict=True)) for row in data]
    payloads = {
        "dataframe_split": {"dataframe_split": {"columns": columns, "data": data}},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": {column: [row[i] for row in data] for i, column in enumerate(columns)}},
    }
    for name, payload in payloads.items():
        answer = requests.post(f"{url}/invocations", json=payload, timeout=30)
        assert answer.status_code == 200, f"{name}: {answer.text}"
        assert answer.json()["predictions"] == pytest.approx(expected["predictions"], rel=1e-9), name
    assert requests.get(f"{url}/ping", timeout=5).status_code == 200
    assert requests.get(f"{url}/health", timeout=5).status_code == 200
    assert requests.get(f"{url}/version", timeout=5).text.strip() == MLFLOW_VERSION
    bad = requests.post(
        f"{url}/invocations", json={"dataframe_split": {"columns": ["nope"], "data": [[1]]}}, timeout=30
    )
    assert bad.status_code == 400 and "error_code" in bad.json()
    print(
        f"\nsklearn example end to end: {time.monotonic() - started:.1f}s "
        f"(train + register {trained - started:.1f}s, then alias, serve and four answers)"
    )
