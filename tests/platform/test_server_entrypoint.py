"""The MLflow server image's entrypoint against real stores: concurrent migrations on the stack's
PostgreSQL take turns under the database lock, and Azure Blob Storage (Azurite) serves as artifact store."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg2
import pytest
import requests

from kube import eventually
from mlplatform.local.config import StateLayout, default_cache_dir
from mlplatform.local.stack import postgres, tracking
from operator_process import free_port
from server_image import load_entrypoint

if TYPE_CHECKING:
    from conftest import Image
    from stack import Stack

pytestmark = pytest.mark.platform
AZURITE_VERSION = "3.37.0"
# Azurite's one account and its published key (Azurite's README): not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
WRONG_KEY = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="


@pytest.fixture
def server(images: dict[str, Image]) -> Image:
    return images["mlflow-server"]


def superuser_connection(stack: Stack, database: str = "postgres") -> Any:
    """The stack's PostgreSQL as its superuser, over the socket only root may use (trust)."""
    connection = psycopg2.connect(
        host=str(StateLayout(stack.config.state_dir).postgres_socket),
        port=stack.endpoints.postgres_port,
        user=postgres.SUPERUSER,
        dbname=database,
    )
    connection.autocommit = True
    return connection


@pytest.fixture
def fresh_database(mlflow_stack: Stack) -> Iterator[str]:
    """An empty database owned by the MLflow role, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:8]}"
    admin = superuser_connection(mlflow_stack)
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name} OWNER {postgres.DATABASE_USER}")
    try:
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def database_env(stack: Stack, database: str) -> dict[str, str]:
    """The database as the chart passes an external one: a URI without password, the password apart."""
    where = f"{stack.endpoints.postgres_host}:{stack.endpoints.postgres_port}"
    return {
        "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://{stack.endpoints.database_user}@{where}/{database}",
        "MLPLATFORM_DB_PASSWORD": stack.credentials.postgres_password,
    }


def schema_revision(stack: Stack, database: str) -> str:
    with superuser_connection(stack, database) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT version_num FROM alembic_version")
        (revision,) = cursor.fetchone()
    return str(revision)


def head_revision(server: Image) -> str:
    code = "from mlflow.store.db.utils import _get_latest_schema_revision as h; print(h())"
    return server.python("-c", code).strip()


def waiting_for_advisory_lock(stack: Stack, database: str) -> int:
    query = (
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = %s"
    )
    with superuser_connection(stack) as connection, connection.cursor() as cursor:
        cursor.execute(query, (database,))
        (count,) = cursor.fetchone()
    return int(count)


def start(server: Image, env: dict[str, str], argv: list[str], log: Path) -> subprocess.Popen[str]:
    """The entrypoint with `argv`, in its own session, its output in `log`."""
    with log.open("w") as output:
        return subprocess.Popen(
            server.command(argv),
            env=server.environ(env),
            cwd=server.environment.context,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


def test_concurrent_upgrades_take_turns_and_both_succeed(
    mlflow_stack: Stack,
    server: Image,
    fresh_database: str,
    tmp_path: Path,
    stopper: list[subprocess.Popen[str]],
) -> None:
    """Two `db-upgrade`s (a migration Job and a server pod) start while the lock is held: both wait,
    then run one after the other on the new database."""
    env = database_env(mlflow_stack, fresh_database)
    key = load_entrypoint().POSTGRES_UPGRADE_LOCK_KEY
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    with superuser_connection(mlflow_stack, fresh_database) as holder, holder.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", (key,))
        upgrades = [start(server, env, ["db-upgrade"], log) for log in logs]
        stopper.extend(upgrades)
        eventually(
            lambda: waiting_for_advisory_lock(mlflow_stack, fresh_database) == 2,
            timeout=120,
            what="both upgrades wait for the lock",
        )
        cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
    for upgrade, log in zip(upgrades, logs, strict=True):
        assert upgrade.wait(timeout=300) == 0, log.read_text()
        output = log.read_text()
        assert "waiting up to 600s for another schema upgrade" in output
        assert "database schema is up to date" in output
        assert mlflow_stack.credentials.postgres_password not in output
        assert "postgresql+psycopg2://mlflow:***@" in output
    assert schema_revision(mlflow_stack, fresh_database) == head_revision(server)


def test_a_server_initialises_an_empty_database_and_leaves_an_existing_one(
    mlflow_stack: Stack,
    server: Image,
    fresh_database: str,
    tmp_path: Path,
    port: int,
    stopper: list[subprocess.Popen[str]],
) -> None:
    """MLPLATFORM_DB_UPGRADE=if-empty, as the chart runs the server next to its migration Job."""
    env = {**stack_server_env(mlflow_stack, server, port), **database_env(mlflow_stack, fresh_database)}
    env["MLPLATFORM_DB_UPGRADE"] = "if-empty"
    for run, expected in enumerate(
        ("upgrading the schema", "its schema upgrades are left to the db-upgrade Job")
    ):
        log = tmp_path / f"server-{run}.log"
        serving = start(server, env, ["server"], log)
        stopper.append(serving)
        wait_until_healthy(serving, port, log)
        assert expected in log.read_text()
        stop(serving)
    assert schema_revision(mlflow_stack, fresh_database) == head_revision(server)


# --- Azure Blob Storage --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def azurite_program() -> Path:
    """Azurite's blob service, installed once with npm into the cache (outside the repository)."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("Azurite needs npm (Node.js), which is not installed")
    folder = default_cache_dir() / "azurite" / AZURITE_VERSION
    program = folder / "node_modules/.bin/azurite-blob"
    if not program.exists():
        staging = folder.with_name(f"{AZURITE_VERSION}.{os.getpid()}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run(
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(staging),
                f"azurite@{AZURITE_VERSION}",
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        staging.rename(folder)  # whole or not at all, should the install be interrupted
    return program


@pytest.fixture
def azurite(azurite_program: Path, tmp_path: Path, stopper: list[subprocess.Popen[str]]) -> Iterator[str]:
    """A fresh Azurite blob service on loopback; yields its blob endpoint."""
    blob_port = free_port()  # a port of its own: the test's `port` is the server's
    proc = subprocess.Popen(
        [
            str(azurite_program),
            "--blobHost=127.0.0.1",
            f"--blobPort={blob_port}",
            f"--location={tmp_path / 'azurite'}",
            "--silent",
            "--skipApiVersionCheck",  # the SDK may speak a newer API version than this Azurite knows
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    stopper.append(proc)
    endpoint = f"http://127.0.0.1:{blob_port}/{AZURITE_ACCOUNT}"

    def answers() -> bool:
        try:
            requests.get(endpoint, timeout=2)
            return True
        except requests.ConnectionError:
            return False

    eventually(answers, timeout=60, what="Azurite answers")
    yield endpoint


def azure_env(endpoint: str, container: str, key: str = AZURITE_KEY) -> dict[str, str]:
    """MLflow's form of the destination, and a connection string that points at Azurite."""
    connection_string = ";".join(
        [
            "DefaultEndpointsProtocol=http",
            f"AccountName={AZURITE_ACCOUNT}",
            f"AccountKey={key}",
            f"BlobEndpoint={endpoint}",
        ]
    )
    return {
        "MLFLOW_ARTIFACTS_DESTINATION": f"wasbs://{container}@{AZURITE_ACCOUNT}.blob.core.windows.net/mlflow",
        "AZURE_STORAGE_CONNECTION_STRING": connection_string,
        "MLPLATFORM_PREFLIGHT_TIMEOUT": "3",
    }


def stack_server_env(stack: Stack, server: Image, port: int) -> dict[str, str]:
    """The local stack's own server configuration, on a spare port."""
    layout = StateLayout(stack.config.state_dir)
    env = tracking.server_env(server.environment, server.venv, stack.config, layout, stack.credentials)
    del env["MLPLATFORM_DB_UPGRADE"], env["MLPLATFORM_CREATE_BUCKET"]
    return {
        **env,
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_SERVER_ALLOWED_HOSTS": f"127.0.0.1:{port}",
    }


def wait_until_healthy(proc: subprocess.Popen[str], port: int, log: Path) -> None:
    def healthy() -> bool:
        assert proc.poll() is None, f"the server exited:\n{log.read_text()}"
        try:
            return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    eventually(healthy, timeout=180, what="the server answers /health", interval=1)


def stop(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


def test_create_bucket_creates_a_missing_azure_container(
    mlflow_stack: Stack, server: Image, azurite: str, port: int
) -> None:
    env = {**stack_server_env(mlflow_stack, server, port), **azure_env(azurite, "artifacts")}
    where = f"Azure container 'artifacts' of storage account '{AZURITE_ACCOUNT}'"
    missing = server.run(env, ["preflight"], timeout=60)
    assert missing.returncode == 1 and f"{where} does not exist" in missing.stderr
    created = server.run(env, ["create-bucket"], timeout=60)
    assert created.returncode == 0, created.stderr
    assert f"created {where}" in created.stderr
    checked = server.run(env, ["preflight"], timeout=60)
    assert checked.returncode == 0 and f"{where} is reachable" in checked.stderr


def test_a_wrong_azure_key_fails_at_once(mlflow_stack: Stack, server: Image, azurite: str, port: int) -> None:
    env = {**stack_server_env(mlflow_stack, server, port), **azure_env(azurite, "artifacts", WRONG_KEY)}
    started = time.monotonic()
    result = server.run(env, ["preflight"], timeout=60)
    assert result.returncode == 1 and time.monotonic() - started < 20
    assert (
        "access to Azure container 'artifacts'" in result.stderr
        and "was denied (403 AuthorizationFailure)" in result.stderr
    )


def test_an_unreachable_azure_endpoint_is_retried_then_reported(
    mlflow_stack: Stack, server: Image, port: int
) -> None:
    nowhere = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"  # a free port: nothing listens
    env = {**stack_server_env(mlflow_stack, server, port), **azure_env(nowhere, "artifacts")}
    result = server.run(env, ["preflight"], timeout=60)
    assert result.returncode == 1
    assert f"cannot reach Azure container 'artifacts' of storage account '{AZURITE_ACCOUNT}' within 3s" in (
        result.stderr
    )


def test_the_server_waits_for_its_container_then_stores_artifacts_in_it(
    mlflow_stack: Stack,
    server: Image,
    azurite: str,
    tmp_path: Path,
    port: int,
    stopper: list[subprocess.Popen[str]],
) -> None:
    """MLPLATFORM_BUCKET_WAIT: the server starts before the chart's bucket Job has created the container."""
    env = {**stack_server_env(mlflow_stack, server, port), **azure_env(azurite, "waited")}
    env["MLPLATFORM_BUCKET_WAIT"] = "120"
    log = tmp_path / "server.log"
    serving = start(server, env, ["server"], log)
    stopper.append(serving)
    eventually(lambda: "waiting up to 120s for it to be created" in log.read_text(), timeout=60, what="waits")
    assert server.run(env, ["create-bucket"], timeout=60).returncode == 0
    wait_until_healthy(serving, port, log)
    # The server proxies artifacts (--serve-artifacts): the file lands in the container, under /mlflow.
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow-artifacts/artifacts/check/hello.txt"
    assert requests.put(url, data=b"hello", timeout=30).status_code == 200
    assert requests.get(url, timeout=30).content == b"hello"
    code = "import os; from azure.storage.blob import BlobServiceClient as S; print([b.name for b in "
    code += "S.from_connection_string(os.environ['AZURE_STORAGE_CONNECTION_STRING']).get_container_client"
    code += "('waited').list_blobs()])"
    assert server.python("-c", code, env=env).strip() == "['mlflow/check/hello.txt']"


def test_a_container_that_does_not_appear_fails_after_the_wait(
    mlflow_stack: Stack, server: Image, azurite: str, port: int
) -> None:
    env = {**stack_server_env(mlflow_stack, server, port), **azure_env(azurite, "never")}
    env["MLPLATFORM_BUCKET_WAIT"] = "3"
    result = server.run(env, ["server"], timeout=60)
    assert result.returncode == 1
    assert "does not exist after 3s (MLPLATFORM_BUCKET_WAIT)" in result.stderr
