"""MinIO for the MLflow stack: the S3 store of MLflow's artifacts, built from its Go module (gobuild)."""

from __future__ import annotations

from pathlib import Path

from mlplatform.local.config import LocalConfig, StateLayout
from mlplatform.local.processes import Check, ProcessSpec, http_check
from mlplatform.local.stack.credentials import StackCredentials

SERVICE = "minio"
BINARY = "minio"  # gobuild.BINARIES
BUCKET = "mlflow"
REGION = "us-east-1"
IN_CLUSTER_NAME = "minio"  # the Service pods reach MinIO by (see node/part.py)
IN_CLUSTER_PORT = 9000


def endpoint(config: LocalConfig) -> str:
    return f"http://{config.bind_address}:{config.ports.minio}"


def console_url(config: LocalConfig) -> str:
    return f"http://{config.bind_address}:{config.ports.minio_console}"


def server_argv(binary: Path, config: LocalConfig, layout: StateLayout) -> list[str]:
    return [
        str(binary),
        "server",
        str(layout.minio / "data"),
        f"--address={config.bind_address}:{config.ports.minio}",
        f"--console-address={config.bind_address}:{config.ports.minio_console}",
        f"--certs-dir={layout.minio / 'certs'}",  # not ~/.minio
        "--anonymous",  # keep sensitive details out of its log
    ]


def server_env(credentials: StackCredentials) -> dict[str, str]:
    return {
        "MINIO_ROOT_USER": credentials.minio_user,
        "MINIO_ROOT_PASSWORD": credentials.minio_password,
        "MINIO_REGION": REGION,
        "MINIO_UPDATE": "off",  # no internet: never look for a newer release
        "MINIO_CALLHOME_ENABLE": "off",
    }


def process_spec(
    binary: Path, config: LocalConfig, layout: StateLayout, credentials: StackCredentials
) -> ProcessSpec:
    return ProcessSpec(SERVICE, server_argv(binary, config, layout), server_env(credentials))


def readiness(config: LocalConfig) -> Check:
    """Ready when MinIO's own readiness endpoint answers 200."""
    return http_check(f"{endpoint(config)}/minio/health/ready")


def prepare(layout: StateLayout) -> None:
    for path in (layout.minio / "data", layout.minio / "certs"):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
