"""What a ModelDeployment runs: the Deployment pinning one model version, its Service, autoscaler and
disruption budget, built from the spec alone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from mlplatform import names, serving
from mlplatform.api.modeldeployment import ModelDeploymentSpec, parse_spec
from mlplatform.builders.common import LABEL_VALUE_LIMIT, short_name
from mlplatform.builders.modeldeployment import (
    DRAIN_SECONDS,
    FETCH_CONTAINER,
    MODEL_DIR,
    SERVER_CONTAINER,
    SERVER_DIR,
    SERVER_PORT,
    ServedVersion,
    ServingSettings,
    build_autoscaler,
    build_children,
    build_deployment,
    build_disruption_budget,
    build_service,
    selector_labels,
    server_configmap_name,
    service_url,
)

Manifest = dict[str, Any]

SOURCE = "print('a model server')\n"
SETTINGS = ServingSettings(
    tracking_uri="http://mlflow.mlplatform-system.svc:5000",
    tracking_secret="mlflow-tracking",
    server_source=SOURCE,
)
SERVED = ServedVersion(model="wine", version="7", image="registry.local/trainer-sklearn:0.1.0")
MODEL = {"name": "wine", "alias": "champion"}
NAME, NAMESPACE, UID = "wine-api", "team-a", "uid-1"


def spec_of(fields: dict[str, Any] | None = None) -> ModelDeploymentSpec:
    return parse_spec({"model": MODEL, **(fields or {})})


def deployment(
    fields: dict[str, Any] | None = None, settings: ServingSettings = SETTINGS, name: str = NAME
) -> Manifest:
    return build_deployment(name, NAMESPACE, UID, spec=spec_of(fields), served=SERVED, settings=settings)


def children(
    fields: dict[str, Any] | None = None, name: str = NAME
) -> tuple[list[Manifest], list[tuple[str, str]]]:
    return build_children(name, NAMESPACE, UID, spec=spec_of(fields), served=SERVED, settings=SETTINGS)


def pod(built: Manifest) -> Manifest:
    spec: Manifest = built["spec"]["template"]["spec"]
    return spec


def server(built: Manifest) -> Manifest:
    [container] = pod(built)["containers"]
    assert isinstance(container, dict) and container["name"] == SERVER_CONTAINER
    return container


def fetch(built: Manifest) -> Manifest:
    [container] = pod(built)["initContainers"]
    assert isinstance(container, dict) and container["name"] == FETCH_CONTAINER
    return container


def env_of(container: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# --- the Deployment pins one version ------------------------------------------------------------------


def test_the_pod_template_pins_the_version_and_its_uri() -> None:
    template = deployment()["spec"]["template"]["metadata"]
    assert template["labels"][names.LABEL_MODEL_VERSION] == "7"
    assert template["annotations"][names.ANNOTATION_MODEL_URI] == "models:/wine/7"
    assert SERVED.uri == "models:/wine/7"


def test_the_selector_holds_only_the_stable_labels() -> None:
    built = deployment()
    selector = built["spec"]["selector"]["matchLabels"]
    assert selector == {names.LABEL_MODELDEPLOYMENT: NAME} == selector_labels(NAME)
    assert names.LABEL_MODEL_VERSION not in selector, "a Deployment's selector is immutable"
    template_labels = built["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items(), "the selector must select its own pods"
    other = build_deployment(
        NAME,
        NAMESPACE,
        UID,
        spec=spec_of(),
        served=ServedVersion("wine", "8", SERVED.image),
        settings=SETTINGS,
    )
    assert other["spec"]["selector"] == built["spec"]["selector"], "a new version keeps the selector"


def test_a_rolling_update_never_goes_below_the_wanted_replicas_by_default() -> None:
    spec = deployment()["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert spec["progressDeadlineSeconds"] == 300
    assert spec["replicas"] == 1


def test_the_rollout_settings_come_from_the_spec() -> None:
    spec = deployment(
        {"replicas": 4, "rollout": {"maxUnavailable": "25%", "maxSurge": 2, "progressDeadlineSeconds": 900}}
    )["spec"]
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 2, "maxUnavailable": "25%"}
    assert spec["progressDeadlineSeconds"] == 900
    assert spec["replicas"] == 4


def test_with_autoscaling_the_replicas_are_the_autoscalers() -> None:
    assert "replicas" not in deployment({"replicas": 3, "autoscaling": {"maxReplicas": 5}})["spec"]
    assert deployment({"replicas": 0})["spec"]["replicas"] == 0


# --- the init container fetches the model ----------------------------------------------------------------


def test_the_init_container_downloads_the_pinned_version_into_the_model_volume() -> None:
    built = deployment()
    container = fetch(built)
    command = container["command"]
    assert command[:3] == ["mlflow", "artifacts", "download"]
    assert command[command.index("--artifact-uri") + 1] == "models:/wine/7"
    assert command[command.index("--dst-path") + 1] == MODEL_DIR
    assert container["image"] == SERVED.image, "the image the version was trained with"
    assert {"name": "model", "mountPath": MODEL_DIR} in container["volumeMounts"]
    assert {"name": "model", "emptyDir": {}} in pod(built)["volumes"]


def test_the_init_container_reaches_the_tracking_server_with_its_secret_by_reference() -> None:
    container = fetch(deployment())
    assert env_of(container)[names.ENV_TRACKING_URI] == SETTINGS.tracking_uri
    assert container["envFrom"] == [{"secretRef": {"name": "mlflow-tracking", "optional": True}}]


def test_without_a_tracking_secret_no_secret_is_referenced() -> None:
    container = fetch(deployment(settings=ServingSettings(tracking_uri="http://m:5000")))
    assert "envFrom" not in container
    assert env_of(container)[names.ENV_TRACKING_URI] == "http://m:5000"


# --- the server container serves it --------------------------------------------------------------------


def test_the_platform_server_serves_the_downloaded_model_by_default() -> None:
    container = server(deployment({"workers": 3}))
    command = container["command"]
    assert command[:2] == ["python", f"{SERVER_DIR}/{serving.SCRIPT_NAME}"], "the image's python runs it"
    assert command[command.index("--model-dir") + 1] == MODEL_DIR
    assert command[command.index("--port") + 1] == str(SERVER_PORT)
    assert command[command.index("--workers") + 1] == "3"
    assert container["ports"] == [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}]
    assert {"name": "model", "mountPath": MODEL_DIR, "readOnly": True} in container["volumeMounts"]
    assert {"name": "server", "mountPath": SERVER_DIR, "readOnly": True} in container["volumeMounts"]
    assert container["image"] == SERVED.image


def test_the_server_comes_from_a_configmap_of_its_source_and_a_new_source_rolls_the_pods() -> None:
    wanted, unwanted = children()
    configmap = wanted[0]
    assert configmap["kind"] == "ConfigMap" and configmap["data"] == {serving.SCRIPT_NAME: SOURCE}
    assert configmap["metadata"]["name"] == server_configmap_name(NAME) == f"{NAME}-server"
    assert {"name": "server", "configMap": {"name": f"{NAME}-server"}} in pod(wanted[1])["volumes"]
    assert ("ConfigMap", f"{NAME}-server") not in unwanted
    digest = template_annotations(deployment())[names.ANNOTATION_SERVER_DIGEST]
    other = ServingSettings(SETTINGS.tracking_uri, SETTINGS.tracking_secret, server_source=SOURCE + "# new\n")
    assert template_annotations(deployment(settings=other))[names.ANNOTATION_SERVER_DIGEST] != digest
    assert template_annotations(deployment())[names.ANNOTATION_SERVER_DIGEST] == digest, "stable"


def test_server_mlflow_serves_with_mlflow_models_serve_and_wants_no_configmap() -> None:
    built = deployment({"workers": 3, "server": "mlflow"})
    command = server(built)["command"]
    assert command[:2] == ["python", "-c"] and "mlflow.cli" in command[2], "mlflow's CLI, passing SIGTERM on"
    assert command[3:5] == ["models", "serve"]
    assert command[command.index("--model-uri") + 1] == MODEL_DIR
    assert command[command.index("--env-manager") + 1] == "local", "no conda or virtualenv at start"
    assert command[command.index("--port") + 1] == str(SERVER_PORT)
    assert command[command.index("--workers") + 1] == "3"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert not any(v["name"] == "server" for v in pod(built)["volumes"])
    assert names.ANNOTATION_SERVER_DIGEST not in template_annotations(built)
    wanted, unwanted = children({"server": "mlflow"})
    assert "ConfigMap" not in [m["kind"] for m in wanted] and ("ConfigMap", f"{NAME}-server") in unwanted


def template_annotations(built: Manifest) -> dict[str, str]:
    annotations: dict[str, str] = built["spec"]["template"]["metadata"]["annotations"]
    return annotations


def test_the_server_is_probed_over_http() -> None:
    container = server(deployment())
    for probe, path in (("startupProbe", "/ping"), ("readinessProbe", "/ping"), ("livenessProbe", "/health")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
        assert container[probe]["failureThreshold"] >= 1


def test_the_startup_probe_allows_the_whole_progress_deadline_to_load_the_model() -> None:
    startup = server(deployment({"rollout": {"progressDeadlineSeconds": 600}}))["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


def test_a_terminating_server_drains_before_it_stops() -> None:
    built = deployment()
    assert server(built)["lifecycle"] == {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}}
    assert pod(built)["terminationGracePeriodSeconds"] > DRAIN_SECONDS


# --- security and the user's pod settings ---------------------------------------------------------------


def test_serving_pods_are_restricted_by_default() -> None:
    built = deployment()
    security = pod(built)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in (fetch(built), server(built)):
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
        }, container["name"]
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod(built)["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod(built)


def test_the_user_may_override_security() -> None:
    built = deployment({"podSecurityContext": {"runAsUser": 0}, "securityContext": {"privileged": True}})
    assert pod(built)["securityContext"] == {"runAsUser": 0}
    assert server(built)["securityContext"] == {"privileged": True}
    assert fetch(built)["securityContext"] == {"privileged": True}


def test_a_named_service_account_gets_its_token() -> None:
    spec = pod(deployment({"serviceAccountName": "scorer"}))
    assert spec["serviceAccountName"] == "scorer"
    assert spec["automountServiceAccountToken"] is True


def test_the_users_pod_settings_pass_through() -> None:
    user_env = [{"name": "LOG_LEVEL", "value": "debug"}]
    user_env_from = [{"configMapRef": {"name": "scoring"}}]
    built = deployment(
        {
            "env": user_env,
            "envFrom": user_env_from,
            "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "2Gi"}},
            "nodeSelector": {"pool": "serving"},
            "tolerations": [{"key": "serving", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {}},
            "imagePullSecrets": [{"name": "registry"}],
            "imagePullPolicy": "Always",
        }
    )
    spec = pod(built)
    assert spec["nodeSelector"] == {"pool": "serving"}
    assert spec["tolerations"] == [{"key": "serving", "operator": "Exists"}]
    assert spec["affinity"] == {"nodeAffinity": {}}
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    for container in (fetch(built), server(built)):
        assert env_of(container)["LOG_LEVEL"] == "debug", container["name"]
        assert user_env_from[0] in container["envFrom"]
        assert container["resources"] == {"requests": {"cpu": "500m"}, "limits": {"memory": "2Gi"}}
        assert container["imagePullPolicy"] == "Always"
    assert fetch(built)["envFrom"][-1] == {"secretRef": {"name": "mlflow-tracking", "optional": True}}
    assert server(built)["envFrom"] == user_env_from, "the server needs no tracking credentials"


def test_unset_pod_settings_are_left_out() -> None:
    built = deployment()
    for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
        assert key not in pod(built), key
    for container in (fetch(built), server(built)):
        assert "resources" not in container and "imagePullPolicy" not in container
    assert "envFrom" not in server(built)


CREDENTIAL = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE", re.IGNORECASE)


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def env_entries(value: Any) -> Iterator[Manifest]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "env":
                yield from item
            else:
                yield from env_entries(item)
    elif isinstance(value, list):
        for item in value:
            yield from env_entries(item)


def test_no_manifest_carries_a_credential_only_secret_references() -> None:
    wanted, _ = children({"autoscaling": {"minReplicas": 2, "maxReplicas": 4}})
    for manifest in wanted:
        for entry in env_entries(manifest):
            if CREDENTIAL.search(entry["name"]):
                assert "value" not in entry, f"{manifest['kind']}: {entry['name']} is a literal"
        for text in strings(manifest):
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", text), f"credentials in a URL: {text}"
            assert "minio" not in text.lower() and "postgres" not in text.lower(), text
    built = next(m for m in wanted if m["kind"] == "Deployment")
    references = [e for c in (fetch(built), server(built)) for e in c.get("envFrom", []) if "secretRef" in e]
    assert references == [{"secretRef": {"name": "mlflow-tracking", "optional": True}}]


# --- the other children ---------------------------------------------------------------------------------


def test_every_child_is_owned_and_labelled() -> None:
    wanted, _ = children({"autoscaling": {"minReplicas": 2, "maxReplicas": 4}})
    assert [m["kind"] for m in wanted] == [
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    for manifest in wanted:
        metadata = manifest["metadata"]
        assert metadata["namespace"] == NAMESPACE
        [owner] = metadata["ownerReferences"]
        assert owner == {
            "apiVersion": names.API_VERSION,
            "kind": "ModelDeployment",
            "name": NAME,
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }, manifest["kind"]
        assert metadata["labels"][names.LABEL_NAME] == "modeldeployment"
        assert metadata["labels"][names.LABEL_INSTANCE] == NAME
        assert metadata["labels"][names.LABEL_COMPONENT] == "model-server"
        assert metadata["labels"][names.LABEL_MANAGED_BY] == names.MANAGED_BY
        assert metadata["labels"][names.LABEL_MODELDEPLOYMENT] == NAME
        assert names.LABEL_MODEL_VERSION not in metadata["labels"], "a child outlives the version"


def test_the_service_sends_port_80_to_every_serving_pod() -> None:
    service = build_service(NAME, NAMESPACE, UID)
    assert (service["apiVersion"], service["kind"]) == ("v1", "Service")
    assert service["metadata"]["name"] == NAME
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == selector_labels(NAME), "every version: no gap in a rollout"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def test_the_service_url_is_the_stable_address_of_the_model() -> None:
    assert service_url(NAME, NAMESPACE) == "http://wine-api.team-a.svc.cluster.local/invocations"


def test_the_autoscaler_scales_the_deployment_on_cpu() -> None:
    spec = parse_spec({"model": MODEL, "autoscaling": {"minReplicas": 2, "maxReplicas": 6}})
    assert spec.autoscaling is not None
    hpa = build_autoscaler(NAME, NAMESPACE, UID, spec.autoscaling)
    assert (hpa["apiVersion"], hpa["kind"]) == ("autoscaling/v2", "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
        }
    ]
    custom = parse_spec(
        {"model": MODEL, "autoscaling": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 50}}
    ).autoscaling
    assert custom is not None
    target = build_autoscaler(NAME, NAMESPACE, UID, custom)["spec"]["metrics"][0]["resource"]["target"]
    assert target["averageUtilization"] == 50


def test_the_disruption_budget_takes_one_pod_at_a_time() -> None:
    pdb = build_disruption_budget(NAME, NAMESPACE, UID)
    assert (pdb["apiVersion"], pdb["kind"]) == ("policy/v1", "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(NAME)}}


@pytest.mark.parametrize(
    ("fields", "wanted_kinds", "unwanted_kinds"),
    [
        ({}, ["Deployment", "Service"], ["HorizontalPodAutoscaler", "PodDisruptionBudget"]),
        ({"replicas": 0}, ["Deployment", "Service"], ["HorizontalPodAutoscaler", "PodDisruptionBudget"]),
        ({"replicas": 3}, ["Deployment", "Service", "PodDisruptionBudget"], ["HorizontalPodAutoscaler"]),
        (
            {"replicas": 3, "autoscaling": {"maxReplicas": 5}},
            ["Deployment", "Service", "HorizontalPodAutoscaler"],
            ["PodDisruptionBudget"],
        ),
        (
            {"autoscaling": {"minReplicas": 2, "maxReplicas": 5}},
            ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"],
            [],
        ),
    ],
)
def test_build_children_wants_and_unwants_by_the_spec(
    fields: dict[str, Any], wanted_kinds: list[str], unwanted_kinds: list[str]
) -> None:
    wanted, unwanted = children(fields)
    assert [m["kind"] for m in wanted] == ["ConfigMap", *wanted_kinds]
    assert unwanted == [(kind, NAME) for kind in unwanted_kinds]
    assert not {m["kind"] for m in wanted} & set(unwanted_kinds)


# --- names ---------------------------------------------------------------------------------------------


def test_a_long_name_is_shortened_the_same_way_everywhere() -> None:
    name = "a" * 100
    short = short_name(name)
    assert len(short) <= LABEL_VALUE_LIMIT and short != short_name("a" * 99)
    wanted, unwanted = children({"autoscaling": {"minReplicas": 2, "maxReplicas": 4}}, name=name)
    configmap, *wanted = wanted
    assert configmap["metadata"]["name"] == f"{short}-server"
    for manifest in wanted:
        assert manifest["metadata"]["name"] == short, manifest["kind"]
        assert manifest["metadata"]["ownerReferences"][0]["name"] == name, "the owner by its own name"
        for value in manifest["metadata"]["labels"].values():
            assert len(value) <= LABEL_VALUE_LIMIT
        assert manifest["metadata"]["labels"][names.LABEL_INSTANCE] == short
    deployment_, service, hpa, pdb = wanted
    assert deployment_["spec"]["selector"]["matchLabels"] == {names.LABEL_MODELDEPLOYMENT: short}
    assert deployment_["spec"]["template"]["metadata"]["labels"][names.LABEL_MODELDEPLOYMENT] == short
    assert service["spec"]["selector"] == {names.LABEL_MODELDEPLOYMENT: short}
    assert hpa["spec"]["scaleTargetRef"]["name"] == short
    assert pdb["spec"]["selector"]["matchLabels"] == {names.LABEL_MODELDEPLOYMENT: short}
    assert service_url(name, NAMESPACE) == f"http://{short}.{NAMESPACE}.svc.cluster.local/invocations"
    assert unwanted == []
    _, unwanted = children(name=name)
    assert unwanted == [("HorizontalPodAutoscaler", short), ("PodDisruptionBudget", short)]
