"""The pure parts of the MLflow server image's entrypoint: store URIs, passwords, destinations, modes."""

from __future__ import annotations

import pytest

from server_image import load_entrypoint

PASSWORD = "p@ss:w/rd%?#é"  # every character that needs quoting in a URI


entrypoint = load_entrypoint()


def test_a_uri_is_built_from_libpq_variables_without_a_password() -> None:
    uri = entrypoint.backend_store_uri(
        {"PGHOST": "db", "PGPORT": "6432", "PGUSER": "ml", "PGDATABASE": "runs"}
    )
    assert uri == "postgresql+psycopg2://ml@db:6432/runs"


def test_the_explicit_uri_wins_over_libpq_variables() -> None:
    environ = {"MLFLOW_BACKEND_STORE_URI": "mysql+pymysql://ml@mysql:3306/mlflow", "PGHOST": "db"}
    assert entrypoint.backend_store_uri(environ) == "mysql+pymysql://ml@mysql:3306/mlflow"


def test_no_database_at_all_is_refused() -> None:
    with pytest.raises(entrypoint.PreflightError, match="set MLFLOW_BACKEND_STORE_URI, or PGHOST"):
        entrypoint.backend_store_uri({})


@pytest.mark.parametrize(
    "uri",
    [
        "mysql+pymysql://ml@mysql.example:3306/mlflow?ssl_ca=/etc/ca.pem",
        "postgresql+psycopg2://ml@[::1]:5432/mlflow",
        "postgresql+psycopg2://ml:old-password@db/mlflow",
    ],
)
def test_the_password_goes_into_the_uri_and_decodes_to_itself(uri: str) -> None:
    environ = {"MLFLOW_BACKEND_STORE_URI": uri, "MLPLATFORM_DB_PASSWORD": PASSWORD}
    database = entrypoint.database_from(entrypoint.backend_store_uri(environ))
    assert database.connect_args["password"] == PASSWORD
    assert database.connect_args["user"] == "ml"
    assert "old-password" not in database.uri


def test_the_password_goes_into_a_uri_built_from_libpq_variables() -> None:
    uri = entrypoint.backend_store_uri({"PGHOST": "db", "MLPLATFORM_DB_PASSWORD": PASSWORD})
    database = entrypoint.database_from(uri)
    assert database.connect_args["password"] == PASSWORD
    assert database.display == "postgresql+psycopg2://mlflow:***@db:5432/mlflow"


def test_a_password_needs_a_user_in_the_uri() -> None:
    environ = {"MLFLOW_BACKEND_STORE_URI": "mysql+pymysql://mysql/mlflow", "MLPLATFORM_DB_PASSWORD": "x"}
    with pytest.raises(entrypoint.PreflightError, match="names no user"):
        entrypoint.backend_store_uri(environ)


@pytest.mark.parametrize(
    ("uri", "where"),
    [
        ("mysql+pymysql://ml@mysql:3306/mlflow", "MySQL at mysql:3306 (user ml, database mlflow)"),
        ("mysql+pymysql://ml@mysql/mlflow", "MySQL at mysql:3306 (user ml, database mlflow)"),
        ("postgresql+psycopg2://ml@db/runs", "PostgreSQL at db:5432 (user ml, database runs)"),
    ],
)
def test_the_display_strings_never_hold_the_password(uri: str, where: str) -> None:
    database = entrypoint.database_from(entrypoint.with_password(uri, PASSWORD))
    assert database.display == uri.replace("ml@", "ml:***@")
    assert database.where() == where
    for shown in (database.display, database.where()):
        assert PASSWORD not in shown and "p%40ss" not in shown and "ss" not in shown


def test_libpq_variables_fill_what_a_postgresql_uri_leaves_out() -> None:
    database = entrypoint.database_from("postgresql+psycopg2:///runs?sslmode=require")
    environ = {"PGHOST": "db", "PGPORT": "6432", "PGUSER": "ml"}
    assert database.where(environ) == "PostgreSQL at db:6432 (user ml, database runs)"
    assert database.connect_args == {"dbname": "runs", "sslmode": "require"}


def test_the_server_gives_up_on_an_unreachable_postgresql_in_seconds_unless_told_otherwise() -> None:
    postgres = entrypoint.database_from("postgresql+psycopg2://ml@db/mlflow")
    assert entrypoint.server_environment({}, postgres) == {
        "MLFLOW_BACKEND_STORE_URI": postgres.uri,
        "PGCONNECT_TIMEOUT": entrypoint.POSTGRES_CONNECT_TIMEOUT,
    }
    assert "PGCONNECT_TIMEOUT" not in entrypoint.server_environment({"PGCONNECT_TIMEOUT": "30"}, postgres)
    mysql = entrypoint.database_from("mysql+pymysql://ml@mysql/mlflow")  # PyMySQL's own default: 10 s
    assert entrypoint.server_environment({}, mysql) == {"MLFLOW_BACKEND_STORE_URI": mysql.uri}


def test_mysql_connects_with_its_default_port_and_tls_options() -> None:
    database = entrypoint.database_from("mysql+pymysql://ml@mysql/mlflow?ssl_ca=/ca.pem&charset=utf8mb4")
    assert database.connect_args == {
        "host": "mysql",
        "port": 3306,
        "user": "ml",
        "database": "mlflow",
        "ssl_ca": "/ca.pem",
    }


def test_a_uri_that_is_not_one_is_refused_without_showing_it() -> None:
    with pytest.raises(entrypoint.PreflightError) as refused:
        entrypoint.database_from("ml:secret@db:5432")
    assert "secret" not in str(refused.value)
    assert "the backend store URI is not a database URL" in str(refused.value)


@pytest.mark.parametrize(
    "uri", ["postgresql://ml@db/mlflow", "mysql://ml@db/mlflow", "sqlite:///mlflow.db", "mssql+pyodbc://db/x"]
)
def test_other_drivers_are_refused_naming_the_two_supported_forms(uri: str) -> None:
    with pytest.raises(entrypoint.PreflightError) as refused:
        entrypoint.database_from(uri)
    message = str(refused.value)
    assert "postgresql+psycopg2://user@host:5432/db" in message
    assert "mysql+pymysql://user@host:3306/db" in message


def test_a_refused_uri_does_not_show_its_password() -> None:
    """Even one whose password is not quoted: it is parsed as MLflow parses it."""
    with pytest.raises(entrypoint.PreflightError) as refused:
        entrypoint.database_from("mysql://ml:s3cr/t?#x@db/mlflow")
    assert "mysql://ml:***@db/mlflow" in str(refused.value)


@pytest.mark.parametrize(
    ("reason", "transient"),
    [
        ('connection to server at "db", port 5432 failed: Connection refused', True),
        ('could not translate host name "db" to address', True),
        ("FATAL: the database system is starting up", True),
        ('FATAL: password authentication failed for user "ml"', False),
        ('FATAL: database "runs" does not exist', False),
    ],
)
def test_which_postgresql_errors_are_waited_out(reason: str, transient: bool) -> None:
    assert entrypoint.postgres_error_is_transient(reason) is transient


@pytest.mark.parametrize(("code", "transient"), [(2003, True), (2013, True), (1040, True), (1045, False)])
def test_which_mysql_errors_are_waited_out(code: int, transient: bool) -> None:
    """2003: refused or unknown host; 2013: lost while starting; 1040: too many connections; 1045: denied."""
    assert entrypoint.mysql_error_is_transient(code) is transient


def test_each_database_locks_its_migrations_in_its_own_way() -> None:
    mysql = entrypoint.upgrade_lock_statements("mysql+pymysql", 600)
    assert mysql.acquire == "SELECT GET_LOCK('mlflow-schema-upgrade', 600)" and mysql.wait_at_most is None
    postgres = entrypoint.upgrade_lock_statements("postgresql+psycopg2", 600)
    key = entrypoint.POSTGRES_UPGRADE_LOCK_KEY
    assert postgres.try_acquire == f"SELECT pg_try_advisory_lock({key})"
    assert postgres.wait_at_most == "SET lock_timeout = 600000"


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("", "NEVER"),
        ("false", "NEVER"),
        ("0", "NEVER"),
        ("true", "ALWAYS"),
        ("True", "ALWAYS"),
        ("1", "ALWAYS"),
        ("if-empty", "IF_EMPTY"),
        (" IF-EMPTY ", "IF_EMPTY"),
    ],
)
def test_upgrade_modes(value: str, mode: str) -> None:
    assert entrypoint.upgrade_mode(value) is entrypoint.UpgradeMode[mode]


def test_an_unknown_upgrade_mode_is_refused() -> None:
    with pytest.raises(entrypoint.PreflightError, match="must be true, if-empty or false, not 'always'"):
        entrypoint.upgrade_mode("always")


@pytest.mark.parametrize(("value", "seconds"), [("", 7.0), ("0", 0.0), ("90", 90.0), ("2.5", 2.5)])
def test_seconds_settings(value: str, seconds: float) -> None:
    assert (
        entrypoint.seconds_setting("MLPLATFORM_BUCKET_WAIT", 7, {"MLPLATFORM_BUCKET_WAIT": value}) == seconds
    )


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_a_setting_that_is_not_seconds_is_refused(value: str) -> None:
    with pytest.raises(entrypoint.PreflightError, match="MLPLATFORM_BUCKET_WAIT must be a number of seconds"):
        entrypoint.seconds_setting("MLPLATFORM_BUCKET_WAIT", 0, {"MLPLATFORM_BUCKET_WAIT": value})


def test_an_s3_destination() -> None:
    environ = {
        "MLFLOW_ARTIFACTS_DESTINATION": "s3://mlflow/artifacts",
        "MLFLOW_S3_ENDPOINT_URL": "http://minio",
    }
    store = entrypoint.artifact_store(environ)
    assert (store.bucket, store.endpoint) == ("mlflow", "http://minio")
    assert store.where == "bucket 'mlflow' at http://minio"


def test_an_s3_destination_on_aws() -> None:
    store = entrypoint.artifact_store({"MLFLOW_ARTIFACTS_DESTINATION": "s3://mlflow"})
    assert store.where == "bucket 'mlflow' at the AWS S3 endpoint"


@pytest.mark.parametrize(
    ("destination", "account_url"),
    [
        ("wasbs://artifacts@acct.blob.core.windows.net", "https://acct.blob.core.windows.net"),
        ("wasbs://artifacts@acct.blob.core.windows.net/team/a", "https://acct.blob.core.windows.net"),
        ("wasbs://artifacts@acct.blob.core.chinacloudapi.cn/x", "https://acct.blob.core.chinacloudapi.cn"),
    ],
)
def test_an_azure_destination(destination: str, account_url: str) -> None:
    store = entrypoint.artifact_store({"MLFLOW_ARTIFACTS_DESTINATION": destination})
    assert (store.container, store.account, store.account_url) == ("artifacts", "acct", account_url)
    assert store.where == "Azure container 'artifacts' of storage account 'acct'"


@pytest.mark.parametrize(
    "destination",
    [
        "",
        "s3://",
        "gs://bucket",
        "wasbs://acct.blob.core.windows.net/artifacts",
        "wasbs://artifacts@acct.dfs.core.windows.net",
        "abfss://artifacts@acct.dfs.core.windows.net",
    ],
)
def test_other_destinations_are_refused_naming_both_forms(destination: str) -> None:
    with pytest.raises(entrypoint.PreflightError) as refused:
        entrypoint.artifact_store({"MLFLOW_ARTIFACTS_DESTINATION": destination})
    assert "s3://<bucket>[/prefix] or wasbs://<container>@<account>.blob.core.windows.net" in str(
        refused.value
    )
