"""The MLflow tracking server of the local stack: the server image's own entrypoint, in its environment.

It runs exactly what the image runs (images/mlflow-server/entrypoint.py, configured by environment as
the chart configures the pod), with two local conveniences the chart does with Jobs instead: it creates
the bucket and runs the database migrations before the server starts.
"""

from __future__ import annotations

from pathlib import Path

from mlplatform.local.config import PLATFORM_NAMESPACE, LocalConfig, StateLayout
from mlplatform.local.errors import LocalError
from mlplatform.local.images import (
    ImageEnvironment,
    environment_dir,
    host_command,
    load_image_map,
    resolve_image,
)
from mlplatform.local.processes import Check, ProcessSpec, http_check
from mlplatform.local.stack import minio, postgres
from mlplatform.local.stack.credentials import StackCredentials, pgpass_file

SERVICE = "mlflow-server"
SERVER_IMAGE = "mlplatform/mlflow-server"
WORKERS = 1  # two cores here; the chart sets more
IN_CLUSTER_NAME = "mlflow"  # the Service pods reach the server by (see node/part.py)
IN_CLUSTER_PORT = 5000


def tracking_uri(config: LocalConfig) -> str:
    return f"http://{config.bind_address}:{config.ports.mlflow}"


def server_image() -> ImageEnvironment:
    image = resolve_image(SERVER_IMAGE, load_image_map())
    if image is None:
        raise LocalError(f"the image map has no {SERVER_IMAGE}; add it to local-images.yaml")
    return image


def in_cluster_hosts(config: LocalConfig) -> list[str]:
    """The names pods use for the server's Service: short, namespaced, and fully qualified."""
    service = f"{IN_CLUSTER_NAME}.{PLATFORM_NAMESPACE}"
    return [IN_CLUSTER_NAME, service, f"{service}.svc", f"{service}.svc.{config.network.cluster_domain}"]


def in_cluster_uri(config: LocalConfig) -> str:
    return f"http://{in_cluster_hosts(config)[-1]}:{IN_CLUSTER_PORT}"


def allowed_hosts(config: LocalConfig) -> str:
    """Host headers the server accepts (with and without the port): its own address and loopback, and,
    with a node, the names pods reach it by. Anything else is refused (DNS-rebinding protection)."""
    port = config.ports.mlflow
    hosts = [
        f"{host}{suffix}"
        for host in (config.bind_address, "127.0.0.1", "localhost")
        for suffix in ("", f":{port}")
    ]
    if config.node:
        hosts += [
            f"{host}{suffix}" for host in in_cluster_hosts(config) for suffix in ("", f":{IN_CLUSTER_PORT}")
        ]
    return ",".join(dict.fromkeys(hosts))


WEBHOOK_CACHE_SECONDS = 2


def server_env(
    image: ImageEnvironment,
    venv: Path,
    config: LocalConfig,
    layout: StateLayout,
    credentials: StackCredentials,
) -> dict[str, str]:
    """The server's whole configuration; the database password stays in PGPASSFILE."""
    return {
        **image.env,
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "VIRTUAL_ENV": str(venv),
        "PGHOST": config.bind_address,
        "PGPORT": str(config.ports.postgres),
        "PGUSER": postgres.DATABASE_USER,
        "PGDATABASE": postgres.DATABASE,
        "PGPASSFILE": str(pgpass_file(layout)),
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{minio.BUCKET}",
        "MLFLOW_S3_ENDPOINT_URL": minio.endpoint(config),
        "AWS_ACCESS_KEY_ID": credentials.minio_user,
        "AWS_SECRET_ACCESS_KEY": credentials.minio_password,
        "AWS_DEFAULT_REGION": minio.REGION,
        "MLFLOW_HOST": config.bind_address,
        "MLFLOW_PORT": str(config.ports.mlflow),
        "MLFLOW_WORKERS": str(WORKERS),
        "MLFLOW_SERVER_ALLOWED_HOSTS": allowed_hosts(config),
        "MLPLATFORM_DB_UPGRADE": "true",
        "MLPLATFORM_CREATE_BUCKET": "true",
        # Registry webhooks to an operator on this machine or in the cluster: plain HTTP to private
        # addresses, one encryption key for their secrets, and a short cache of the webhook list so a
        # webhook the operator registers is used within seconds (MLflow's default is 60 s).
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": credentials.webhook_encryption_key,
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_CACHE_TTL": str(WEBHOOK_CACHE_SECONDS),
    }


def process_spec(
    image: ImageEnvironment,
    cache_dir: Path,
    config: LocalConfig,
    layout: StateLayout,
    credentials: StackCredentials,
) -> ProcessSpec:
    venv = environment_dir(image, cache_dir)
    return ProcessSpec(
        SERVICE,
        host_command(image, venv),
        server_env(image, venv, config, layout, credentials),
        cwd=image.context,
    )


def readiness(config: LocalConfig) -> Check:
    """Ready when GET /health answers OK."""
    return http_check(
        f"{tracking_uri(config)}/health",
        verdict=lambda body: None if body.strip() == "OK" else f"answered {body[:80]!r}",
    )
