"""The CRDs in crds/ are well-formed: documented at every depth, structural, with the names and columns
the users rely on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from crds import crd_files, load_crds

CRDS = load_crds()
TRAININGRUN = "trainingruns.mlplatform.dev"


def _schemas(crd: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for version in crd["spec"]["versions"]:
        yield version["name"], version["schema"]["openAPIV3Schema"]


def _walk(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below `schema` (itself included) with its path."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")
    for key in ("anyOf", "allOf", "oneOf"):
        for i, sub in enumerate(schema.get(key, [])):
            yield from _walk(sub, f"{path}<{key}{i}>")


def _properties(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every named property at every depth, with its path."""
    for path, node in _walk(schema, ""):
        for name, sub in node.get("properties", {}).items():
            yield f"{path}.{name}", sub


def _trainingrun_schema() -> dict[str, Any]:
    schema: dict[str, Any] = CRDS[TRAININGRUN]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _at(path: str) -> dict[str, Any]:
    node = _trainingrun_schema()
    for part in path.strip(".").split("."):
        node = node["properties"][part]
    return node


def test_crds_folder_holds_the_trainingrun_crd() -> None:
    assert crd_files(), "no YAML file in crds/"
    assert TRAININGRUN in CRDS


@pytest.mark.parametrize("name", sorted(CRDS))
def test_every_property_has_a_description(name: str) -> None:
    missing = [
        f"{version}:{path}"
        for version, schema in _schemas(CRDS[name])
        for path, prop in _properties(schema)
        # The root metadata may only say `type: object` (the apiserver documents ObjectMeta itself).
        if path != ".metadata" and not str(prop.get("description", "")).strip()
    ]
    assert not missing, f"{name}: properties without a description: {missing}"


@pytest.mark.parametrize("name", sorted(CRDS))
def test_schema_is_structural(name: str) -> None:
    problems = []
    for version, schema in _schemas(CRDS[name]):
        for path, node in _walk(schema, ""):
            where = f"{version}:{path or '<root>'}"
            if "<" in path:  # inside anyOf/allOf/oneOf: no type, no structure of its own
                continue
            if node.get("x-kubernetes-int-or-string"):
                continue
            if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                problems.append(f"{where}: no type")
            if node.get("type") == "object" and not node.get("x-kubernetes-preserve-unknown-fields"):
                if "properties" not in node and "additionalProperties" not in node and path != ".metadata":
                    problems.append(f"{where}: object without properties or additionalProperties")
                if "properties" in node and "additionalProperties" in node:
                    problems.append(f"{where}: both properties and additionalProperties")
            if path == ".metadata" and set(node) != {"type"}:
                problems.append(f"{where}: the apiserver allows only `type: object` here")
            if node.get("type") == "array" and "items" not in node:
                problems.append(f"{where}: array without items")
            for field in node.get("required", []):
                if field not in node.get("properties", {}):
                    problems.append(f"{where}: required {field!r} is not a property")
    assert not problems, f"{name}: {problems}"


@pytest.mark.parametrize("name", sorted(CRDS))
def test_one_storage_version_and_status_subresource(name: str) -> None:
    versions = CRDS[name]["spec"]["versions"]
    assert sum(1 for v in versions if v.get("storage")) == 1
    for version in versions:
        assert "status" in version.get("subresources", {}), f"{name} {version['name']}: no status subresource"


def test_trainingrun_names() -> None:
    spec = CRDS[TRAININGRUN]["spec"]
    assert spec["group"] == "mlplatform.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "TrainingRun"
    assert spec["names"]["plural"] == "trainingruns"
    assert spec["names"]["singular"] == "trainingrun"
    assert spec["names"]["shortNames"] == ["tr"]
    assert spec["names"]["categories"] == ["mlplatform"]
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [("v1alpha1", True, True)]


def test_trainingrun_printer_columns() -> None:
    columns = CRDS[TRAININGRUN]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["jsonPath"], c.get("priority", 0)) for c in columns] == [
        ("Phase", ".status.phase", 0),
        ("Run", ".status.mlflow.runId", 0),
        ("Metric", ".status.keyMetric", 0),
        ("Version", ".status.model.version", 0),
        ("Promoted", ".status.model.promotedTo", 1),
        ("Age", ".metadata.creationTimestamp", 0),
    ]
    for column in columns:
        if column["jsonPath"].startswith(".status."):
            # The column shows a field the status schema has, of the column's type.
            assert _at(column["jsonPath"])["type"] == column["type"], column["name"]
    assert columns[-1]["type"] == "date"


def test_trainingrun_spec_shape() -> None:
    spec = _at("spec")
    assert spec["required"] == ["image"]
    assert _at("spec.image")["minLength"] == 1
    assert _at("spec.imagePullPolicy")["enum"] == ["Always", "IfNotPresent", "Never"]
    assert _at("spec.command")["minItems"] == 1
    assert _at("spec.parameters")["additionalProperties"]["type"] == "string"
    assert _at("spec.parameters")["maxProperties"] == 100
    assert _at("spec.experiment")["maxLength"] == 500
    assert "default" not in _at("spec.experiment")  # the namespace's name, computed by the operator
    assert _at("spec.model")["required"] == ["name"]
    assert _at("spec.model.name")["maxLength"] == 256
    assert _at("spec.model.promote.stage")["enum"] == ["Staging", "Production", "Archived"]
    assert _at("spec.model.promote.when")["maxLength"] == 1000
    assert _at("spec.model.promote.betterThan")["required"] == ["metric"]
    assert _at("spec.model.promote.betterThan.direction")["enum"] == ["lower", "higher"]
    assert _at("spec.source.git")["required"] == ["repository"]
    assert _at("spec.source.configMap")["required"] == ["name"]
    for quantities in ("limits", "requests"):
        values = _at(f"spec.resources.{quantities}")["additionalProperties"]
        assert values["x-kubernetes-int-or-string"] is True
    assert (_at("spec.backoffLimit")["minimum"], _at("spec.activeDeadlineSeconds")["minimum"]) == (0, 1)
    assert _at("spec.ttlSecondsAfterFinished")["minimum"] == 0


def test_trainingrun_defaults() -> None:
    assert _at("spec.backoffLimit")["default"] == 0
    assert _at("spec.suspend")["default"] is False
    assert _at("spec.model.artifactPath")["default"] == "model"
    assert _at("spec.source.git.revision")["default"] == "main"
    assert _at("spec.model.promote.betterThan.direction")["default"] == "lower"


def test_trainingrun_preserves_unknown_fields_only_in_embedded_kubernetes_types() -> None:
    preserved = sorted(
        path
        for path, node in _walk(_trainingrun_schema(), "")
        if node.get("x-kubernetes-preserve-unknown-fields")
    )
    assert preserved == [
        ".spec.affinity",
        ".spec.envFrom[]",
        ".spec.env[].valueFrom",
        ".spec.podSecurityContext",
        ".spec.securityContext",
        ".spec.tolerations[]",
    ]
    # Leaving it out prunes unknown fields; the apiserver refuses an explicit false.
    assert "x-kubernetes-preserve-unknown-fields" not in _at("status")


def test_trainingrun_status_shape() -> None:
    status = _at("status")
    assert set(status["properties"]) == {
        "phase",
        "conditions",
        "observedGeneration",
        "jobName",
        "mlflow",
        "metrics",
        "keyMetric",
        "model",
        "startTime",
        "completionTime",
    }
    assert _at("status.phase")["enum"] == ["Pending", "Running", "Succeeded", "Failed"]
    conditions = _at("status.conditions")
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert set(_at("status.mlflow")["properties"]) == {"experimentId", "experimentName", "runId", "runUrl"}
    assert _at("status.metrics")["additionalProperties"]["type"] == "number"
    assert set(_at("status.model.promotion")["properties"]) == {"promoted", "reason", "message"}
    for field in ("startTime", "completionTime"):
        assert _at(f"status.{field}")["format"] == "date-time"


def test_trainingrun_cel_rules_have_messages_and_bounded_inputs() -> None:
    for path, node in _walk(_trainingrun_schema(), ""):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule.get("message", "").strip(), f"{path}: rule {rule['rule']!r} has no message"
            if ".all(" in rule["rule"] or ".exists(" in rule["rule"]:
                bound = "maxItems" if node["type"] == "array" else "maxProperties"
                assert bound in node, f"{path}: CEL iterates over it, so it needs {bound}"
    env_rule = _at("spec.env")["x-kubernetes-validations"][0]
    for name in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_EXPERIMENT_NAME",
        "MLFLOW_EXPERIMENT_ID",
        "MLFLOW_RUN_ID",
        "MLPLATFORM_PARAMETERS",
    ):
        assert name in env_rule["rule"]
    assert "set by the operator" in env_rule["message"]
