"""Bad input fails fast with the cause: wrong password, unreachable MinIO, missing bucket, skewed MLflow."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mlplatform.local.config import StateLayout
from mlplatform.local.errors import LocalError
from mlplatform.local.processes import ProcessSpec, ProcessTable, wait_for
from mlplatform.local.stack import tracking
from mlplatform.local.stack.credentials import pgpass_line, write_private
from mlplatform.versions import MLFLOW_VERSION

if TYPE_CHECKING:
    from conftest import Image
    from stack import Stack

pytestmark = pytest.mark.platform
OTHER_MLFLOW = "3.17.1"  # a real release next to MLFLOW_VERSION


def server_env(stack: Stack, image: Image, port: int, **changes: str) -> dict[str, str]:
    """The local stack's own server configuration, on a spare port, with `changes`."""
    layout = StateLayout(stack.config.state_dir)
    env = tracking.server_env(image.environment, image.venv, stack.config, layout, stack.credentials)
    return {**env, "MLFLOW_PORT": str(port), **changes}


def run_server(
    image: Image, env: dict[str, str], timeout: float = 60
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        image.command(),
        check=False,
        env=env,
        cwd=image.environment.context,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, time.monotonic() - started


def wrong_pgpass(tmp_path: Path) -> str:
    path = tmp_path / "pgpass"
    write_private(path, pgpass_line("mlflow", "not-the-password"))
    return str(path)


def test_wrong_database_password(
    mlflow_stack: Stack, images: dict[str, Image], tmp_path: Path, port: int
) -> None:
    server = images["mlflow-server"]
    result, seconds = run_server(
        server, server_env(mlflow_stack, server, port, PGPASSFILE=wrong_pgpass(tmp_path))
    )
    assert result.returncode == 1 and seconds < 20
    endpoint = f"{mlflow_stack.endpoints.postgres_host}:{mlflow_stack.endpoints.postgres_port}"
    assert f"cannot use PostgreSQL at {endpoint} (user mlflow, database mlflow)" in result.stderr
    assert 'password authentication failed for user "mlflow"' in result.stderr


def test_unreachable_minio(mlflow_stack: Stack, images: dict[str, Image], port: int) -> None:
    server = images["mlflow-server"]
    nowhere = f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}"
    env = server_env(
        mlflow_stack, server, port, MLFLOW_S3_ENDPOINT_URL=nowhere, MLPLATFORM_PREFLIGHT_TIMEOUT="3"
    )
    result, seconds = run_server(server, env)
    assert result.returncode == 1 and seconds < 20
    assert f"cannot reach the S3 endpoint for bucket 'mlflow' at {nowhere} within 3s" in result.stderr


def test_bucket_that_does_not_exist(mlflow_stack: Stack, images: dict[str, Image], port: int) -> None:
    server = images["mlflow-server"]
    bucket = f"missing-{uuid.uuid4().hex[:8]}"
    env = server_env(mlflow_stack, server, port, MLFLOW_ARTIFACTS_DESTINATION=f"s3://{bucket}")
    del env["MLPLATFORM_CREATE_BUCKET"]
    result, seconds = run_server(server, env)
    assert result.returncode == 1 and seconds < 20
    assert f"bucket '{bucket}' at {mlflow_stack.endpoints.s3_endpoint} does not exist" in result.stderr
    buckets = [b["Name"] for b in mlflow_stack.s3().list_buckets()["Buckets"]]
    assert bucket not in buckets and mlflow_stack.endpoints.bucket in buckets


def test_local_up_reports_why_the_server_did_not_start(
    mlflow_stack: Stack, images: dict[str, Image], tmp_path: Path, port: int
) -> None:
    """What `mlplatform local up` does with a server that cannot start: fail at once, with its reason."""
    config = replace(mlflow_stack.config, ports=replace(mlflow_stack.config.ports, mlflow=port))
    layout = StateLayout(config.state_dir)
    spec = tracking.process_spec(
        images["mlflow-server"].environment, config.cache_dir, config, layout, mlflow_stack.credentials
    )
    env = {**spec.env, "PGPASSFILE": wrong_pgpass(tmp_path)}
    processes = ProcessTable(tmp_path / "run", tmp_path / "logs")
    record = processes.start(ProcessSpec("mlflow-server-test", spec.argv, env, spec.cwd))
    started = time.monotonic()
    try:
        with pytest.raises(LocalError, match="mlflow-server-test exited during start-up") as failure:
            wait_for(
                tracking.readiness(config),
                120,
                "mlflow-server-test",
                log_file=processes.log_path("mlflow-server-test"),
                proc=record,
            )
    finally:
        processes.stop("mlflow-server-test")
    assert time.monotonic() - started < 30
    assert "password authentication failed" in failure.value.details


@pytest.fixture(scope="module")
def skewed_trainer(
    images: dict[str, Image], build_image: Callable[..., Image], tmp_path_factory: pytest.TempPathFactory
) -> Image:
    """The minimal trainer image, rebuilt with another MLflow client than the server's."""
    minimal = images["trainer-minimal"].environment
    folder = tmp_path_factory.mktemp("trainer-skewed")
    for name in ("Dockerfile", "entrypoint.py", "train.py"):
        (folder / name).write_text((minimal.context / name).read_text())
    (folder / "requirements.txt").write_text(f"mlflow-skinny=={OTHER_MLFLOW}\n")
    return build_image("test/trainer-skewed", folder)


def test_trainer_with_another_mlflow_version(
    mlflow_stack: Stack, skewed_trainer: Image, tmp_path: Path
) -> None:
    marker = tmp_path / "trained"
    result = skewed_trainer.run(
        mlflow_stack.trainer_env("skewed"), ["python", "-c", f"open({str(marker)!r}, 'w')"], timeout=60
    )
    assert result.returncode == 1
    assert f"this trainer image has MLflow {OTHER_MLFLOW}" in result.stderr
    assert f"runs MLflow {MLFLOW_VERSION}" in result.stderr
    assert f"mlflow=={MLFLOW_VERSION}" in result.stderr
    assert not marker.exists(), "the trainer ran despite the mismatch"


def test_trainer_without_a_reachable_tracking_server(images: dict[str, Image], port: int) -> None:
    uri = f"http://127.0.0.1:{port}"
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "x", "MLPLATFORM_TRACKING_TIMEOUT": "2"}
    started = time.monotonic()
    result = images["trainer-minimal"].run(env, timeout=60)
    assert result.returncode == 1 and time.monotonic() - started < 20
    assert f"cannot reach the tracking server at {uri} within 2s" in result.stderr


def test_trainer_with_malformed_parameters(mlflow_stack: Stack, images: dict[str, Image]) -> None:
    env = mlflow_stack.trainer_env("x", MLPLATFORM_PARAMETERS='{"alpha": 0.5}')
    result = images["trainer-minimal"].run(env, timeout=60)
    assert result.returncode == 1
    assert "MLPLATFORM_PARAMETERS must be a JSON object of strings" in result.stderr
