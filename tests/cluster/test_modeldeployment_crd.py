"""The ModelDeployment CRD on a real apiserver: it installs, documents itself in `kubectl explain`, fills
in its defaults, and `kubectl apply` refuses a bad ModelDeployment with a message that names the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from crds import apply_manifest, assert_refused, delete_field, edited, our_object, set_field
from kube import eventually
from mlplatform.api.modeldeployment import parse_spec

pytestmark = pytest.mark.cluster
KIND = "ModelDeployment"

Spec = dict[str, Any]

# Every field of the spec, each given (defaults included), so that what is stored equals what was sent.
FULL_SPEC: Spec = {
    "model": {"name": "wine-quality", "alias": "champion"},
    "image": "mlplatform/trainer-sklearn:0.1.0",
    "imagePullPolicy": "IfNotPresent",
    "replicas": 2,
    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    "autoscaling": {"minReplicas": 2, "maxReplicas": 10, "targetCPUUtilizationPercentage": 70},
    "rollout": {"maxUnavailable": 0, "maxSurge": "25%", "progressDeadlineSeconds": 120, "autoRollback": True},
    "pollIntervalSeconds": 15,
    "workers": 2,
    "server": "mlflow",
    "env": [
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tokens", "key": "token"}}},
    ],
    "envFrom": [{"configMapRef": {"name": "settings"}}],
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "serving", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"mlplatform.dev/modeldeployment": "wine"}},
                    },
                }
            ]
        }
    },
    "serviceAccountName": "model-server",
    "podSecurityContext": {"runAsUser": 1000, "fsGroup": 1000},
    "securityContext": {"readOnlyRootFilesystem": True},
    "imagePullSecrets": [{"name": "registry"}],
}

DEFAULT_ROLLOUT = {"maxUnavailable": 0, "maxSurge": 1, "progressDeadlineSeconds": 300, "autoRollback": True}


def _stored(run_kubectl: Callable[..., Any], namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        run_kubectl("get", "modeldeployment", name, "-n", namespace, "-o", "json").stdout
    )
    return found


def test_crd_is_established_with_its_names(crds: list[str], run_kubectl: Callable[..., Any]) -> None:
    assert "modeldeployments.mlplatform.dev" in crds
    resources = run_kubectl("api-resources", "--api-group=mlplatform.dev", "-o", "wide").stdout
    row = next(line.split() for line in resources.splitlines() if line.startswith("modeldeployments "))
    assert row[:5] == ["modeldeployments", "md", "mlplatform.dev/v1alpha1", "true", "ModelDeployment"]
    assert "mlplatform" in row[-1]  # categories


def test_full_manifest_is_accepted_as_given(
    crds: list[str], run_kubectl: Callable[..., Any], namespace: str
) -> None:
    result = apply_manifest(run_kubectl, namespace, our_object(KIND, "wine", FULL_SPEC))
    assert result.returncode == 0, result.stderr
    spec = _stored(run_kubectl, namespace, "wine")["spec"]
    # Everything given comes back as given: embedded Kubernetes types keep their fields.
    assert spec == FULL_SPEC
    # And the operator reads it as it is stored.
    parsed = parse_spec(spec)
    assert parsed.model.resolved_from == "alias/champion"
    assert parsed.autoscaling is not None
    assert parsed.autoscaling.target_cpu_utilization_percentage == 70
    assert parsed.rollout.max_surge == "25%"


def test_defaults_are_filled_in_by_the_apiserver(
    crds: list[str], run_kubectl: Callable[..., Any], namespace: str
) -> None:
    minimal = {"model": {"name": "wine-quality", "stage": "Production"}}
    assert apply_manifest(run_kubectl, namespace, our_object(KIND, "minimal", minimal)).returncode == 0
    assert _stored(run_kubectl, namespace, "minimal")["spec"] == {
        **minimal,
        "replicas": 1,
        "pollIntervalSeconds": 30,
        "workers": 1,
        "server": "mlplatform",
        "rollout": DEFAULT_ROLLOUT,
    }
    scaled = {**minimal, "autoscaling": {"maxReplicas": 4}, "rollout": {"progressDeadlineSeconds": 60}}
    assert apply_manifest(run_kubectl, namespace, our_object(KIND, "scaled", scaled)).returncode == 0
    spec = _stored(run_kubectl, namespace, "scaled")["spec"]
    assert spec["autoscaling"] == {"minReplicas": 1, "maxReplicas": 4, "targetCPUUtilizationPercentage": 80}
    assert spec["rollout"] == {**DEFAULT_ROLLOUT, "progressDeadlineSeconds": 60}
    # The model's defaults are the CRD's: parsing the sparse spec gives what the apiserver stored.
    assert parse_spec(scaled) == parse_spec(spec)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"model": {"name": "m", "alias": "champion"}}, id="alias"),
        pytest.param({"model": {"name": "m", "stage": "None"}}, id="stage-none"),
        pytest.param({"model": {"name": "m", "version": "12"}}, id="version"),
        pytest.param({"model": {"name": "m", "alias": "v1-candidate"}}, id="alias-starting-with-v"),
        pytest.param({"model": {"name": "m", "alias": "champion"}, "image": ""}, id="empty-image"),
        pytest.param({"model": {"name": "m", "alias": "champion"}, "replicas": 0}, id="zero-replicas"),
        pytest.param(
            {"model": {"name": "m", "alias": "a"}, "autoscaling": {"minReplicas": 3, "maxReplicas": 3}},
            id="min-equals-max",
        ),
        pytest.param(
            {"model": {"name": "m", "alias": "a"}, "rollout": {"maxUnavailable": "25%", "maxSurge": 0}},
            id="percent-unavailable-no-surge",
        ),
        pytest.param(
            {
                "model": {"name": "m", "alias": "a"},
                "env": [{"name": "MLFLOW_TRACKING_TOKEN_FILE", "value": "x"}],
            },
            id="other-mlflow-env",
        ),
    ],
)
def test_valid_variants_are_accepted(
    crds: list[str], run_kubectl: Callable[..., Any], namespace: str, spec: Spec
) -> None:
    result = apply_manifest(run_kubectl, namespace, our_object(KIND, "variant", spec))
    assert result.returncode == 0, result.stderr


def test_explain_documents_the_selector_and_the_rollout(
    crds: list[str], run_kubectl: Callable[..., Any]
) -> None:
    def explained() -> str:
        # The OpenAPI document follows a new or changed CRD a moment after it is Established.
        result = run_kubectl("explain", "modeldeployment.spec.model", check=False)
        text = " ".join(result.stdout.split())
        return text if result.returncode == 0 and "exactly one of alias" in text else ""

    text: str = eventually(explained, timeout=60, what="kubectl explain modeldeployment.spec.model")
    assert "KIND: ModelDeployment" in text
    assert "GROUP: mlplatform.dev" in text
    assert "VERSION: v1alpha1" in text
    for field in ("name", "alias", "stage", "version"):
        assert f"{field} <" in text, field
    assert "MLflow reserves" in text

    rollout = " ".join(run_kubectl("explain", "modeldeployment.spec.rollout").stdout.split())
    for field in ("maxUnavailable", "maxSurge", "progressDeadlineSeconds", "autoRollback"):
        assert f"{field} <" in rollout, field
    assert "Default 300" in rollout
    status = " ".join(run_kubectl("explain", "modeldeployment.status.failedVersion").stdout.split())
    assert "rolled back from" in status


INVALID = [
    pytest.param(
        set_field("model.version", "7"),
        ["spec.model", "only one of alias, stage or version"],
        id="alias-and-version",
    ),
    pytest.param(
        set_field("model", {"name": "m", "stage": "Production", "version": "3"}),
        ["spec.model", "only one of alias, stage or version"],
        id="stage-and-version",
    ),
    pytest.param(
        set_field("model", {"name": "m"}),
        ["spec.model", "needs one of alias, stage or version"],
        id="no-selector",
    ),
    pytest.param(delete_field("model"), ["spec.model", "Required value"], id="no-model"),
    pytest.param(delete_field("model.name"), ["spec.model.name", "Required value"], id="no-model-name"),
    pytest.param(
        set_field("replicas", -1), ["spec.replicas", "greater than or equal to 0"], id="negative-replicas"
    ),
    pytest.param(
        set_field("autoscaling", {"minReplicas": 5, "maxReplicas": 3}),
        ["spec.autoscaling.minReplicas", "autoscaling.minReplicas must be less than or equal to"],
        id="min-above-max",
    ),
    pytest.param(
        set_field("autoscaling", {"minReplicas": 2}),
        ["spec.autoscaling.maxReplicas", "Required value"],
        id="no-max",
    ),
    pytest.param(
        set_field("autoscaling.targetCPUUtilizationPercentage", 101),
        ["spec.autoscaling.targetCPUUtilizationPercentage", "less than or equal to 100"],
        id="target-above-100",
    ),
    pytest.param(
        set_field("autoscaling.minReplicas", 0),
        ["spec.autoscaling.minReplicas", "greater than or equal to 1"],
        id="zero-min-replicas",
    ),
    pytest.param(set_field("model.alias", "latest"), ["spec.model.alias", "reserves"], id="alias-latest"),
    pytest.param(set_field("model.alias", "V3"), ["spec.model.alias", "reserves"], id="alias-v3"),
    pytest.param(
        set_field("model.alias", "my champion"), ["spec.model.alias", "should match"], id="alias-chars"
    ),
    pytest.param(
        set_field("model", {"name": "m", "stage": "Prod"}),
        ["spec.model.stage", "Unsupported value", "Production"],
        id="bad-stage",
    ),
    pytest.param(
        set_field("model", {"name": "m", "version": "07"}),
        ["spec.model.version", "should match"],
        id="version-07",
    ),
    pytest.param(
        set_field("model", {"name": "m", "version": 7}),
        ["spec.model.version", "must be of type string"],
        id="version-unquoted",
    ),
    pytest.param(
        set_field("env", [{"name": "MLFLOW_TRACKING_URI", "value": "http://elsewhere"}]),
        ["spec.env", "MLFLOW_TRACKING_URI", "set by the operator"],
        id="reserved-env-name",
    ),
    pytest.param(
        set_field("pollIntervalSeconds", 1),
        ["spec.pollIntervalSeconds", "greater than or equal to 5"],
        id="poll-too-often",
    ),
    pytest.param(set_field("workers", 0), ["spec.workers", "greater than or equal to 1"], id="no-workers"),
    pytest.param(set_field("server", "seldon"), ["spec.server", "Unsupported value"], id="unknown-server"),
    pytest.param(
        set_field("rollout.progressDeadlineSeconds", 5),
        ["spec.rollout.progressDeadlineSeconds", "greater than or equal to 10"],
        id="short-deadline",
    ),
    pytest.param(
        set_field("rollout.maxSurge", "0%"),
        ["spec.rollout.maxSurge", "rollout.maxUnavailable and rollout.maxSurge cannot both be 0"],
        id="surge-and-unavailable-zero",
    ),
    pytest.param(
        set_field("rollout.maxUnavailable", "half"),
        ["spec.rollout.maxUnavailable", "should match"],
        id="bad-percent",
    ),
    pytest.param(
        set_field("rollout.maxSurge", -1),
        ["spec.rollout.maxSurge", "greater than or equal to 0"],
        id="negative-surge",
    ),
    pytest.param(
        set_field("imagePullPolicy", "Sometimes"),
        ["spec.imagePullPolicy", "Unsupported value"],
        id="pull-policy",
    ),
    pytest.param(
        set_field("resources.limits.memory", "lots"),
        ["spec.resources.limits.memory", "should match"],
        id="quantity",
    ),
    pytest.param(set_field("replica", 3), ['unknown field "spec.replica"'], id="unknown-field"),
]


@pytest.mark.parametrize(("change", "expected"), INVALID)
def test_invalid_manifest_is_rejected_naming_the_field(
    crds: list[str],
    run_kubectl: Callable[..., Any],
    namespace: str,
    change: Callable[[Spec], None],
    expected: list[str],
) -> None:
    assert_refused(run_kubectl, namespace, our_object(KIND, "bad", edited(FULL_SPEC, change)), expected)


@pytest.mark.parametrize("name", ["7up", "wine.v2", "x" * 64])
def test_name_must_be_a_dns_label(
    crds: list[str], run_kubectl: Callable[..., Any], namespace: str, name: str
) -> None:
    # The operator names the Service after the ModelDeployment, and a Service name is a DNS label.
    assert_refused(
        run_kubectl, namespace, our_object(KIND, name, FULL_SPEC), ["metadata.name must be a DNS label"]
    )


def test_status_is_a_subresource_shown_in_columns(
    crds: list[str], run_kubectl: Callable[..., Any], namespace: str
) -> None:
    manifest = our_object(KIND, "shown", {"model": {"name": "wine-quality", "alias": "champion"}})
    assert apply_manifest(run_kubectl, namespace, manifest).returncode == 0
    # Status in the main resource is ignored: only the status subresource writes it. (An operator running
    # against the same cluster may write a status of its own: the model does not exist.)
    run_kubectl(
        "patch",
        "modeldeployment",
        "shown",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"status": {"modelVersion": "999"}}',
    )
    assert _stored(run_kubectl, namespace, "shown").get("status", {}).get("modelVersion") != "999"
    url = f"http://shown.{namespace}.svc.cluster.local/invocations"
    status = {
        "observedGeneration": 1,
        "modelVersion": "7",
        "targetVersion": "7",
        "failedVersion": "8",
        "resolvedFrom": "alias/champion",
        "image": "mlplatform/trainer-sklearn:0.1.0",
        "modelUri": "models:/wine-quality/7",
        "url": url,
        "replicas": 2,
        "readyReplicas": 2,
        "deploymentName": "shown",
        "serviceName": "shown",
        "lastResolved": "2025-01-01T00:10:00Z",
        "history": [
            {"version": "6", "result": "Replaced", "at": "2025-01-01T00:05:00Z"},
            {"version": "7", "result": "Serving", "at": "2025-01-01T00:05:00Z"},
            {"version": "8", "result": "RolledBack", "at": "2025-01-01T00:09:00Z", "message": "OOMKilled"},
        ],
        "conditions": [
            {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": "",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
                "observedGeneration": 1,
            }
            for kind, value, reason in (
                ("Ready", "True", "Serving"),
                ("Progressing", "False", "Complete"),
                ("Degraded", "True", "RolledBack"),
            )
        ],
    }

    def written() -> bool:
        # A running operator writes its own status once, soon after the object appears, then only when
        # what it sees changes: write again until ours stays.
        run_kubectl(
            "patch",
            "modeldeployment",
            "shown",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )
        return bool(_stored(run_kubectl, namespace, "shown")["status"] == status)

    eventually(written, timeout=30, interval=1, what="the status written through the subresource")

    table = run_kubectl("get", "md", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "MODEL", "SELECTOR", "VERSION", "READY", "URL", "AGE"]
    assert table[1].split()[:6] == ["shown", "wine-quality", "alias/champion", "7", "True", url]
    # The category lists it with the platform's other resources.
    listed = run_kubectl("get", "mlplatform", "-n", namespace, "-o", "name").stdout.split()
    assert "modeldeployment.mlplatform.dev/shown" in listed

    too_long = [{"version": str(i), "result": "Replaced", "at": "2025-01-01T00:00:00Z"} for i in range(11)]
    for bad, field in (
        ({"history": [{"version": "9", "result": "Done"}]}, "status.history[0].result"),
        ({"history": too_long}, "status.history"),
        ({"lastResolved": "yesterday"}, "status.lastResolved"),
    ):
        refused = run_kubectl(
            "patch",
            "modeldeployment",
            "shown",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": bad}),
            check=False,
        )
        assert refused.returncode != 0, bad
        assert field in refused.stderr, refused.stderr
