"""The MLflow stack as a part of the local platform: PostgreSQL and MinIO, then the tracking server."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlplatform.local.config import LocalConfig, StateLayout
from mlplatform.local.gobuild import ensure_binaries
from mlplatform.local.images import ensure_environment
from mlplatform.local.platform import Context, Log, Service, services_of
from mlplatform.local.processes import ProcessTable, wait_for
from mlplatform.local.stack import minio, postgres, tracking
from mlplatform.local.stack.credentials import (
    credentials_file,
    ensure_credentials,
    load_credentials,
    pgpass_file,
    scram_verifier,
)


@dataclass(frozen=True)
class StackEndpoints:
    """Where the stack's services listen and where its credentials are kept (never the secrets)."""

    tracking_uri: str
    s3_endpoint: str
    bucket: str
    postgres_host: str
    postgres_port: int
    database: str
    database_user: str
    credentials_file: Path  # JSON: postgres_password, minio_user, minio_password (mode 0600)
    pgpass_file: Path  # libpq password file for the database user (mode 0600)
    minio_console: str


def endpoints(config: LocalConfig) -> StackEndpoints:
    layout = StateLayout(config.state_dir)
    return StackEndpoints(
        tracking_uri=tracking.tracking_uri(config),
        s3_endpoint=minio.endpoint(config),
        bucket=minio.BUCKET,
        postgres_host=config.bind_address,
        postgres_port=config.ports.postgres,
        database=postgres.DATABASE,
        database_user=postgres.DATABASE_USER,
        credentials_file=credentials_file(layout),
        pgpass_file=pgpass_file(layout),
        minio_console=minio.console_url(config),
    )


class MlflowStack:
    """PostgreSQL, MinIO and the MLflow tracking server, each listening on the cluster's bind address."""

    name = "MLflow stack"

    def binaries(self, config: LocalConfig) -> Sequence[str]:
        return [minio.BINARY]

    def stages(self, config: LocalConfig) -> Sequence[Sequence[Service]]:
        ports = config.ports
        return [
            [
                Service(
                    postgres.SERVICE,
                    lambda ctx: postgres.process_spec(ctx.config, ctx.layout),
                    lambda ctx: postgres.readiness(ctx.config),
                    lambda c: [(c.bind_address, ports.postgres)],
                    timeout=60,
                ),
                Service(
                    minio.SERVICE,
                    lambda ctx: minio.process_spec(
                        ctx.binaries[minio.BINARY], ctx.config, ctx.layout, load_credentials(ctx.layout)
                    ),
                    lambda ctx: minio.readiness(ctx.config),
                    lambda c: [(c.bind_address, ports.minio), (c.bind_address, ports.minio_console)],
                    timeout=60,
                ),
            ],
            [
                Service(
                    tracking.SERVICE,
                    lambda ctx: tracking.process_spec(
                        tracking.server_image(),
                        ctx.config.cache_dir,
                        ctx.config,
                        ctx.layout,
                        load_credentials(ctx.layout),
                    ),
                    lambda ctx: tracking.readiness(ctx.config),
                    lambda c: [(c.bind_address, ports.mlflow)],
                    timeout=180,  # the first start creates the schema
                ),
            ],
        ]

    def prepare(self, ctx: Context) -> None:
        credentials = ensure_credentials(ctx.layout, postgres.DATABASE_USER)
        postgres.prepare(ctx.config, ctx.layout, scram_verifier(credentials.postgres_password), ctx.log)
        minio.prepare(ctx.layout)
        ensure_environment(tracking.server_image(), ctx.config.cache_dir, ctx.log)

    def finish(self, ctx: Context) -> None:
        ctx.log(f"MLflow tracking server ready at {tracking.tracking_uri(ctx.config)}")

    def teardown(self, ctx: Context) -> None:
        """All the stack made is in the state directory (the system account stays, as Debian's does)."""


def _service(config: LocalConfig, name: str) -> Service:
    services = {service.name: service for service in services_of(MlflowStack(), config)}
    return services[name]


def stop_service(config: LocalConfig, name: str) -> bool:
    """Stop one service of a running stack (tests use it to restart PostgreSQL under the tracking server)."""
    layout = StateLayout(config.state_dir)
    return ProcessTable(layout.run, layout.logs).stop(_service(config, name).name)


def start_service(config: LocalConfig, name: str, log: Log = print) -> None:
    """Start one stopped service of the stack again and wait until it is ready."""
    layout = StateLayout(config.state_dir)
    processes = ProcessTable(layout.run, layout.logs)
    service = _service(config, name)
    ctx = Context(
        config,
        layout,
        processes,
        log,
        ensure_binaries(list(MlflowStack().binaries(config)), config.cache_dir, log),
    )
    record = processes.start(service.spec(ctx))
    wait_for(service.ready(ctx), service.timeout, name, log_file=processes.log_path(name), proc=record)
