"""The TrainingRun CRD on a real apiserver: it installs, documents itself in `kubectl explain`, fills in
its defaults, and `kubectl apply` refuses a bad TrainingRun with a message that names the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from crds import apply_manifest, assert_refused, delete_field, edited, our_object, set_field
from kube import eventually

pytestmark = pytest.mark.cluster
KIND = "TrainingRun"

Spec = dict[str, Any]

FULL_SPEC: Spec = {
    "image": "mlplatform/trainer-sklearn:0.1.0",
    "imagePullPolicy": "IfNotPresent",
    "command": ["python", "train.py"],
    "source": {
        "git": {
            "repository": "https://example.com/org/wine.git",
            "path": "wine",
            "credentialsSecret": {"name": "git-credentials"},
        }
    },
    "parameters": {"alpha": "0.5", "l1_ratio": "0.1", "model/max depth": "3"},
    "experiment": "wine-quality",
    "tags": {"team": "a"},
    "keyMetric": "rmse",
    "model": {
        "name": "wine-quality",
        "promote": {"alias": "champion", "when": "metrics.rmse < 0.8", "betterThan": {"metric": "rmse"}},
    },
    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"nvidia.com/gpu": 1}},
    "env": [
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tokens", "key": "token"}}},
    ],
    "envFrom": [{"configMapRef": {"name": "settings"}}],
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["training"]}]}
                ]
            }
        }
    },
    "serviceAccountName": "trainer",
    "podSecurityContext": {"runAsUser": 1000, "fsGroup": 1000},
    "securityContext": {"readOnlyRootFilesystem": True},
    "imagePullSecrets": [{"name": "registry"}],
    "activeDeadlineSeconds": 3600,
    "ttlSecondsAfterFinished": 86400,
}


def test_crd_is_established_with_its_names(crds: list[str], run_kubectl: Callable[..., Any]) -> None:
    assert "trainingruns.mlplatform.dev" in crds
    resources = run_kubectl("api-resources", "--api-group=mlplatform.dev", "-o", "wide").stdout
    row = next(line.split() for line in resources.splitlines() if line.startswith("trainingruns "))
    assert row[:5] == ["trainingruns", "tr", "mlplatform.dev/v1alpha1", "true", "TrainingRun"]
    assert "mlplatform" in row[-1]  # categories


def test_full_manifest_is_accepted_and_defaulted(
    crds: list[str], run_kubectl: Callable[..., Any], namespace: str
) -> None:
    result = apply_manifest(run_kubectl, namespace, our_object(KIND, "wine-enet-01", FULL_SPEC))
    assert result.returncode == 0, result.stderr
    stored = json.loads(
        run_kubectl("get", "trainingrun", "wine-enet-01", "-n", namespace, "-o", "json").stdout
    )
    spec = stored["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["suspend"] is False
    assert spec["model"]["artifactPath"] == "model"
    assert spec["source"]["git"]["revision"] == "main"
    assert spec["model"]["promote"]["betterThan"]["direction"] == "lower"
    # Everything given comes back as given: embedded Kubernetes types keep their fields.
    defaults = {"backoffLimit", "suspend"}
    assert {k: v for k, v in spec.items() if k not in defaults | {"source", "model"}} == {
        k: v for k, v in FULL_SPEC.items() if k not in {"source", "model"}
    }


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"image": "trainer:1"}, id="image-only"),
        pytest.param(
            {"image": "trainer:1", "entryPoint": "main", "source": {"configMap": {"name": "code"}}},
            id="mlproject-from-configmap",
        ),
        pytest.param(
            {"image": "trainer:1", "source": {"git": {"repository": "git@github.com:org/repo.git"}}},
            id="scp-like-ssh-url",
        ),
        pytest.param(
            {"image": "trainer:1", "source": {"git": {"repository": "ssh://git@example.com:2222/org/r"}}},
            id="ssh-url-with-port",
        ),
        pytest.param(
            {"image": "trainer:1", "model": {"name": "m", "promote": {"stage": "Production"}}},
            id="promote-to-stage",
        ),
        pytest.param(
            {"image": "trainer:1", "model": {"name": "m", "promote": {"alias": "v1-candidate"}}},
            id="alias-starting-with-v",
        ),
    ],
)
def test_valid_variants_are_accepted(
    crds: list[str], run_kubectl: Callable[..., Any], namespace: str, spec: Spec
) -> None:
    result = apply_manifest(run_kubectl, namespace, our_object(KIND, "variant", spec))
    assert result.returncode == 0, result.stderr


def test_explain_documents_the_promotion_gate(crds: list[str], run_kubectl: Callable[..., Any]) -> None:
    def explained() -> str:
        # The OpenAPI document follows a new or changed CRD a moment after it is Established.
        result = run_kubectl("explain", "trainingrun.spec.model.promote", check=False)
        text = " ".join(result.stdout.split())
        return text if result.returncode == 0 and "betterThan" in text else ""

    text: str = eventually(explained, timeout=60, what="kubectl explain trainingrun.spec.model.promote")
    assert "KIND: TrainingRun" in text
    assert "GROUP: mlplatform.dev" in text
    assert "VERSION: v1alpha1" in text
    assert "The promotion gate" in text
    for field in ("alias", "stage", "when", "betterThan"):
        assert f"{field} <" in text, field
    assert "MLflow reserves" in text
    assert "metrics.rmse < 0.8" in text

    direction = run_kubectl("explain", "trainingrun.spec.model.promote.betterThan.direction").stdout
    assert 'Default "lower"' in " ".join(direction.split())


INVALID = [
    pytest.param(set_field("image", 3), ["spec.image", "must be of type string"], id="image-not-a-string"),
    pytest.param(delete_field("image"), ["spec.image", "Required value"], id="no-image"),
    pytest.param(
        set_field("parameters", {"a": 1}),
        ["spec.parameters.a", "must be of type string"],
        id="param-not-a-string",
    ),
    pytest.param(
        set_field("entryPoint", "main"),
        ["spec.entryPoint", "mutually exclusive"],
        id="command-and-entrypoint",
    ),
    pytest.param(
        set_field("source", {}), ["spec.source", "needs one of configMap or git"], id="no-source-kind"
    ),
    pytest.param(
        set_field("source.configMap", {"name": "code"}),
        ["spec.source", "only one of configMap or git"],
        id="two-source-kinds",
    ),
    pytest.param(
        set_field("activeDeadlineSeconds", -5),
        ["spec.activeDeadlineSeconds", "greater than or equal to 1"],
        id="negative-deadline",
    ),
    pytest.param(
        set_field("backoffLimit", -1),
        ["spec.backoffLimit", "greater than or equal to 0"],
        id="negative-backoff",
    ),
    pytest.param(set_field("imagee", "typo:1"), ['unknown field "spec.imagee"'], id="unknown-field"),
    pytest.param(
        set_field("model.promote.stage", "Production"),
        ["spec.model.promote", "only one of alias or stage"],
        id="promote-alias-and-stage",
    ),
    pytest.param(
        set_field("model.promote", {"when": "metrics.rmse < 1"}),
        ["spec.model.promote", "needs one of alias or stage"],
        id="promote-neither-alias-nor-stage",
    ),
    pytest.param(
        set_field("model.promote", {"stage": "Prod"}),
        ["spec.model.promote.stage", "Unsupported value", "Production"],
        id="bad-stage",
    ),
    pytest.param(
        set_field("model.promote.alias", "Latest"),
        ["spec.model.promote.alias", "reserves"],
        id="alias-latest",
    ),
    pytest.param(
        set_field("model.promote.alias", "v3"), ["spec.model.promote.alias", "reserves"], id="alias-v3"
    ),
    pytest.param(
        set_field("model.promote.alias", "my champion"),
        ["spec.model.promote.alias", "should match"],
        id="alias-chars",
    ),
    pytest.param(
        set_field("model.promote.betterThan.direction", "up"),
        ["spec.model.promote.betterThan.direction", "Unsupported value"],
        id="bad-direction",
    ),
    pytest.param(
        set_field("env", [{"name": "MLFLOW_RUN_ID", "value": "x"}]),
        ["spec.env", "set by the operator"],
        id="reserved-env-name",
    ),
    pytest.param(
        set_field("tags", {"mlflow.user": "me"}),
        ["spec.tags", "must not start with", "mlflow."],
        id="mlflow-tag",
    ),
    pytest.param(
        set_field("tags", {"mlplatform.dev/run": "x"}),
        ["spec.tags", "set by the operator"],
        id="operator-tag-prefix",
    ),
    pytest.param(
        set_field("parameters", {"alpha;rm": "1"}),
        ["spec.parameters", "MLflow param names"],
        id="bad-param-name",
    ),
    pytest.param(
        set_field("parameters", {f"p{i}": "1" for i in range(101)}),
        ["spec.parameters", "must have at most 100 items"],
        id="too-many-params",
    ),
    pytest.param(
        set_field("source.git.repository", "ftp://example.com/repo.git"),
        ["spec.source.git.repository", "should match"],
        id="bad-repository-scheme",
    ),
    pytest.param(
        set_field("source.git.repository", "https://user:token@example.com/org/repo.git"),
        ["spec.source.git.repository", "credentialsSecret"],
        id="credentials-in-url",
    ),
    pytest.param(
        set_field("source.git.path", "../other"), ["spec.source.git.path", "'..'"], id="path-escapes"
    ),
    pytest.param(
        set_field("source.git.path", "/etc"), ["spec.source.git.path", "not absolute"], id="absolute-path"
    ),
    pytest.param(set_field("command", []), ["spec.command", "at least 1 items"], id="empty-command"),
    pytest.param(
        set_field("imagePullPolicy", "Sometimes"), ["spec.imagePullPolicy", "Unsupported value"], id="pull"
    ),
    pytest.param(delete_field("model.name"), ["spec.model.name", "Required value"], id="model-without-name"),
    pytest.param(
        set_field("resources.limits.memory", "lots"),
        ["spec.resources.limits.memory", "should match"],
        id="quantity",
    ),
    pytest.param(
        set_field("experiment", "x" * 501),
        ["spec.experiment", "may not be more than 500"],
        id="long-experiment",
    ),
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


def test_status_is_a_subresource_shown_in_columns(
    crds: list[str], run_kubectl: Callable[..., Any], namespace: str
) -> None:
    assert (
        apply_manifest(run_kubectl, namespace, our_object(KIND, "shown", {"image": "trainer:1"})).returncode
        == 0
    )
    # Status in the main resource is ignored: only the status subresource writes it.
    run_kubectl(
        "patch",
        "trainingrun",
        "shown",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"status": {"phase": "Failed"}}',
    )
    assert "status" not in json.loads(run_kubectl("get", "tr", "shown", "-n", namespace, "-o", "json").stdout)
    status = {
        "phase": "Succeeded",
        "observedGeneration": 1,
        "jobName": "shown",
        "mlflow": {"experimentId": "4", "experimentName": namespace, "runId": "abc123", "runUrl": "http://x"},
        "metrics": {"rmse": 0.74, "epochs": 3},
        "keyMetric": "rmse=0.74",
        "model": {
            "name": "wine",
            "version": "7",
            "promotedTo": "champion",
            "promotion": {"promoted": True, "reason": "Promoted", "message": "rmse 0.74 < 0.8"},
        },
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Succeeded",
                "message": "the run finished",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
                "observedGeneration": 1,
            }
        ],
        "startTime": "2025-01-01T00:00:00Z",
        "completionTime": "2025-01-01T00:05:00Z",
    }
    run_kubectl(
        "patch",
        "trainingrun",
        "shown",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    stored = json.loads(run_kubectl("get", "tr", "shown", "-n", namespace, "-o", "json").stdout)
    assert stored["status"] == status

    table = run_kubectl("get", "tr", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "RUN", "METRIC", "VERSION", "AGE"]
    assert table[1].split()[:5] == ["shown", "Succeeded", "abc123", "rmse=0.74", "7"]
    wide = run_kubectl("get", "tr", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "PHASE", "RUN", "METRIC", "VERSION", "PROMOTED", "AGE"]
    assert wide[1].split()[5] == "champion"
    # The category lists it with the platform's other resources.
    listed = run_kubectl("get", "mlplatform", "-n", namespace, "-o", "name").stdout.split()
    assert "trainingrun.mlplatform.dev/shown" in listed

    bad = run_kubectl(
        "patch",
        "trainingrun",
        "shown",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Done"}}',
        check=False,
    )
    assert bad.returncode != 0
    assert "status.phase" in bad.stderr
