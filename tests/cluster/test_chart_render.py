"""The platform chart as helm renders it: lint, the "restricted" Pod Security Standard checked by the real
apiserver, least-privilege RBAC, each store combination users bring, values it refuses, and which pods a
changed value restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart import CHART, container, env_of, find, helm, pod_specs, render, render_error
from kube import kubectl

pytestmark = [pytest.mark.cluster]

EXTERNAL_POSTGRES_S3: dict[str, Any] = {
    "postgresql.enabled": False,
    "externalDatabase.enabled": True,
    "externalDatabase.host": "db.example.com",
    "externalDatabase.existingSecret": "mlflow-db",
    "minio.enabled": False,
    "externalS3.enabled": True,
    "externalS3.existingSecret": "mlflow-s3",
    "externalS3.region": "eu-west-1",
}
EXTERNAL_MYSQL_AZURE: dict[str, Any] = {
    "postgresql.enabled": False,
    "externalDatabase.enabled": True,
    "externalDatabase.type": "mysql",
    "externalDatabase.host": "mysql.example.com",
    "externalDatabase.existingSecret": "mlflow-db",
    "minio.enabled": False,
    "externalAzure.enabled": True,
    "externalAzure.storageAccount": "mlplatformstore",
    "externalAzure.container": "artifacts",
    "externalAzure.existingSecret": "mlflow-azure",
}
CREDENTIAL_WORDS = ("PASSWORD", "SECRET", "ACCESS_KEY", "CONNECTION_STRING")
VALUE_SETS = {
    "defaults": {},
    "external-postgres-s3": EXTERNAL_POSTGRES_S3,
    "external-mysql-azure": EXTERNAL_MYSQL_AZURE,
    "namespaced-operator-with-auth-and-ingress": {
        "operator.watchNamespaces": ["team-a", "team-b"],
        "mlflow.auth.enabled": True,
        "mlflow.auth.existingSecret": "mlflow-admin",
        "mlflow.ingress.enabled": True,
    },
}


def values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    """The dotted keys as a nested values file, for `helm lint`."""
    nested: dict[str, Any] = {}
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(nested))
    return path


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_lint_strict_passes(helm_bin: Path, tmp_path: Path, values: dict[str, Any]) -> None:
    out = helm(helm_bin, "lint", "--strict", str(CHART), "-f", str(values_file(tmp_path, values)))
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_object_carries_the_recommended_labels(helm_bin: Path, values: dict[str, Any]) -> None:
    for manifest in render(helm_bin, values):
        labels = manifest["metadata"].get("labels", {})
        for key in ("name", "instance", "component", "version", "part-of", "managed-by"):
            assert f"app.kubernetes.io/{key}" in labels, (manifest["kind"], manifest["metadata"]["name"], key)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_pod_meets_the_restricted_standard_as_the_apiserver_checks_it(
    helm_bin: Path, kubectl_bin: Path, kubeconfig: Path, namespace: str, values: dict[str, Any]
) -> None:
    """Server-side dry-run into a namespace that enforces "restricted": PodSecurity admission refuses a
    bad pod and warns about a bad pod template, so both fail this test."""
    kubectl(
        kubectl_bin,
        kubeconfig,
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    manifests = render(helm_bin, values, namespace=namespace)
    namespaced = [
        m for m in manifests if m["kind"] not in {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    ]
    pods = [where for where, _ in pod_specs(namespaced)]
    assert len(pods) >= 6, pods  # server, operator, migration and bucket Jobs, the two test pods at least
    applied = kubectl(
        kubectl_bin,
        kubeconfig,
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": namespaced}),
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    assert "PodSecurity" not in applied.stderr, applied.stderr


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rbac_has_no_wildcard_and_no_secrets(helm_bin: Path, values: dict[str, Any]) -> None:
    roles = [m for m in render(helm_bin, values) if m["kind"] in {"Role", "ClusterRole"}]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            assert "secrets" not in rule["resources"], (role["metadata"]["name"], rule)


def test_a_namespaced_operator_gets_roles_there_and_reads_only_crds_cluster_wide(helm_bin: Path) -> None:
    manifests = render(helm_bin, {"operator.watchNamespaces": ["team-a", "team-b"]})
    roles = [m for m in manifests if m["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    cluster_roles = [m for m in manifests if m["kind"] == "ClusterRole"]
    assert [r["rules"] for r in cluster_roles] == [
        [
            {
                "apiGroups": ["apiextensions.k8s.io"],
                "resources": ["customresourcedefinitions"],
                "verbs": ["get", "list", "watch"],
            }
        ]
    ]
    config = find(manifests, "ConfigMap", "-operator")["data"]
    assert config["MLPLATFORM_NAMESPACES"] == "team-a,team-b"


def server_config(manifests: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    deployment = find(manifests, "Deployment", "-mlflow")
    return env_of(container(deployment, "mlflow")), find(manifests, "ConfigMap", "-mlflow")["data"]


def test_bundled_stores_point_the_server_at_postgresql_and_minio(helm_bin: Path) -> None:
    manifests = render(helm_bin)
    env, config = server_config(manifests)
    assert (
        env["MLFLOW_BACKEND_STORE_URI"]
        == "postgresql+psycopg2://mlflow@mlp-mlplatform-postgresql:5432/mlflow"
    )
    assert env["MLPLATFORM_DB_PASSWORD"] == ("secret", "mlp-mlplatform-postgresql", "password")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://mlp-mlplatform-minio.mlp.svc:9000"
    assert env["AWS_ACCESS_KEY_ID"] == ("secret", "mlp-mlplatform-minio", "root-user")
    assert config["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://mlflow"
    assert {m["kind"] for m in manifests} >= {"StatefulSet"}
    migration = find(manifests, "Job", "-mlflow-migration")
    assert migration["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


def test_external_postgresql_and_s3(helm_bin: Path) -> None:
    manifests = render(
        helm_bin,
        {
            **EXTERNAL_POSTGRES_S3,
            "externalS3.endpoint": "https://s3.example.com",
            "artifacts.bucket": "team-models",
            "artifacts.prefix": "/mlflow/",
        },
    )
    env, config = server_config(manifests)
    assert env["MLFLOW_BACKEND_STORE_URI"] == "postgresql+psycopg2://mlflow@db.example.com:5432/mlflow"
    assert env["MLPLATFORM_DB_PASSWORD"] == env["PGPASSWORD"] == ("secret", "mlflow-db", "password")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "https://s3.example.com"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert env["AWS_SECRET_ACCESS_KEY"] == ("secret", "mlflow-s3", "AWS_SECRET_ACCESS_KEY")
    assert config["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://team-models/mlflow"
    assert not [m for m in manifests if m["kind"] == "StatefulSet"]
    assert not [m for m in manifests if m["kind"] == "Secret" and "postgresql" in m["metadata"]["name"]]
    migration = find(manifests, "Job", "-mlflow-migration")
    assert migration["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert (
        env_of(migration["spec"]["template"]["spec"]["containers"][0])["MLFLOW_BACKEND_STORE_URI"]
        == (env["MLFLOW_BACKEND_STORE_URI"])
    )


def test_aws_s3_needs_no_endpoint(helm_bin: Path) -> None:
    env, _ = server_config(render(helm_bin, EXTERNAL_POSTGRES_S3))
    assert "MLFLOW_S3_ENDPOINT_URL" not in env


@pytest.mark.parametrize(
    ("credential", "expected"),
    [
        (
            {},
            (
                "AZURE_STORAGE_CONNECTION_STRING",
                ("secret", "mlflow-azure", "AZURE_STORAGE_CONNECTION_STRING"),
            ),
        ),
        (
            {"externalAzure.accessKeyKey": "key"},
            ("AZURE_STORAGE_ACCESS_KEY", ("secret", "mlflow-azure", "key")),
        ),
    ],
)
def test_external_mysql_and_azure_blob(
    helm_bin: Path, credential: dict[str, Any], expected: tuple[str, Any]
) -> None:
    env, config = server_config(
        render(helm_bin, {**EXTERNAL_MYSQL_AZURE, "externalDatabase.port": 3307, **credential})
    )
    assert env["MLFLOW_BACKEND_STORE_URI"] == "mysql+pymysql://mlflow@mysql.example.com:3307/mlflow"
    assert env["MLPLATFORM_DB_PASSWORD"] == ("secret", "mlflow-db", "password")
    assert "PGPASSWORD" not in env
    assert config["MLFLOW_ARTIFACTS_DESTINATION"] == "wasbs://artifacts@mlplatformstore.blob.core.windows.net"
    name, value = expected
    assert env[name] == value
    assert not {"AWS_ACCESS_KEY_ID", "MLFLOW_S3_ENDPOINT_URL"} & env.keys()


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_no_credential_is_a_literal_value(helm_bin: Path, values: dict[str, Any]) -> None:
    for where, spec in pod_specs(render(helm_bin, values)):
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            for name, value in env_of(c).items():
                secret = any(word in name for word in CREDENTIAL_WORDS)
                if secret and not name.endswith("_FILE"):  # a path to a mounted Secret is no secret
                    assert isinstance(value, tuple), (where, name)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mlflow.replicas": 0}, "/mlflow/replicas"),
        ({"mlflow.workers": 0}, "/mlflow/workers"),
        (
            {"postgresql.enabled": False, "externalDatabase.enabled": True, "externalDatabase.host": "db"},
            "/externalDatabase/existingSecret",
        ),
        (
            {"externalS3.enabled": True, "externalS3.existingSecret": "s3"},
            "enable exactly one of minio.enabled, externalS3.enabled and externalAzure.enabled",
        ),
        ({"postgresql.enabled": False}, "set postgresql.enabled=true, or externalDatabase.enabled=true"),
        (
            {
                "externalDatabase.enabled": True,
                "externalDatabase.host": "db",
                "externalDatabase.existingSecret": "s",
            },
            "postgresql.enabled and externalDatabase.enabled are both true",
        ),
        ({"minio.enabled": False}, "no artifact store"),
        ({"mlflow.auth.enabled": True}, "/mlflow/auth/existingSecret"),
        ({"externalDatabase.type": "oracle"}, "/externalDatabase/type"),
        ({"mlflow.bogus": 1}, "additional properties 'bogus' not allowed"),
    ],
)
def test_values_that_cannot_work_are_refused_naming_the_value(
    helm_bin: Path, values: dict[str, Any], message: str
) -> None:
    assert message in render_error(helm_bin, values)


def pod_annotations(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        f"{m['kind']}/{m['metadata']['name']}": m["spec"]["template"]
        for m in manifests
        if m["kind"] in {"Deployment", "StatefulSet"}
    }


def test_a_changed_value_changes_only_the_pod_templates_that_read_it(helm_bin: Path) -> None:
    before = pod_annotations(render(helm_bin))
    after_workers = pod_annotations(render(helm_bin, {"mlflow.workers": 4}))
    assert [k for k in before if before[k] != after_workers[k]] == ["Deployment/mlp-mlplatform-mlflow"]
    after_operator = pod_annotations(render(helm_bin, {"operator.gitImage": "alpine/git:2.48.0"}))
    assert [k for k in before if before[k] != after_operator[k]] == ["Deployment/mlp-mlplatform-operator"]
