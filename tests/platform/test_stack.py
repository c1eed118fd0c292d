"""The MLflow stack as `mlplatform local up` starts it: where it listens, who runs it, and its secrets."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest
import requests

from mlplatform.local.config import StateLayout
from mlplatform.local.platform import is_root
from mlplatform.local.processes import ProcessTable
from mlplatform.local.stack import minio, postgres, tracking
from mlplatform.versions import MLFLOW_VERSION

if TYPE_CHECKING:
    from conftest import Image
    from stack import Stack

pytestmark = pytest.mark.platform
SERVICES = (postgres.SERVICE, minio.SERVICE, tracking.SERVICE)


def processes(stack: Stack) -> ProcessTable:
    layout = StateLayout(stack.config.state_dir)
    return ProcessTable(layout.run, layout.logs)


def test_the_tracking_server_answers(mlflow_stack: Stack) -> None:
    assert requests.get(f"{mlflow_stack.tracking_uri}/health", timeout=5).text.strip() == "OK"
    assert requests.get(f"{mlflow_stack.tracking_uri}/version", timeout=5).text.strip() == MLFLOW_VERSION
    assert mlflow_stack.query("SELECT count(*) FROM alembic_version") == [(1,)]  # migrations ran
    assert mlflow_stack.endpoints.bucket in [b["Name"] for b in mlflow_stack.s3().list_buckets()["Buckets"]]


def test_every_service_listens_only_on_the_bind_address(mlflow_stack: Stack) -> None:
    config = mlflow_stack.config
    ports = {
        postgres.SERVICE: {config.ports.postgres},
        minio.SERVICE: {config.ports.minio, config.ports.minio_console},
        tracking.SERVICE: {config.ports.mlflow},
    }
    for name in SERVICES:
        leader = processes(mlflow_stack).alive(name)
        assert leader is not None, f"{name} is not running"
        family = {leader.pid, *(child.pid for child in leader.children(recursive=True))}
        listening = {
            (c.laddr.ip, c.laddr.port)
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in family
        }
        expected = {(config.bind_address, port) for port in ports[name]}
        # MinIO adds loopback listeners of its own (127.0.0.1, ::1): still local, never another interface.
        loopback = {(address, port) for address in ("127.0.0.1", "::1") for port in ports[name]}
        assert expected <= listening <= expected | loopback, name


@pytest.mark.skipif(not is_root(), reason="as another user PostgreSQL runs as that user")
def test_postgres_runs_as_an_unprivileged_account(mlflow_stack: Stack) -> None:
    leader = processes(mlflow_stack).alive(postgres.SERVICE)
    assert leader is not None
    assert leader.username() in postgres.SERVICE_ACCOUNTS
    assert leader.uids().effective != 0
    capabilities = next(line for line in Path(f"/proc/{leader.pid}/status").read_text().splitlines()
                        if line.startswith("CapEff:"))  # fmt: skip
    assert int(capabilities.split()[1], 16) == 1 << 2  # CAP_DAC_READ_SEARCH, nothing else


def test_secrets_stay_in_their_files(mlflow_stack: Stack, images: dict[str, Image], experiment: str) -> None:
    images["trainer-minimal"].train(mlflow_stack.trainer_env(experiment))  # some traffic in the logs first
    layout = StateLayout(mlflow_stack.config.state_dir)
    assert stat.S_IMODE(layout.secrets.stat().st_mode) == 0o700
    for path in layout.secrets.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    secrets = mlflow_stack.credentials.values()
    for proc in psutil.process_iter(["cmdline"]):
        command_line = " ".join(proc.info["cmdline"] or [])
        assert not any(secret in command_line for secret in secrets), f"a secret is in the argv of {proc.pid}"
    for log in layout.logs.glob("*"):
        text = log.read_text(errors="replace")
        assert not any(secret in text for secret in secrets), f"a secret is in {log}"


def test_local_env_prints_the_tracking_uri(mlflow_stack: Stack) -> None:
    cli = Path(sys.executable).parent / "mlplatform"
    result = subprocess.run(
        [str(cli), "local", "env", "--state-dir", str(mlflow_stack.config.state_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"export MLFLOW_TRACKING_URI={mlflow_stack.tracking_uri}" in result.stdout.splitlines()
