"""The CRDs in crds/ are well-formed: documented at every depth, structural, with the names and columns
the users rely on, and in step with the spec models the operator reads them with (fields, types, bounds,
enums, defaults)."""

from __future__ import annotations

import re
import types
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from crds import crd_files, load_crds
from mlplatform import names
from mlplatform.api.modeldeployment import HISTORY_LIMIT, ModelDeploymentSpec, Outcome
from mlplatform.api.trainingrun import TrainingRunSpec

CRDS = load_crds()
TRAININGRUN = "trainingruns.mlplatform.dev"
MODELDEPLOYMENT = "modeldeployments.mlplatform.dev"
# The spec model the operator reads each resource with: the CRD and the model must not drift apart.
SPEC_MODELS: dict[str, type[BaseModel]] = {TRAININGRUN: TrainingRunSpec, MODELDEPLOYMENT: ModelDeploymentSpec}


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


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = CRDS[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _trainingrun_schema() -> dict[str, Any]:
    return _schema(TRAININGRUN)


def _at(path: str, crd: str = TRAININGRUN) -> dict[str, Any]:
    """The schema node of a dotted path; `[?(...)]` (a printer column's filter) steps into the items."""
    node = _schema(crd)
    for part in re.sub(r"\[\?\(.*?\)\]", "[]", path).strip(".").split("."):
        name, _, rest = part.partition("[")
        node = node["properties"][name]
        if rest:
            node = node["items"]
    return node


def _md(path: str) -> dict[str, Any]:
    return _at(path, MODELDEPLOYMENT)


def test_crds_folder_holds_both_crds() -> None:
    assert crd_files(), "no YAML file in crds/"
    assert set(CRDS) == {TRAININGRUN, MODELDEPLOYMENT}
    assert set(SPEC_MODELS) == set(CRDS)


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


@pytest.mark.parametrize("name", sorted(CRDS))
def test_cel_rules_have_messages_and_bounded_inputs(name: str) -> None:
    for path, node in _walk(_schema(name), ""):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule.get("message", "").strip(), f"{path}: rule {rule['rule']!r} has no message"
            if ".all(" in rule["rule"] or ".exists(" in rule["rule"]:
                bound = "maxItems" if node["type"] == "array" else "maxProperties"
                assert bound in node, f"{path}: CEL iterates over it, so it needs {bound}"
            if ".matches(" in rule["rule"] and node.get("type") == "string":
                assert "maxLength" in node, f"{path}: CEL matches a regex on it, so it needs maxLength"


@pytest.mark.parametrize("name", sorted(CRDS))
def test_printer_columns_show_fields_of_the_schema(name: str) -> None:
    columns = CRDS[name]["spec"]["versions"][0]["additionalPrinterColumns"]
    for column in columns:
        assert column["type"] in ("string", "integer", "number", "boolean", "date"), column["name"]
        if column["jsonPath"] != ".metadata.creationTimestamp":
            # The column shows a field the schema has, of the column's type.
            assert _at(column["jsonPath"], name)["type"] == column["type"], column["name"]
    assert (columns[-1]["name"], columns[-1]["type"]) == ("Age", "date")


def test_trainingrun_reserved_env_names() -> None:
    env_rule = _at("spec.env")["x-kubernetes-validations"][0]
    for name in names.OPERATOR_ENV:
        assert f"'{name}'" in env_rule["rule"]
        assert name in env_rule["message"]
    assert "set by the operator" in env_rule["message"]


# --- the CRDs and the spec models the operator reads them with ----------------------------------------


def _unwrap_optional(annotation: Any) -> Any:
    """`X | None` -> X."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _spec_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The nested spec model a field holds (alone or in a list), and whether in a list."""
    annotation = _unwrap_optional(annotation)
    in_list = get_origin(annotation) is list
    inner = get_args(annotation)[0] if in_list else annotation
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return inner, in_list
    return None, in_list


def _json_type(annotation: Any) -> str:
    """The schema type a Python annotation takes in the CRD."""
    annotation = _unwrap_optional(annotation)
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType) and set(get_args(annotation)) == {int, str}:
        return "int-or-string"
    if origin is Literal:
        return "string"
    if origin is list:
        return "array"
    if origin is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel | Mapping)):
        return "object"
    simple = {str: "string", int: "integer", bool: "boolean", float: "number"}
    return simple[annotation]


def _crd_type(node: dict[str, Any]) -> str:
    return "int-or-string" if node.get("x-kubernetes-int-or-string") else str(node["type"])


def _fields(
    model: type[BaseModel], node: dict[str, Any], path: str
) -> Iterator[tuple[str, FieldInfo, dict[str, Any] | None]]:
    """Every field of `model` and its nested models, with its camelCase path and its schema node (None
    when the CRD lacks it)."""
    for field in model.model_fields.values():
        alias = str(field.alias)
        sub = node.get("properties", {}).get(alias)
        yield f"{path}.{alias}", field, sub
        nested, in_list = _spec_model(field.annotation)
        if nested is not None and sub is not None:
            yield from _fields(nested, sub["items"] if in_list else sub, f"{path}.{alias}")


def _nodes(model: type[BaseModel], node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property of the CRD below `node` that a spec model reads (embedded Kubernetes types are
    Manifests, read whole), with its path."""
    for name, sub in node.get("properties", {}).items():
        yield f"{path}.{name}", sub
    for field in model.model_fields.values():
        nested, in_list = _spec_model(field.annotation)
        sub = node.get("properties", {}).get(str(field.alias))
        if nested is not None and sub is not None:
            yield from _nodes(nested, sub["items"] if in_list else sub, f"{path}.{field.alias}")


def _constraints(field: FieldInfo) -> dict[str, Any]:
    """A pydantic field's constraints, named as in a schema."""
    found: dict[str, Any] = {}
    for meta in field.metadata:
        for attribute, keyword in (
            ("ge", "minimum"),
            ("le", "maximum"),
            ("min_length", "minLength"),
            ("max_length", "maxLength"),
            ("pattern", "pattern"),
        ):
            if getattr(meta, attribute, None) is not None:
                found[keyword] = getattr(meta, attribute)
        for attribute in ("gt", "lt", "multiple_of"):
            assert getattr(meta, attribute, None) is None, f"{attribute}: not mapped to the schema here"
    annotation = _unwrap_optional(field.annotation)
    if get_origin(annotation) is Literal:
        found["enum"] = list(get_args(annotation))
    return found


def _expected_default(field: FieldInfo) -> Any:
    """The default the CRD must give a field the model defaults: a scalar as it is, a nested model as {}
    (the apiserver then fills in its fields' defaults); nothing for None or an empty list or map."""
    if field.is_required():
        return None
    default = field.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        return {}
    if isinstance(default, bool | int | float | str):
        return default
    return None


@pytest.mark.parametrize("name", sorted(SPEC_MODELS))
def test_every_spec_field_is_in_the_crd_and_back(name: str) -> None:
    spec = _schema(name)["properties"]["spec"]
    model = SPEC_MODELS[name]
    missing = [path for path, _, node in _fields(model, spec, "spec") if node is None]
    assert not missing, f"{name}: fields of {model.__name__} the CRD lacks: {missing}"
    modelled = {path for path, _, _ in _fields(model, spec, "spec")}
    unread = [path for path, _ in _nodes(model, spec, "spec") if path not in modelled]
    assert not unread, f"{name}: CRD properties {model.__name__} does not read: {unread}"


@pytest.mark.parametrize("name", sorted(SPEC_MODELS))
def test_spec_types_and_required_fields_match_the_model(name: str) -> None:
    spec = _schema(name)["properties"]["spec"]
    for path, field, node in _fields(SPEC_MODELS[name], spec, "spec"):
        assert node is not None, path
        assert _crd_type(node) == _json_type(field.annotation), path
    for path, node in [("spec", spec), *_nodes(SPEC_MODELS[name], spec, "spec")]:
        if node.get("type") == "object" and "properties" in node:
            model = _model_at(SPEC_MODELS[name], path)
            if model is not None:
                required = sorted(str(f.alias) for f in model.model_fields.values() if f.is_required())
                assert sorted(node.get("required", [])) == required, path


def _model_at(model: type[BaseModel], path: str) -> type[BaseModel] | None:
    """The spec model at a camelCase path below spec, None where the path leaves the models."""
    current: type[BaseModel] | None = model
    for part in path.split(".")[1:]:
        if current is None:
            return None
        field = next((f for f in current.model_fields.values() if f.alias == part), None)
        current = _spec_model(field.annotation)[0] if field is not None else None
    return current


@pytest.mark.parametrize("name", sorted(SPEC_MODELS))
def test_spec_bounds_enums_and_defaults_match_the_model(name: str) -> None:
    spec = _schema(name)["properties"]["spec"]
    problems = []
    for path, field, node in _fields(SPEC_MODELS[name], spec, "spec"):
        assert node is not None, path
        constraints = _constraints(field)
        for keyword, value in constraints.items():
            if node.get(keyword) != value:
                problems.append(
                    f"{path}: {keyword} is {node.get(keyword)!r} in the CRD, {value!r} in the model"
                )
        # What the CRD bounds, the model bounds alike: a spec read from elsewhere (an older object, a test)
        # is held to the same limits. An int-or-string cannot say so in a pydantic type.
        for keyword in ("minimum", "maximum", "enum"):
            if keyword in node and keyword not in constraints and _crd_type(node) != "int-or-string":
                problems.append(f"{path}: {keyword} {node[keyword]!r} in the CRD, none in the model")
        expected = _expected_default(field)
        if node.get("default") != expected:
            problems.append(f"{path}: default {node.get('default')!r} in the CRD, {expected!r} in the model")
    assert not problems, f"{name}: " + "; ".join(problems)


# --- ModelDeployment -------------------------------------------------------------------------------------


def _modeldeployment_schema() -> dict[str, Any]:
    return _schema(MODELDEPLOYMENT)


def _rules(path: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = (_md(path) if path else _modeldeployment_schema())[
        "x-kubernetes-validations"
    ]
    return rules


def test_modeldeployment_names() -> None:
    spec = CRDS[MODELDEPLOYMENT]["spec"]
    assert spec["group"] == names.GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == names.MODELDEPLOYMENT_KIND
    assert spec["names"]["listKind"] == "ModelDeploymentList"
    assert spec["names"]["plural"] == names.MODELDEPLOYMENT_PLURAL
    assert spec["names"]["singular"] == "modeldeployment"
    assert spec["names"]["shortNames"] == ["md"]
    assert spec["names"]["categories"] == ["mlplatform"]
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [(names.VERSION, True, True)]


def test_modeldeployment_printer_columns() -> None:
    columns = CRDS[MODELDEPLOYMENT]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["jsonPath"], c.get("priority", 0)) for c in columns] == [
        ("Model", ".spec.model.name", 0),
        ("Selector", ".status.resolvedFrom", 0),
        ("Version", ".status.modelVersion", 0),
        ("Ready", '.status.conditions[?(@.type=="Ready")].status', 0),
        ("URL", ".status.url", 0),
        ("Age", ".metadata.creationTimestamp", 0),
    ]
    assert all(c.get("description") for c in columns if c["name"] != "Age")


def test_modeldeployment_spec_shape() -> None:
    assert _md("spec")["required"] == ["model"]
    assert _md("spec.model")["required"] == ["name"]
    assert (_md("spec.model.name")["minLength"], _md("spec.model.name")["maxLength"]) == (1, 256)
    assert _md("spec.model.stage")["enum"] == ["Staging", "Production", "Archived", "None"]
    assert _md("spec.model.version")["type"] == "string"
    assert _md("spec.model.version")["pattern"] == "^[1-9][0-9]*$"
    # The alias follows the same rules as the alias a TrainingRun promotes to.
    promote_alias = _at("spec.model.promote.alias")
    for keyword in ("type", "minLength", "maxLength", "pattern", "x-kubernetes-validations"):
        assert _md("spec.model.alias")[keyword] == promote_alias[keyword], keyword
    assert "minLength" not in _md("spec.image")  # "" means the image the version was trained with
    assert _md("spec.imagePullPolicy")["enum"] == ["Always", "IfNotPresent", "Never"]
    assert _md("spec.autoscaling")["required"] == ["maxReplicas"]
    assert _md("spec.autoscaling")["properties"].keys() == {
        "minReplicas",
        "maxReplicas",
        "targetCPUUtilizationPercentage",
    }
    bounds = {
        "spec.replicas": (0, None),
        "spec.pollIntervalSeconds": (5, None),
        "spec.workers": (1, None),
        "spec.rollout.progressDeadlineSeconds": (10, None),
        "spec.autoscaling.minReplicas": (1, None),
        "spec.autoscaling.maxReplicas": (1, None),
        "spec.autoscaling.targetCPUUtilizationPercentage": (1, 100),
    }
    for path, (low, high) in bounds.items():
        assert (_md(path)["type"], _md(path)["minimum"], _md(path).get("maximum")) == ("integer", low, high)
    for field in ("maxUnavailable", "maxSurge"):
        node = _md(f"spec.rollout.{field}")
        assert node["x-kubernetes-int-or-string"] is True
        assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}]
        assert node["pattern"] == "^[0-9]+%$"
        assert node["minimum"] == 0
    for quantities in ("limits", "requests"):
        values = _md(f"spec.resources.{quantities}")["additionalProperties"]
        assert values == _at(f"spec.resources.{quantities}")["additionalProperties"] | {
            "description": values["description"]
        }
    # The embedded Kubernetes types are the TrainingRun's (descriptions and reserved env names aside).
    for field in ("env", "envFrom", "tolerations", "affinity", "podSecurityContext", "securityContext"):
        assert _strip_descriptions(_md(f"spec.{field}"), "x-kubernetes-validations") == _strip_descriptions(
            _at(f"spec.{field}"), "x-kubernetes-validations"
        ), field


def _strip_descriptions(node: Any, *also: str) -> Any:
    """`node` without its descriptions (and the keys `also`) at any depth."""
    if isinstance(node, dict):
        return {k: _strip_descriptions(v, *also) for k, v in node.items() if k not in ("description", *also)}
    if isinstance(node, list):
        return [_strip_descriptions(v, *also) for v in node]
    return node


def test_modeldeployment_defaults() -> None:
    assert _md("spec.replicas")["default"] == 1
    assert _md("spec.pollIntervalSeconds")["default"] == 30
    assert _md("spec.workers")["default"] == 1
    # An empty rollout by default, so that the apiserver fills in its fields' defaults.
    assert _md("spec.rollout")["default"] == {}
    assert _md("spec.rollout.maxUnavailable")["default"] == 0
    assert _md("spec.rollout.maxSurge")["default"] == 1
    assert _md("spec.rollout.progressDeadlineSeconds")["default"] == 300
    assert _md("spec.rollout.autoRollback")["default"] is True
    assert _md("spec.autoscaling.minReplicas")["default"] == 1
    assert _md("spec.autoscaling.targetCPUUtilizationPercentage")["default"] == 80
    # No autoscaling unless asked for; the image is computed by the operator.
    assert "default" not in _md("spec.autoscaling")
    assert "default" not in _md("spec.image")


def test_modeldeployment_preserves_unknown_fields_only_in_embedded_kubernetes_types() -> None:
    preserved = sorted(
        path
        for path, node in _walk(_modeldeployment_schema(), "")
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
    assert "x-kubernetes-preserve-unknown-fields" not in _md("status")


def test_modeldeployment_status_shape() -> None:
    assert set(_md("status")["properties"]) == {
        "conditions",
        "observedGeneration",
        "modelVersion",
        "targetVersion",
        "failedVersion",
        "resolvedFrom",
        "image",
        "modelUri",
        "url",
        "replicas",
        "readyReplicas",
        "history",
        "deploymentName",
        "serviceName",
        "lastResolved",
    }
    # Conditions in the shape of metav1.Condition, as the TrainingRun's.
    conditions = _md("status.conditions")
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert _strip_descriptions(conditions["items"]) == _strip_descriptions(_at("status.conditions")["items"])
    for kind in ("Ready", "Progressing", "Degraded"):
        assert kind in conditions["description"]
    for field in ("modelVersion", "targetVersion", "failedVersion", "resolvedFrom", "modelUri", "url"):
        assert _md(f"status.{field}")["type"] == "string", field
    for field in ("replicas", "readyReplicas", "observedGeneration"):
        assert (_md(f"status.{field}")["type"], _md(f"status.{field}")["minimum"]) == ("integer", 0), field
    history = _md("status.history")
    assert history["maxItems"] == HISTORY_LIMIT
    assert history["items"]["required"] == ["version", "result"]
    assert set(history["items"]["properties"]) == {"version", "result", "at", "message"}
    assert _md("status.history")["items"]["properties"]["result"]["enum"] == [o.value for o in Outcome]
    assert history["items"]["properties"]["at"]["format"] == "date-time"
    assert _md("status.lastResolved")["format"] == "date-time"


def test_modeldeployment_cel_rules() -> None:
    exactly_one = _rules("spec.model")
    assert [r["reason"] for r in exactly_one] == ["FieldValueRequired", "FieldValueForbidden"]
    for rule in exactly_one:
        for selector in ("alias", "stage", "version"):
            assert f"self.{selector}" in rule["rule"]
            assert selector in rule["message"]
    (bounds,) = _rules("spec.autoscaling")
    assert "self.minReplicas <= self.maxReplicas" in bounds["rule"]
    assert "autoscaling.minReplicas" in bounds["message"]
    assert "autoscaling.maxReplicas" in bounds["message"]
    assert bounds["fieldPath"] == ".minReplicas"
    (env,) = _rules("spec.env")
    assert f"'{names.ENV_TRACKING_URI}'" in env["rule"]
    assert names.ENV_TRACKING_URI in env["message"]
    assert "set by the operator" in env["message"]
    assert env["reason"] == "FieldValueForbidden"
    assert _md("spec.env")["maxItems"] == 256
    (surge,) = _rules("spec.rollout")
    assert "rollout.maxUnavailable" in surge["message"]
    assert "rollout.maxSurge" in surge["message"]
    (alias,) = _rules("spec.model.alias")
    assert "'latest'" in alias["message"]
    # The Service takes the object's name: a DNS label.
    (dns,) = _rules("")
    assert "self.metadata.name" in dns["rule"]
    assert "metadata.name" in dns["message"]
    assert "size(self.metadata.name) <= 63" in dns["rule"]
