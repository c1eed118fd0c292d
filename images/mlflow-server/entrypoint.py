"""Entrypoint of the MLflow tracking server image: a fast preflight, then MLflow itself.

Commands (the image's CMD is `server`):
  server         check the database and the artifact store, then exec `mlflow server --serve-artifacts`
  db-upgrade     check the database, then run `mlflow db upgrade` under a database lock (the chart's
                 migration hook Job)
  create-bucket  create the artifact bucket (S3) or container (Azure) if missing (the chart's bucket Job)
  preflight      the checks alone

Configuration, all from the environment (see README.md):
  MLFLOW_BACKEND_STORE_URI       postgresql+psycopg2://user@host:port/db or mysql+pymysql://user@host:port/db;
                                 or else a PostgreSQL URI built from PGHOST, PGPORT, PGUSER, PGDATABASE
  MLPLATFORM_DB_PASSWORD         the database password, put into the URI in this process only (never on a
                                 command line, never logged); PostgreSQL also reads PGPASSWORD or PGPASSFILE
  MLFLOW_ARTIFACTS_DESTINATION   s3://bucket[/prefix] or wasbs://container@account.blob.core.windows.net[/path]
  MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION   for S3
  AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCESS_KEY                            for Azure
  MLFLOW_HOST, MLFLOW_PORT, MLFLOW_WORKERS, MLFLOW_SERVER_ALLOWED_HOSTS   read by `mlflow server` itself
  MLPLATFORM_DB_UPGRADE          true: `server` runs the migrations first; if-empty: only initialises a
                                 database without MLflow tables; false (default): neither
  MLPLATFORM_DB_LOCK_TIMEOUT     seconds to wait for another migration to finish (default 600)
  MLPLATFORM_CREATE_BUCKET=true  `server` creates a missing bucket instead of failing
  MLPLATFORM_BUCKET_WAIT         seconds `server` waits for a missing bucket to appear (default 0)
  MLPLATFORM_APP_NAME            an MLflow server app (`--app-name`), e.g. basic-auth
  MLPLATFORM_PREFLIGHT_TIMEOUT   seconds to wait for the database and the store to answer (default 15)

A failed check exits 1 at once with one line naming the cause (and writes it to the Kubernetes
termination log): MLflow itself would retry a wrong password or a missing bucket for minutes.

Each store's client is imported where it is used: a command loads only what it needs, and the pure parts
(URIs, destinations, modes) can be tested with SQLAlchemy alone.
"""

from __future__ import annotations

import enum
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

POSTGRES_DRIVER = "postgresql+psycopg2"
MYSQL_DRIVER = "mysql+pymysql"
DATABASE_KINDS = {POSTGRES_DRIVER: "PostgreSQL", MYSQL_DRIVER: "MySQL"}
DEFAULT_PORTS = {POSTGRES_DRIVER: 5432, MYSQL_DRIVER: 3306}
TERMINATION_LOG = Path("/dev/termination-log")
# libpq failures worth waiting out: the server is starting or not reachable yet.
TRANSIENT_POSTGRES_ERRORS = (
    "connection refused",
    "timeout expired",
    "could not translate host name",
    "the database system is starting up",
    "the database system is shutting down",
    "no route to host",
)
# PyMySQL's error codes worth waiting out: 2003 is every socket error (refused, unknown host, timeout),
# 2006/2013 a connection lost while the server starts, 1040 too many connections, 1053 a shutdown.
TRANSIENT_MYSQL_CODES = frozenset({2003, 2006, 2013, 1040, 1053})
# libpq waits on a connection attempt as long as TCP does (minutes) unless told: a database that moved
# (its pod replaced, a Service endpoint not yet updated) must fail a request in seconds, not hang it.
# A connect_timeout in the URI, or PGCONNECT_TIMEOUT set by the user, wins.
POSTGRES_CONNECT_TIMEOUT = "10"
MYSQL_TLS_OPTIONS = ("ssl_ca", "ssl_cert", "ssl_key")  # URI query options PyMySQL takes as they are
# The migration lock. Any fixed values work; every pod must use the same. A PostgreSQL advisory lock is
# scoped to one database, a MySQL named lock to one server.
POSTGRES_UPGRADE_LOCK_KEY = 0x6D6C666C6F77  # "mlflow" in ASCII
MYSQL_UPGRADE_LOCK_NAME = "mlflow-schema-upgrade"
# MLflow's own host names for Azure Blob Storage (mlflow/store/artifact/azure_blob_artifact_repo.py).
WASBS_NETLOC = re.compile(
    r"(?P<container>[^@]+)@(?P<account>[^.]+)\.blob\.core\.(windows\.net|chinacloudapi\.cn|usgovcloudapi\.net)"
)
T = TypeVar("T")


class PreflightError(Exception):
    """A configuration or dependency problem, reported as one line."""


class TransientError(Exception):
    """A failure that may go away if we wait a little."""


def env_flag(name: str, environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def seconds_setting(name: str, default: float, environ: Mapping[str, str] = os.environ) -> float:
    """A non-negative number of seconds from the environment."""
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1
    if seconds < 0:
        raise PreflightError(f"{name} must be a number of seconds, not {value!r}")
    return seconds


def preflight_timeout() -> float:
    return seconds_setting("MLPLATFORM_PREFLIGHT_TIMEOUT", 15)


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


def log(message: str) -> None:
    print(f"mlflow-server: {message}", file=sys.stderr, flush=True)


# --- the backend store ---------------------------------------------------------------------------------


class UpgradeMode(enum.Enum):
    NEVER = "false"
    ALWAYS = "true"
    IF_EMPTY = "if-empty"


def upgrade_mode(value: str) -> UpgradeMode:
    """MLPLATFORM_DB_UPGRADE: true, if-empty, or false (also unset)."""
    word = value.strip().lower()
    if word in ("", "0", "false", "no", "off"):
        return UpgradeMode.NEVER
    if word in ("1", "true", "yes", "on"):
        return UpgradeMode.ALWAYS
    if word == UpgradeMode.IF_EMPTY.value:
        return UpgradeMode.IF_EMPTY
    raise PreflightError(f"MLPLATFORM_DB_UPGRADE must be true, if-empty or false, not {value!r}")


def backend_store_uri(environ: Mapping[str, str] = os.environ) -> str:
    """MLFLOW_BACKEND_STORE_URI, or one built from libpq's PG* variables; MLPLATFORM_DB_PASSWORD put in."""
    uri = environ.get("MLFLOW_BACKEND_STORE_URI") or postgres_uri_from_libpq(environ)
    password = environ.get("MLPLATFORM_DB_PASSWORD")
    return with_password(uri, password) if password else uri


def postgres_uri_from_libpq(environ: Mapping[str, str]) -> str:
    host = environ.get("PGHOST")
    if not host:
        raise PreflightError(
            "no database configured: set MLFLOW_BACKEND_STORE_URI, or PGHOST (with PGPORT, "
            "PGUSER, PGDATABASE and PGPASSWORD or PGPASSFILE)"
        )
    url = URL.create(
        POSTGRES_DRIVER,
        username=environ.get("PGUSER", "mlflow"),
        host=host,
        port=int(environ.get("PGPORT", "5432")),
        database=environ.get("PGDATABASE", "mlflow"),
    )
    return url.render_as_string(hide_password=False)


def parsed(uri: str) -> URL:
    """`uri` parsed as MLflow parses it (SQLAlchemy); an unparsable one is refused without being shown,
    since it may hold a password."""
    try:
        return make_url(uri)
    except ArgumentError:
        raise PreflightError(
            "the backend store URI is not a database URL: write it as "
            f"{POSTGRES_DRIVER}://user@host:5432/db or {MYSQL_DRIVER}://user@host:3306/db"
        ) from None


def with_password(uri: str, password: str) -> str:
    """`uri` with `password` as its password, quoted as SQLAlchemy unquotes it."""
    url = parsed(uri)
    if not url.username:
        raise PreflightError(
            f"MLPLATFORM_DB_PASSWORD is set but the backend store URI {hide_password(uri)} names no user"
        )
    return url.set(password=password).render_as_string(hide_password=False)


def hide_password(uri: str) -> str:
    """`uri` with its password (if any) replaced by ***, for logs and messages."""
    return parsed(uri).render_as_string(hide_password=True)


@dataclass(frozen=True)
class Database:
    uri: str  # with its password, if it has one: never log it, use `display`

    @property
    def url(self) -> URL:
        return parsed(self.uri)

    @property
    def driver(self) -> str:
        return self.url.drivername

    @property
    def kind(self) -> str:
        return DATABASE_KINDS[self.driver]

    @property
    def display(self) -> str:
        """The URI without its password, for logs."""
        return hide_password(self.uri)

    @property
    def connect_args(self) -> dict[str, Any]:
        """Keyword arguments of psycopg2.connect or pymysql.connect (unset ones left to libpq's PG*)."""
        url = self.url
        if self.driver == MYSQL_DRIVER:
            tls = {k: v for k, v in url.query.items() if k in MYSQL_TLS_OPTIONS}
            args = {"host": "localhost", "port": DEFAULT_PORTS[MYSQL_DRIVER]}
            args |= {**url.translate_connect_args(username="user"), **tls}
        else:  # libpq takes the URI's query options (sslmode, …) as keywords too
            args = {**url.translate_connect_args(username="user", database="dbname"), **url.query}
        return {k: v for k, v in args.items() if v}

    def where(self, environ: Mapping[str, str] = os.environ) -> str:
        url = self.url
        libpq = self.driver == POSTGRES_DRIVER  # libpq fills what the URI leaves out from PG*
        host = url.host or (environ.get("PGHOST", "localhost") if libpq else "localhost")
        port = url.port or (environ.get("PGPORT") if libpq else None) or DEFAULT_PORTS[self.driver]
        user = url.username or (environ.get("PGUSER", "?") if libpq else "?")
        database = url.database or (environ.get("PGDATABASE", "?") if libpq else "?")
        return f"{self.kind} at {host}:{port} (user {user}, database {database})"


def database_from(uri: str) -> Database:
    """The database of `uri`, refused unless its driver is one this image carries."""
    database = Database(uri)
    if database.url.drivername not in DATABASE_KINDS:
        raise PreflightError(
            f"backend store URI {database.display} uses driver {database.driver!r}; this image supports "
            f"{POSTGRES_DRIVER}://user@host:5432/db (PostgreSQL) and {MYSQL_DRIVER}://user@host:3306/db "
            "(MySQL); a bare postgresql:// or mysql:// selects a driver it does not carry"
        )
    return database


def postgres_error_is_transient(reason: str) -> bool:
    return any(marker in reason.lower() for marker in TRANSIENT_POSTGRES_ERRORS)


def mysql_error_is_transient(code: int) -> bool:
    return code in TRANSIENT_MYSQL_CODES


def connect_postgres(database: Database) -> None:
    import psycopg2  # noqa: PLC0415 - only a PostgreSQL backend needs it

    try:
        psycopg2.connect(connect_timeout=3, **database.connect_args).close()
    except psycopg2.OperationalError as exc:
        reason = " ".join(str(exc).split())
        if postgres_error_is_transient(reason):
            raise TransientError(reason) from exc
        hint = " (set MLPLATFORM_DB_PASSWORD, PGPASSWORD or PGPASSFILE)" if "no password" in reason else ""
        raise PreflightError(f"cannot use {database.where()}: {reason}{hint}") from exc


def connect_mysql(database: Database) -> None:
    import pymysql  # noqa: PLC0415 - only a MySQL backend needs it

    try:
        pymysql.connect(connect_timeout=3, read_timeout=10, **database.connect_args).close()
    except pymysql.err.MySQLError as exc:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        reason = " ".join(str(exc.args[-1] if exc.args else exc).split())
        if mysql_error_is_transient(code):
            raise TransientError(reason) from exc
        hint = " (check MLPLATFORM_DB_PASSWORD)" if code == 1045 else ""
        raise PreflightError(f"cannot use {database.where()}: ({code}) {reason}{hint}") from exc


def check_database(database: Database, timeout: float) -> None:
    """Connect once with a short timeout; fail at once on a refusal that waiting will not fix."""
    connect = connect_mysql if database.driver == MYSQL_DRIVER else connect_postgres
    try:
        retry(lambda: connect(database), timeout)
    except TransientError as exc:
        raise PreflightError(f"cannot reach {database.where()} within {timeout:.0f}s: {exc}") from exc


@dataclass(frozen=True)
class LockStatements:
    """SQL that takes the migration lock without waiting, sets how long to wait, waits, and releases it.
    Both ways of taking it answer 1 or true once it is held."""

    try_acquire: str
    wait_at_most: str | None
    acquire: str
    release: str


def upgrade_lock_statements(driver: str, timeout: float) -> LockStatements:
    if driver == MYSQL_DRIVER:
        name = f"'{MYSQL_UPGRADE_LOCK_NAME}'"
        return LockStatements(
            try_acquire=f"SELECT GET_LOCK({name}, 0)",
            wait_at_most=None,
            acquire=f"SELECT GET_LOCK({name}, {int(timeout)})",
            release=f"SELECT RELEASE_LOCK({name})",
        )
    key = POSTGRES_UPGRADE_LOCK_KEY
    return LockStatements(
        try_acquire=f"SELECT pg_try_advisory_lock({key})",
        wait_at_most=f"SET lock_timeout = {int(timeout * 1000)}",  # then pg_advisory_lock fails
        acquire=f"SELECT true FROM pg_advisory_lock({key})",  # noqa: S608 - a constant integer
        release=f"SELECT pg_advisory_unlock({key})",
    )


@contextmanager
def upgrade_lock(database: Database, timeout: float) -> Iterator[Any]:
    """Hold the database's migration lock on a connection of its own; yield that connection.

    Migration Jobs and server pods that start together take turns: MLflow's own lock is a file, which
    covers only the processes of one machine.
    """
    statements = upgrade_lock_statements(database.driver, timeout)
    engine = sqlalchemy.create_engine(
        database.uri, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool
    )
    try:
        with engine.connect() as connection:
            if not connection.exec_driver_sql(statements.try_acquire).scalar():
                log(
                    f"waiting up to {timeout:.0f}s for another schema upgrade of {database.display} to finish"
                )
                if statements.wait_at_most:
                    connection.exec_driver_sql(statements.wait_at_most)
                try:
                    held = connection.exec_driver_sql(statements.acquire).scalar()
                except sqlalchemy.exc.OperationalError:  # PostgreSQL: lock_timeout expired
                    held = False
                if not held:
                    raise PreflightError(
                        f"another schema upgrade of {database.where()} held its lock for more than "
                        f"{timeout:.0f}s (MLPLATFORM_DB_LOCK_TIMEOUT)"
                    )
            try:
                yield connection
            finally:
                connection.exec_driver_sql(statements.release)
    finally:
        engine.dispose()


def has_mlflow_tables(connection: Any) -> bool:
    """MLflow's own test: a database with nothing but Alembic's bookkeeping is empty."""
    tables = sqlalchemy.inspect(connection).get_table_names()
    return any(not table.startswith("alembic_") for table in tables)


def upgrade_database(database: Database, mode: UpgradeMode = UpgradeMode.ALWAYS) -> None:
    """`mlflow db upgrade` under the migration lock, invoked in-process so the URI never shows in a
    process list. IF_EMPTY initialises a new database and leaves an existing one to the migration Job."""
    from mlflow.db import upgrade  # noqa: PLC0415 - importing mlflow takes seconds; only this needs it

    lock_timeout = seconds_setting("MLPLATFORM_DB_LOCK_TIMEOUT", 600)
    with upgrade_lock(database, lock_timeout) as connection:
        if mode is UpgradeMode.IF_EMPTY and has_mlflow_tables(connection):
            log(f"{database.display} has MLflow tables: its schema upgrades are left to the db-upgrade Job")
            return
        log(f"upgrading the schema of {database.display}")
        upgrade.main([database.uri], prog_name="mlflow db upgrade", standalone_mode=False)
    log("database schema is up to date")


# --- the artifact store --------------------------------------------------------------------------------


class ArtifactStore(Protocol):
    """Where the server keeps artifacts: an S3 bucket or an Azure Blob Storage container."""

    @property
    def destination(self) -> str: ...

    @property
    def where(self) -> str: ...

    def exists(self, timeout: float) -> bool:
        """Whether it exists; PreflightError if the endpoint or the credentials are wrong."""
        ...

    def create(self) -> None: ...


@dataclass(frozen=True)
class S3Bucket:
    destination: str
    endpoint: str | None

    @property
    def bucket(self) -> str:
        return urlsplit(self.destination).netloc

    @property
    def where(self) -> str:
        return f"bucket {self.bucket!r} at {self.endpoint or 'the AWS S3 endpoint'}"

    def client(self) -> Any:
        import boto3  # noqa: PLC0415 - only an S3 store needs it
        from botocore.config import Config  # noqa: PLC0415

        config = Config(
            connect_timeout=3,
            read_timeout=10,
            retries={"max_attempts": 1},
            s3={"addressing_style": os.environ.get("MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE", "auto")},
        )
        return boto3.client("s3", endpoint_url=self.endpoint, config=config)

    def exists(self, timeout: float) -> bool:
        from botocore.exceptions import (  # noqa: PLC0415
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        client = self.client()

        def attempt() -> bool:
            try:
                client.head_bucket(Bucket=self.bucket)
                return True
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in ("404", "NoSuchBucket", "NotFound"):
                    return False
                if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                    raise PreflightError(
                        f"access to {self.where} was denied ({code}): check AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY"
                    ) from exc
                raise PreflightError(f"cannot use {self.where}: {exc}") from exc
            except NoCredentialsError as exc:
                raise PreflightError(
                    f"no S3 credentials for {self.where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                ) from exc
            except EndpointConnectionError as exc:
                raise TransientError(str(exc)) from exc
            except BotoCoreError as exc:  # timeouts and protocol errors: the endpoint is not (yet) an S3
                raise TransientError(str(exc)) from exc

        try:
            return retry(attempt, timeout)
        except TransientError as exc:
            raise PreflightError(
                f"cannot reach the S3 endpoint for {self.where} within {timeout:.0f}s: {exc}"
            ) from exc

    def create(self) -> None:
        self.client().create_bucket(Bucket=self.bucket)


@dataclass(frozen=True)
class BlobContainer:
    destination: str
    container: str
    account: str
    account_url: str  # https://<account>.blob.core.windows.net, for an access key

    @property
    def where(self) -> str:
        return f"Azure container {self.container!r} of storage account {self.account!r}"

    def client(self) -> Any:
        """A client with MLflow's choice of credentials, and no retries: the preflight does its own."""
        from azure.storage.blob import BlobServiceClient  # noqa: PLC0415 - only an Azure store needs it

        options: dict[str, Any] = {"retry_total": 0, "connection_timeout": 3, "read_timeout": 10}
        if connection_string := os.environ.get("AZURE_STORAGE_CONNECTION_STRING"):
            service = BlobServiceClient.from_connection_string(connection_string, **options)
        elif access_key := os.environ.get("AZURE_STORAGE_ACCESS_KEY"):
            service = BlobServiceClient(self.account_url, credential=access_key, **options)
        else:
            raise PreflightError(
                f"no credentials for {self.where}: set AZURE_STORAGE_CONNECTION_STRING or "
                "AZURE_STORAGE_ACCESS_KEY"
            )
        return service.get_container_client(self.container)

    def exists(self, timeout: float) -> bool:
        from azure.core.exceptions import (  # noqa: PLC0415
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        container = self.client()

        def attempt() -> bool:
            try:
                return bool(container.exists())
            except (ServiceRequestError, ServiceResponseError) as exc:  # not reachable (yet)
                raise TransientError(" ".join(str(exc).split())) from exc
            except HttpResponseError as exc:
                if exc.status_code in (401, 403):  # a wrong key answers 403 AuthorizationFailure
                    code = getattr(exc.error_code, "value", exc.error_code)  # an enum of the SDK, or text
                    raise PreflightError(
                        f"access to {self.where} was denied ({exc.status_code} {code}): check "
                        "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCESS_KEY"
                    ) from exc
                reason = " ".join(str(exc).splitlines()[0].split())
                raise PreflightError(f"cannot use {self.where}: {reason}") from exc
            except ValueError as exc:  # a key or connection string that is not one
                raise PreflightError(f"cannot use the credentials for {self.where}: {exc}") from exc

        try:
            return retry(attempt, timeout)
        except TransientError as exc:
            raise PreflightError(f"cannot reach {self.where} within {timeout:.0f}s: {exc}") from exc

    def create(self) -> None:
        self.client().create_container()


def artifact_store(environ: Mapping[str, str] = os.environ) -> S3Bucket | BlobContainer:
    """The store MLFLOW_ARTIFACTS_DESTINATION names, in MLflow's own URI forms."""
    destination = environ.get("MLFLOW_ARTIFACTS_DESTINATION", "")
    parts = urlsplit(destination)
    if parts.scheme == "s3" and parts.netloc:
        return S3Bucket(destination, environ.get("MLFLOW_S3_ENDPOINT_URL") or None)
    if parts.scheme == "wasbs" and (match := WASBS_NETLOC.fullmatch(parts.netloc)):
        account_url = f"https://{parts.netloc.split('@', 1)[1]}"
        return BlobContainer(destination, match["container"], match["account"], account_url)
    raise PreflightError(
        "MLFLOW_ARTIFACTS_DESTINATION must be s3://<bucket>[/prefix] or "
        f"wasbs://<container>@<account>.blob.core.windows.net[/path], not {destination!r}"
    )


def wait_for_store(store: ArtifactStore, timeout: float, wait: float) -> bool:
    """Whether the store exists, or appears within `wait` seconds (the chart's bucket Job creates it)."""
    if store.exists(timeout):
        return True
    if wait <= 0:
        return False
    log(f"{store.where} does not exist yet: waiting up to {wait:.0f}s for it to be created")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(2)
        if store.exists(timeout):
            return True
    return False


def ensure_store(store: ArtifactStore, timeout: float, create: bool, wait: float = 0) -> None:
    if wait_for_store(store, timeout, 0 if create else wait):
        return
    if not create:
        waited = f" after {wait:.0f}s (MLPLATFORM_BUCKET_WAIT)" if wait > 0 else ""
        raise PreflightError(
            f"{store.where} does not exist{waited}: create it (the chart's bucket Job does), "
            "or set MLPLATFORM_CREATE_BUCKET=true"
        )
    store.create()
    log(f"created {store.where}")


# --- commands ------------------------------------------------------------------------------------------


def checked_database() -> Database:
    db = database_from(backend_store_uri())
    check_database(db, preflight_timeout())
    log(f"{db.where()} accepts connections")
    return db


def checked_artifact_store(wait: float = 0) -> ArtifactStore:
    store = artifact_store()
    ensure_store(store, preflight_timeout(), create=env_flag("MLPLATFORM_CREATE_BUCKET"), wait=wait)
    log(f"{store.where} is reachable")
    return store


def preflight() -> None:
    checked_database()
    checked_artifact_store()


def server_environment(environ: Mapping[str, str], db: Database) -> dict[str, str]:
    """The variables the MLflow server process gets on top of `environ`."""
    extra = {"MLFLOW_BACKEND_STORE_URI": db.uri}
    if db.driver == POSTGRES_DRIVER and "PGCONNECT_TIMEOUT" not in environ:
        extra["PGCONNECT_TIMEOUT"] = POSTGRES_CONNECT_TIMEOUT
    return extra


def serve() -> None:
    mode = upgrade_mode(os.environ.get("MLPLATFORM_DB_UPGRADE", ""))
    db = checked_database()
    store = checked_artifact_store(wait=seconds_setting("MLPLATFORM_BUCKET_WAIT", 0))
    if mode is not UpgradeMode.NEVER:
        upgrade_database(db, mode)
    # mlflow server reads the store URI, destination, host, port, workers and allowed hosts from the
    # environment: nothing secret reaches its argv.
    os.environ.update(server_environment(os.environ, db))
    log(f"starting mlflow server: backend {db.display}, artifacts {store.destination} (proxied)")
    argv = [sys.executable, "-m", "mlflow", "server", "--serve-artifacts"]
    if app := os.environ.get("MLPLATFORM_APP_NAME"):  # e.g. basic-auth: MLflow's authentication app
        argv += ["--app-name", app]
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with MLflow, argv built here


def db_upgrade() -> None:
    upgrade_database(checked_database())


def create_bucket() -> None:
    store = artifact_store()
    ensure_store(store, preflight_timeout(), create=True)
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
