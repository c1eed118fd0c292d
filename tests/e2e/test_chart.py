"""The platform chart installed with helm into the local cluster, as a user installs it on any cluster:
its PostgreSQL and MinIO run from their official images' contracts on PersistentVolumeClaims of the
node's StorageClass, never the bench's own stack. One release for the module, in its own namespace, with
the operator watching only that namespace (the session's operator process watches the rest)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client

from chart import CHART, helm, set_args
from crds import install_crds
from kube import eventually, fresh_namespace, is_ready, kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("local_node")]

RELEASE = "mlp"
PREFIX = "mlp-mlplatform"


class Release:
    def __init__(self, helm_bin: Path, kubeconfig: Path, namespace: str, name: str = RELEASE) -> None:
        self.helm_bin, self.kubeconfig, self.namespace, self.name = helm_bin, kubeconfig, namespace, name

    def helm(self, *args: str) -> str:
        return helm(self.helm_bin, *args, "--namespace", self.namespace, kubeconfig=self.kubeconfig)

    def install_or_upgrade(self, **values: object) -> str:
        return self.helm("upgrade", "--install", self.name, str(CHART), "--wait", "--timeout", "10m",
                         *set_args({"operator.watchNamespaces": [self.namespace], **values}))  # fmt: skip


@pytest.fixture(scope="module")
def release(
    helm_bin: Path, kubectl_bin: Path, kubeconfig: Path, api_client: client.ApiClient
) -> Iterator[Release]:
    install_crds(kubectl_bin, kubeconfig)  # helm skips the chart's crds/ when they exist, as they do here
    with fresh_namespace(api_client, prefix="chart") as namespace:
        installed = Release(helm_bin, kubeconfig, namespace)
        installed.install_or_upgrade()
        try:
            yield installed
        finally:
            helm(
                helm_bin, "uninstall", RELEASE, "-n", namespace, "--wait", kubeconfig=kubeconfig, check=False
            )


def pods_by_component(core: client.CoreV1Api, namespace: str) -> dict[str, client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={RELEASE}").items
    return {
        p.metadata.labels["app.kubernetes.io/component"]: p
        for p in pods
        if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
    }


def mlflow_url(core: client.CoreV1Api, namespace: str, prefix: str = PREFIX) -> str:
    """The tracking server through its Service IP, which kube-proxy routes from this machine too."""
    service = core.read_namespaced_service(f"{prefix}-mlflow", namespace)
    return f"http://{service.spec.cluster_ip}:5000"


def test_install_runs_every_part_on_bound_claims(release: Release, api_client: client.ApiClient) -> None:
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    ns = release.namespace
    pods = pods_by_component(core, ns)
    assert {"mlflow", "operator", "postgresql", "minio"} <= pods.keys()
    assert all(is_ready(pods[c]) for c in ("mlflow", "operator", "postgresql", "minio"))
    claims = core.list_namespaced_persistent_volume_claim(ns).items
    assert sorted(c.metadata.name for c in claims) == [
        f"data-{PREFIX}-minio-0",
        f"data-{PREFIX}-postgresql-0",
    ]
    assert all(c.status.phase == "Bound" and c.spec.storage_class_name == "standard" for c in claims)
    bucket_jobs = [j for j in batch.list_namespaced_job(ns).items if "create-bucket" in j.metadata.name]
    assert [j.status.succeeded for j in bucket_jobs] == [1]
    # The migration hook Job is deleted once it succeeds (hook-succeeded); its events remain.
    events = core.list_namespaced_event(
        ns, field_selector=f"involvedObject.name={PREFIX}-mlflow-migration"
    ).items
    assert "Completed" in {e.reason for e in events}, [(e.reason, e.message) for e in events]
    version = requests.get(f"{mlflow_url(core, ns)}/version", timeout=10)
    assert version.text.strip() == "3.17.2"


def test_helm_test_checks_mlflow_and_the_operator(release: Release) -> None:
    out = release.helm("test", RELEASE)  # it fails unless both pods succeed (they are deleted then)
    for check in ("mlflow", "operator"):
        assert f"TEST SUITE:     {PREFIX}-test-{check}" in out, out
    assert out.count("Phase:          Succeeded") == 2, out


def test_data_survives_the_postgresql_pod(release: Release, api_client: client.ApiClient) -> None:
    core, ns = client.CoreV1Api(api_client), release.namespace
    api = f"{mlflow_url(core, ns)}/api/2.0/mlflow/experiments"
    created = requests.post(f"{api}/create", json={"name": "survives-restart"}, timeout=30)
    assert created.ok, created.text
    old_uid = pods_by_component(core, ns)["postgresql"].metadata.uid
    core.delete_namespaced_pod(f"{PREFIX}-postgresql-0", ns)
    eventually(
        lambda: (
            (p := pods_by_component(core, ns).get("postgresql")) and p.metadata.uid != old_uid and is_ready(p)
        ),
        timeout=180,
        what="a new PostgreSQL pod is ready",
    )

    def experiment() -> Any:
        # Until its Service's endpoints follow the new pod, a request may fail or time out: clients retry.
        try:
            r = requests.get(f"{api}/get-by-name", params={"experiment_name": "survives-restart"}, timeout=15)
        except requests.RequestException:
            return None
        return r.ok and r.json()

    found = eventually(experiment, timeout=120, what="MLflow answers from the restarted database")
    assert found["experiment"]["experiment_id"] == created.json()["experiment_id"]


def test_an_upgrade_restarts_only_what_reads_the_changed_value(
    release: Release, api_client: client.ApiClient
) -> None:
    core, ns = client.CoreV1Api(api_client), release.namespace
    before = {c: p.metadata.uid for c, p in pods_by_component(core, ns).items()}
    release.install_or_upgrade(**{"mlflow.workers": 3})
    after = eventually(
        lambda: (now := pods_by_component(core, ns)) and len(now) == len(before) and now,
        timeout=120,
        what="one pod per component after the upgrade",
    )
    changed = sorted(c for c in before if after[c].metadata.uid != before[c])
    assert changed == ["mlflow"]


def test_uninstall_leaves_no_workload_and_keeps_the_crds(
    helm_bin: Path, kubectl_bin: Path, kubeconfig: Path, release: Release, api_client: client.ApiClient
) -> None:
    ns = release.namespace
    helm(helm_bin, "uninstall", RELEASE, "-n", ns, "--wait", kubeconfig=kubeconfig)
    kinds = "deployments,statefulsets,jobs,pods,services,configmaps"
    eventually(
        lambda: kubectl(kubectl_bin, kubeconfig, "get", kinds, "-n", ns, "-l",
                        f"app.kubernetes.io/instance={RELEASE}", "-o", "name").stdout.strip() == "",
        timeout=180,
        what="no object of the release is left",
    )  # fmt: skip
    crds = kubectl(kubectl_bin, kubeconfig, "get", "crd", "-o", "name").stdout
    assert "trainingruns.mlplatform.dev" in crds and "modeldeployments.mlplatform.dev" in crds


def test_basic_auth_guards_mlflow_and_the_operator_signs_in(
    helm_bin: Path, kubeconfig: Path, api_client: client.ApiClient
) -> None:
    """MLflow's basic-auth app with the admin from an existing Secret; the operator uses the same Secret."""
    core = client.CoreV1Api(api_client)
    password = "mlp-admin-" + uuid.uuid4().hex[:12]
    with fresh_namespace(api_client, prefix="chart-auth") as ns:
        core.create_namespaced_secret(ns, client.V1Secret(
            metadata=client.V1ObjectMeta(name="mlflow-admin"),
            string_data={"username": "admin", "password": password},
        ))  # fmt: skip
        auth = Release(helm_bin, kubeconfig, ns, name="auth")
        try:
            auth.install_or_upgrade(
                **{"mlflow.auth.enabled": True, "mlflow.auth.existingSecret": "mlflow-admin"}
            )
            search = f"{mlflow_url(core, ns, 'auth-mlplatform')}/api/2.0/mlflow/experiments/search"
            assert requests.get(search, params={"max_results": 1}, timeout=30).status_code == 401
            signed_in = requests.get(search, params={"max_results": 1}, auth=("admin", password), timeout=30)
            assert signed_in.status_code == 200, signed_in.text
            operator = core.list_namespaced_pod(
                ns, label_selector="app.kubernetes.io/component=operator"
            ).items
            # The operator registers its registry webhook, an admin call, with the Secret's credentials.
            eventually(
                lambda: "delivers to" in core.read_namespaced_pod_log(operator[0].metadata.name, ns),
                timeout=180,  # the operator's MLflow client backs off while the server starts
                what="the operator registered its webhook with MLflow",
            )
        finally:
            helm(helm_bin, "uninstall", "auth", "-n", ns, "--wait", kubeconfig=kubeconfig, check=False)
