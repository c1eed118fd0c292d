"""The MLflow stack's pure builders: where each service listens, and that secrets stay off command lines."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from mlplatform.local import cluster
from mlplatform.local.config import LocalConfig, Ports, StateLayout
from mlplatform.local.controlplane import ControlPlane
from mlplatform.local.images import environment_dir
from mlplatform.local.stack import MlflowStack, endpoints, minio, postgres, tracking
from mlplatform.local.stack.credentials import (
    StackCredentials,
    ensure_credentials,
    pgpass_file,
    pgpass_line,
    scram_verifier,
)

BIN = Path("/opt/bin")


def config(tmp_path: Path, *, node: bool = False, offset: int = 0) -> LocalConfig:
    return LocalConfig(
        state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", node=node, ports=Ports().shifted(offset)
    )


def every_argv(cfg: LocalConfig, credentials: StackCredentials) -> list[list[str]]:
    layout = StateLayout(cfg.state_dir)
    image = tracking.server_image()
    account = postgres.Account("postgres", 101, 104)
    return [
        [*postgres.run_as(account), *postgres.server_argv(BIN, cfg, layout)],
        postgres.initdb_argv(BIN, layout.postgres_data),
        postgres.single_user_argv(BIN, layout.postgres_data),
        list(minio.process_spec(BIN / "minio", cfg, layout, credentials).argv),
        list(tracking.process_spec(image, cfg.cache_dir, cfg, layout, credentials).argv),
    ]


@pytest.mark.parametrize("node", [False, True])
def test_no_secret_is_ever_on_a_command_line(tmp_path: Path, node: bool) -> None:
    cfg = config(tmp_path, node=node)
    credentials = StackCredentials.generate()
    verifier = scram_verifier(credentials.postgres_password)
    for argv in every_argv(cfg, credentials):
        for arg in argv:
            for secret in [*credentials.values(), credentials.minio_user, verifier]:
                assert secret not in arg, f"a secret is on the command line {argv}"


def test_secrets_reach_only_the_processes_that_need_them(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    layout = StateLayout(cfg.state_dir)
    credentials = StackCredentials.generate()
    minio_env = minio.process_spec(BIN / "minio", cfg, layout, credentials).env
    assert (minio_env["MINIO_ROOT_USER"], minio_env["MINIO_ROOT_PASSWORD"]) == (
        credentials.minio_user,
        credentials.minio_password,
    )
    server_env = tracking.process_spec(tracking.server_image(), cfg.cache_dir, cfg, layout, credentials).env
    assert credentials.postgres_password not in server_env.values()  # libpq reads it from PGPASSFILE
    assert server_env["PGPASSFILE"] == str(pgpass_file(layout))
    assert server_env["AWS_SECRET_ACCESS_KEY"] == credentials.minio_password
    assert not postgres.process_spec(cfg, layout).env


@pytest.mark.parametrize(("node", "address"), [(False, "127.0.0.1"), (True, "10.244.0.1")])
def test_every_service_listens_on_the_bind_address(tmp_path: Path, node: bool, address: str) -> None:
    cfg = config(tmp_path, node=node, offset=1000)
    layout = StateLayout(cfg.state_dir)
    credentials = StackCredentials.generate()
    pg = postgres.server_argv(BIN, cfg, layout)
    assert f"listen_addresses={address}" in pg and str(cfg.ports.postgres) in pg
    assert f"unix_socket_directories={layout.postgres_socket}" in pg
    mo = minio.server_argv(BIN / "minio", cfg, layout)
    assert f"--address={address}:{cfg.ports.minio}" in mo
    assert f"--console-address={address}:{cfg.ports.minio_console}" in mo
    env = tracking.process_spec(tracking.server_image(), cfg.cache_dir, cfg, layout, credentials).env
    assert (env["MLFLOW_HOST"], env["MLFLOW_PORT"], env["PGHOST"]) == (
        address,
        str(cfg.ports.mlflow),
        address,
    )
    assert env["MLFLOW_S3_ENDPOINT_URL"] == f"http://{address}:{cfg.ports.minio}"
    assert f"{address}:{cfg.ports.mlflow}" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    listens = {port for service in MlflowStack().stages(cfg) for s in service for _, port in s.listens(cfg)}
    assert listens == {cfg.ports.postgres, cfg.ports.minio, cfg.ports.minio_console, cfg.ports.mlflow}
    assert {a for service in MlflowStack().stages(cfg) for s in service for a, _ in s.listens(cfg)} == {
        address
    }
    assert endpoints(cfg).tracking_uri == f"http://{address}:{cfg.ports.mlflow}"


def test_the_tracking_server_runs_the_server_image_from_its_environment(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    image = tracking.server_image()
    spec = tracking.process_spec(
        image, cfg.cache_dir, cfg, StateLayout(cfg.state_dir), StackCredentials.generate()
    )
    venv = environment_dir(image, cfg.cache_dir)
    assert list(spec.argv) == [str(venv / "bin/python"), str(image.context / "entrypoint.py"), "server"]
    assert spec.env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://mlflow"
    assert spec.env["PGUSER"] == postgres.DATABASE_USER and spec.env["PGDATABASE"] == postgres.DATABASE


def test_pg_hba_lets_pods_in_only_with_a_node(tmp_path: Path) -> None:
    assert "10.244.0.0/16" not in postgres.hba_conf(config(tmp_path))
    with_node = postgres.hba_conf(config(tmp_path, node=True))
    assert re.search(r"^host\s+all\s+all\s+10\.244\.0\.0/16\s+scram-sha-256$", with_node, re.MULTILINE)
    assert re.search(r"^local\s+all\s+all\s+trust$", with_node, re.MULTILINE)


def test_postgres_drops_root_for_an_account_with_one_read_only_capability() -> None:
    argv = postgres.run_as(postgres.Account("postgres", 101, 104))
    assert argv[:4] == ["setpriv", "--reuid=101", "--regid=104", "--clear-groups"]
    assert "--ambient-caps=-all,+dac_read_search" in argv and "--bounding-set=-all,+dac_read_search" in argv
    assert postgres.run_as(None) == []


def test_the_database_password_reaches_postgres_only_as_a_verifier() -> None:
    password = "correct horse"
    verifier = scram_verifier(password, salt=b"0123456789abcdef")
    assert verifier == scram_verifier(password, salt=b"0123456789abcdef")
    assert re.fullmatch(r"SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+", verifier)
    assert scram_verifier(password) != scram_verifier(password)  # a fresh salt each time
    sql = postgres.bootstrap_sql(verifier)
    assert verifier in sql and password not in sql


def test_credentials_are_generated_once_and_kept_private(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path)
    first = ensure_credentials(layout, "mlflow")
    assert ensure_credentials(layout, "mlflow") == first
    assert stat.S_IMODE(layout.secrets.stat().st_mode) == 0o700
    for path in layout.secrets.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert pgpass_file(layout).read_text() == f"*:*:*:mlflow:{first.postgres_password}\n"
    assert pgpass_line("u", r"a:b\c") == "*:*:*:u:a\\:b\\\\c\n"
    assert StackCredentials.generate() != first


def test_the_stack_comes_right_after_the_control_plane_and_exports_its_uri(tmp_path: Path) -> None:
    for node in (False, True):
        parts = cluster.platform_parts(config(tmp_path, node=node))
        kinds = [type(part) for part in parts]
        assert kinds[kinds.index(ControlPlane) + 1] is MlflowStack
    lines = cluster.env_lines(config(tmp_path, offset=1000))
    assert "export MLFLOW_TRACKING_URI=http://127.0.0.1:16000" in lines
    no_stack = LocalConfig(state_dir=tmp_path, cache_dir=tmp_path, node=False, stack=False)
    assert not any("MLFLOW_TRACKING_URI" in line for line in cluster.env_lines(no_stack))
    assert MlflowStack not in [type(p) for p in cluster.platform_parts(no_stack)]
