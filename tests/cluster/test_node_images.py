"""Images that map to host programs run as their official images do: `postgres` (Debian's PostgreSQL
behind the image's entrypoint contract) and `minio/minio` (the MinIO the platform builds), reached
through their Services, as non-root users under the restricted security context a chart sets."""

from __future__ import annotations

import contextlib
import socket
import uuid
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
from botocore.client import Config
from botocore.exceptions import ClientError
from kubernetes import client

from images import (
    MINIO_PORT,
    POSTGRES_PORT,
    minio_container,
    non_root,
    postgres_container,
    secret,
    with_service,
)
from kube import apply, eventually, finished, is_ready, kubectl, pods_of

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_node")]

NO_PASSWORD = "Error: Database is uninitialized and superuser password is not specified."


def run(kubectl_bin: Path, kubeconfig: Path, namespace: str, manifests: list[dict[str, object]]) -> None:
    apply(kubectl_bin, kubeconfig, namespace, {"apiVersion": "v1", "kind": "List", "items": manifests})


def ready_service_ip(core: client.CoreV1Api, namespace: str, name: str, port: int) -> str:
    """The Service's address, once its pod is ready and kube-proxy routes the port to it."""
    eventually(
        lambda: [p for p in pods_of(core, namespace, f"app={name}") if is_ready(p)],
        timeout=120,
        what=f"{name} ready",
    )
    address: str = core.read_namespaced_service(name, namespace).spec.cluster_ip

    def accepts() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=2):
            return True
        return False

    eventually(accepts, timeout=30, what=f"service {name} routes to its pod")
    return address


@pytest.mark.parametrize("as_root", [False, True], ids=["non-root", "root-drops-to-postgres"])
def test_postgres_serves_its_database_through_the_service(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path, as_root: bool
) -> None:
    password = uuid.uuid4().hex
    container = postgres_container("db-credentials")
    pod_context: dict[str, Any] | None = None
    if not as_root:  # the official image's uid, which this host has no account for
        pod_context, container = non_root(container, uid=999, fs_group=999)
    manifests = [
        secret("db-credentials", {"password": password}),
        *with_service("db", container, POSTGRES_PORT, pod_context),
    ]
    run(kubectl_bin, kubeconfig, namespace, manifests)
    address = ready_service_ip(client.CoreV1Api(api_client), namespace, "db", POSTGRES_PORT)

    def connect(secret: str) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host=address, port=POSTGRES_PORT, user="app", password=secret, dbname="appdb", connect_timeout=5
        )

    with connect(password) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE runs (name text)")
        cursor.execute("INSERT INTO runs VALUES ('first')")
        cursor.execute("SELECT name FROM runs")
        assert cursor.fetchall() == [("first",)]
        cursor.execute("SELECT current_setting('data_directory'), current_setting('server_encoding')")
        assert cursor.fetchone() == ("/var/lib/postgresql/data/pgdata", "UTF8")
        cursor.execute("SELECT pg_stat_file('PG_VERSION')")  # the server reads its files as their owner
    connection.close()
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        connect("wrong").close()


def test_postgres_without_a_password_refuses_to_start_as_the_official_image(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "no-password"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [postgres_container(None)],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }
    apply(kubectl_bin, kubeconfig, namespace, pod)
    ended = finished(client.CoreV1Api(api_client), namespace, "no-password", timeout=60)
    assert ended.status.container_statuses[0].state.terminated.exit_code == 1
    logs = kubectl(kubectl_bin, kubeconfig, "logs", "-n", namespace, "no-password").stdout
    assert NO_PASSWORD in logs and "POSTGRES_HOST_AUTH_METHOD=trust" in logs


def test_minio_as_non_root_serves_s3_with_its_root_credentials(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    user, password = "admin", uuid.uuid4().hex
    pod_context, container = non_root(minio_container("s3-credentials"), uid=1000, fs_group=1000)
    manifests = [
        secret("s3-credentials", {"user": user, "password": password}),
        *with_service("s3", container, MINIO_PORT, pod_context),
    ]
    run(kubectl_bin, kubeconfig, namespace, manifests)
    address = ready_service_ip(client.CoreV1Api(api_client), namespace, "s3", MINIO_PORT)

    def s3(secret: str) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=f"http://{address}:{MINIO_PORT}",
            aws_access_key_id=user,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=10),
        )

    store = s3(password)
    store.create_bucket(Bucket="artifacts")
    store.put_object(Bucket="artifacts", Key="model.txt", Body=b"weights")
    body = store.get_object(Bucket="artifacts", Key="model.txt")["Body"].read()
    assert body == b"weights"
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        s3("wrong").list_buckets()


def test_busybox_runs_the_hosts_shell_and_utilities_without_a_venv(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    script = 'echo "venv=${VIRTUAL_ENV:-none} path=$PATH"; mkdir -m 777 -p /v/a && chmod 700 /v/a && rm -r /v'
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "helper"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "sh", "image": "busybox", "command": ["/bin/sh", "-c", script]}],
        },
    }
    apply(kubectl_bin, kubeconfig, namespace, pod)
    ended = finished(client.CoreV1Api(api_client), namespace, "helper")
    logs = kubectl(kubectl_bin, kubeconfig, "logs", "-n", namespace, "helper").stdout
    assert ended.status.phase == "Succeeded", logs
    assert logs.strip() == "venv=none path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert ended.status.container_statuses[0].image_id == "mlplatform-local://busybox-host-programs"


def test_postgres_on_a_claim_keeps_its_data_and_shuts_down_cleanly_when_its_pod_is_deleted(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    """A StatefulSet of the official image on a PersistentVolumeClaim, as a chart runs it: the rows
    written before its pod is deleted are there in the replacement pod. Deletion sends the image's
    STOPSIGNAL (SIGINT, PostgreSQL's fast shutdown), so a session left open does not hold the server
    until SIGKILL: the next start finds a cleanly shut down database, not one to recover."""
    core = client.CoreV1Api(api_client)
    password = uuid.uuid4().hex
    pod_context, container = non_root(postgres_container("db-credentials"), uid=999, fs_group=999)
    manifests = [
        secret("db-credentials", {"password": password}),
        *with_service("db", container, POSTGRES_PORT, pod_context, claim_size="100Mi"),
    ]
    run(kubectl_bin, kubeconfig, namespace, manifests)
    address = ready_service_ip(core, namespace, "db", POSTGRES_PORT)

    def connect() -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host=address, port=POSTGRES_PORT, user="app", password=password, dbname="appdb", connect_timeout=5
        )

    session = connect()
    with session.cursor() as cursor:
        cursor.execute("CREATE TABLE runs (name text)")
        cursor.execute("INSERT INTO runs VALUES ('kept')")
    session.commit()  # the session stays open across the deletion
    first = core.read_namespaced_pod("db-0", namespace).metadata.uid
    core.delete_namespaced_pod("db-0", namespace)
    eventually(
        lambda: (p := pods_of(core, namespace, "app=db")) and p[0].metadata.uid != first and is_ready(p[0]),
        timeout=120,
        what="the replacement pod ready",
    )
    address = ready_service_ip(core, namespace, "db", POSTGRES_PORT)
    with contextlib.closing(connect()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT name FROM runs")
        assert cursor.fetchall() == [("kept",)]
    logs = kubectl(kubectl_bin, kubeconfig, "logs", "-n", namespace, "db-0").stdout
    assert "Skipping initialization" in logs
    assert "database system was shut down at" in logs, logs
    with contextlib.suppress(psycopg2.Error):
        session.close()
