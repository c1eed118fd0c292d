"""Entrypoint of the MLflow tracking server image: a fast preflight, then MLflow itself.

Commands (the image's CMD is `server`):
  server         check PostgreSQL and the artifact bucket, then exec `mlflow server --serve-artifacts`
  db-upgrade     check PostgreSQL, then run `mlflow db upgrade` (the chart runs it as a hook Job)
  create-bucket  create the artifact bucket if it is missing (the chart's bucket Job)
  preflight      the checks alone

Configuration, all from the environment (see README.md):
  MLFLOW_BACKEND_STORE_URI       postgresql+psycopg2://user@host:port/db, or else it is built from
                                 PGHOST, PGPORT, PGUSER, PGDATABASE; the password comes from PGPASSWORD
                                 or PGPASSFILE (read by libpq), so it is never on a command line
  MLFLOW_ARTIFACTS_DESTINATION   s3://bucket[/prefix]
  MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION
  MLFLOW_HOST, MLFLOW_PORT, MLFLOW_WORKERS, MLFLOW_SERVER_ALLOWED_HOSTS   read by `mlflow server` itself
  MLPLATFORM_DB_UPGRADE=true     `server` runs the migrations first
  MLPLATFORM_CREATE_BUCKET=true  `server` creates a missing bucket instead of failing
  MLPLATFORM_PREFLIGHT_TIMEOUT   seconds to wait for PostgreSQL and S3 to accept connections (default 15)

A failed check exits 1 at once with one line naming the cause (and writes it to the Kubernetes
termination log): MLflow itself would retry a wrong password or a missing bucket for minutes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import boto3
import psycopg2
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError
from sqlalchemy.engine import URL, make_url

DRIVER = "postgresql+psycopg2"
TERMINATION_LOG = Path("/dev/termination-log")
# libpq and S3 failures worth waiting out: the service is starting or not reachable yet.
TRANSIENT_DATABASE_ERRORS = (
    "connection refused",
    "timeout expired",
    "could not translate host name",
    "the database system is starting up",
    "the database system is shutting down",
    "no route to host",
)
T = TypeVar("T")


class PreflightError(Exception):
    """A configuration or dependency problem, reported as one line."""


class TransientError(Exception):
    """A failure that may go away if we wait a little."""


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def preflight_timeout() -> float:
    return float(os.environ.get("MLPLATFORM_PREFLIGHT_TIMEOUT", "15"))


def retry(attempt: Callable[[], T], timeout: float) -> T:
    """Call `attempt` until it stops raising TransientError or `timeout` seconds pass; then re-raise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return attempt()
        except TransientError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1)


# --- PostgreSQL ----------------------------------------------------------------------------------------


def backend_store_uri() -> str:
    """The backend store URI: MLFLOW_BACKEND_STORE_URI, or one built from libpq's PG* variables."""
    if explicit := os.environ.get("MLFLOW_BACKEND_STORE_URI"):
        return explicit
    host = os.environ.get("PGHOST")
    if not host:
        raise PreflightError(
            "no database configured: set MLFLOW_BACKEND_STORE_URI, or PGHOST (with PGPORT, "
            "PGUSER, PGDATABASE and PGPASSWORD or PGPASSFILE)"
        )
    url = URL.create(
        DRIVER,
        username=os.environ.get("PGUSER", "mlflow"),
        host=host,
        port=int(os.environ.get("PGPORT", "5432")),
        database=os.environ.get("PGDATABASE", "mlflow"),
    )
    return url.render_as_string(hide_password=False)


@dataclass(frozen=True)
class Database:
    uri: str

    @property
    def url(self) -> URL:
        return make_url(self.uri)

    @property
    def display(self) -> str:
        """The URI without its password, for logs."""
        return str(self.url.render_as_string(hide_password=True))

    @property
    def where(self) -> str:
        url = self.url
        host = url.host or os.environ.get("PGHOST", "localhost")
        port = url.port or os.environ.get("PGPORT", "5432")
        user = url.username or os.environ.get("PGUSER", "?")
        database = url.database or os.environ.get("PGDATABASE", "?")
        return f"PostgreSQL at {host}:{port} (user {user}, database {database})"


def check_database(database: Database, timeout: float) -> None:
    """Connect once with a short timeout; fail at once on a refusal that waiting will not fix."""
    url = database.url
    if url.drivername != DRIVER:
        raise PreflightError(
            f"backend store URI {database.display} uses driver {url.drivername!r}; this image talks to "
            f"PostgreSQL through psycopg2: write it as {DRIVER}://… (a bare postgresql:// selects psycopg 3)"
        )
    params = {k: v for k, v in url.translate_connect_args(username="user", database="dbname").items() if v}

    def attempt() -> None:
        try:
            psycopg2.connect(connect_timeout=3, **params).close()
        except psycopg2.OperationalError as exc:
            reason = " ".join(str(exc).split())
            if any(marker in reason.lower() for marker in TRANSIENT_DATABASE_ERRORS):
                raise TransientError(reason) from exc
            hint = " (set PGPASSWORD or PGPASSFILE)" if "no password supplied" in reason else ""
            raise PreflightError(f"cannot use {database.where}: {reason}{hint}") from exc

    try:
        retry(attempt, timeout)
    except TransientError as exc:
        raise PreflightError(f"cannot reach {database.where} within {timeout:.0f}s: {exc}") from exc


def upgrade_database(database: Database) -> None:
    """`mlflow db upgrade`, invoked in-process so the URI never shows in a process list."""
    from mlflow.db import upgrade  # noqa: PLC0415 - importing mlflow takes seconds; only this command needs it

    log(f"upgrading the schema of {database.display}")
    upgrade.main([database.uri], prog_name="mlflow db upgrade", standalone_mode=False)
    log("database schema is up to date")


# --- S3 ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactStore:
    destination: str
    endpoint: str | None

    @property
    def bucket(self) -> str:
        return urlparse(self.destination).netloc

    @property
    def where(self) -> str:
        return f"bucket {self.bucket!r} at {self.endpoint or 'the AWS S3 endpoint'}"


def artifact_store() -> ArtifactStore:
    destination = os.environ.get("MLFLOW_ARTIFACTS_DESTINATION", "")
    if urlparse(destination).scheme != "s3" or not urlparse(destination).netloc:
        raise PreflightError(
            f"MLFLOW_ARTIFACTS_DESTINATION must be s3://<bucket>[/prefix], not {destination!r}"
        )
    return ArtifactStore(destination, os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)


def s3_client(store: ArtifactStore) -> Any:
    config = Config(
        connect_timeout=3,
        read_timeout=10,
        retries={"max_attempts": 1},
        s3={"addressing_style": os.environ.get("MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE", "auto")},
    )
    return boto3.client("s3", endpoint_url=store.endpoint, config=config)


def bucket_exists(store: ArtifactStore, timeout: float) -> bool:
    """Whether the bucket exists; fails with the reason if the endpoint or the credentials are wrong."""
    client = s3_client(store)

    def attempt() -> bool:
        try:
            client.head_bucket(Bucket=store.bucket)
            return True
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket", "NotFound"):
                return False
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise PreflightError(
                    f"access to {store.where} was denied ({code}): check AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY"
                ) from exc
            raise PreflightError(f"cannot use {store.where}: {exc}") from exc
        except NoCredentialsError as exc:
            raise PreflightError(
                f"no S3 credentials for {store.where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ) from exc
        except EndpointConnectionError as exc:
            raise TransientError(str(exc)) from exc
        except BotoCoreError as exc:  # timeouts and protocol errors: the endpoint is not (yet) an S3
            raise TransientError(str(exc)) from exc

    try:
        return retry(attempt, timeout)
    except TransientError as exc:
        raise PreflightError(
            f"cannot reach the S3 endpoint for {store.where} within {timeout:.0f}s: {exc}"
        ) from exc


def ensure_bucket(store: ArtifactStore, timeout: float, create: bool) -> None:
    if bucket_exists(store, timeout):
        return
    if not create:
        raise PreflightError(
            f"{store.where} does not exist: create it (the chart's bucket Job does), "
            "or set MLPLATFORM_CREATE_BUCKET=true"
        )
    s3_client(store).create_bucket(Bucket=store.bucket)
    log(f"created {store.where}")


# --- commands ------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"mlflow-server: {message}", file=sys.stderr, flush=True)


def checked_database() -> Database:
    db = Database(backend_store_uri())
    check_database(db, preflight_timeout())
    log(f"{db.where} accepts connections")
    return db


def checked_artifact_store() -> ArtifactStore:
    store = artifact_store()
    ensure_bucket(store, preflight_timeout(), create=env_flag("MLPLATFORM_CREATE_BUCKET"))
    log(f"{store.where} is reachable")
    return store


def preflight() -> None:
    checked_database()
    checked_artifact_store()


def serve() -> None:
    db = checked_database()
    store = checked_artifact_store()
    if env_flag("MLPLATFORM_DB_UPGRADE"):
        upgrade_database(db)
    # mlflow server reads the store URI, destination, host, port, workers and allowed hosts from the
    # environment: nothing secret reaches its argv.
    os.environ["MLFLOW_BACKEND_STORE_URI"] = db.uri
    log(f"starting mlflow server: backend {db.display}, artifacts {store.destination} (proxied)")
    argv = [sys.executable, "-m", "mlflow", "server", "--serve-artifacts"]
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with MLflow, argv built here


def db_upgrade() -> None:
    upgrade_database(checked_database())


def create_bucket() -> None:
    store = artifact_store()
    ensure_bucket(store, preflight_timeout(), create=True)
    log(f"{store.where} is ready")


COMMANDS: dict[str, Callable[[], None]] = {
    "server": serve,
    "db-upgrade": db_upgrade,
    "create-bucket": create_bucket,
    "preflight": preflight,
}


def fail(message: str) -> None:
    log(f"error: {message}")
    if TERMINATION_LOG.is_file():  # Kubernetes mounts it: the reason then shows in the pod's status
        TERMINATION_LOG.write_text(message + "\n")
    sys.exit(1)


def main(argv: list[str]) -> None:
    command = argv[0] if argv else "server"
    if command not in COMMANDS:
        fail(f"unknown command {command!r}; use one of: {', '.join(COMMANDS)}")
    try:
        COMMANDS[command]()
    except PreflightError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main(sys.argv[1:])
