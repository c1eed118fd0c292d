"""What a ModelDeployment runs: a Deployment serving one pinned model version, its Service, and an
optional HorizontalPodAutoscaler and PodDisruptionBudget, and the ConfigMap holding the model server.

Each serving pod downloads the pinned version's artifacts through the tracking server (an init
container, `mlflow artifacts download`), then serves them with the platform's scoring server
(mlplatform/serving/server.py, mounted from a ConfigMap: MLflow's protocol and answers, /invocations in
every input format MLflow takes, /ping, /health, /version, faster) or, with `server: mlflow`, with
`mlflow models serve` itself. Both containers run in the image the version was trained with, so the
model's libraries are the ones it was trained on; the image needs nothing but MLflow. The version is a
label of the pod template: a new version is an ordinary Deployment rollout, visible in `kubectl rollout
history`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlplatform import names, serving
from mlplatform.api.modeldeployment import Autoscaling, ModelDeploymentSpec
from mlplatform.builders.common import (
    RESTRICTED_CONTAINER_SECURITY,
    RESTRICTED_POD_SECURITY,
    Manifest,
    env_var,
    owner_reference,
    pod_options,
    short_name,
    standard_labels,
)

SERVER_CONTAINER = "server"
SERVER_DIR = "/opt/mlplatform/serving"  # the server's ConfigMap, mounted read-only
FETCH_CONTAINER = "fetch-model"
MODEL_DIR = "/var/lib/mlplatform/model"
SCRATCH = "/tmp"  # noqa: S108 - an emptyDir inside the pod: HOME and temporary files
SERVER_PORT = 8080
SERVICE_PORT = 80
PORT_NAME = "http"
COMPONENT = "model-server"
KIND_LABEL = "modeldeployment"
# Graceful termination: the pod leaves the Service's endpoints when it starts terminating; the preStop
# pause lets every kube-proxy drop it before the server is told to stop, and the server then finishes
# the requests it holds (uvicorn drains on SIGTERM) within the grace period.
DRAIN_SECONDS = 5
TERMINATION_GRACE_SECONDS = 30
REVISION_HISTORY = 5
PROBE_PERIOD_SECONDS = 2
# `mlflow models serve` runs the scoring server as its child. As a container's PID 1 without a SIGTERM
# handler it would never hear the SIGTERM (the kernel drops it), and the server would be killed at the end
# of the grace period instead of draining; this passes the signal on to the server's process group.
SERVE_FORWARDING_SIGTERM = """\
import os, signal, sys
from mlflow.cli import cli
def forward(signum, frame):
    signal.signal(signum, signal.SIG_IGN)
    os.killpg(0, signum)
signal.signal(signal.SIGTERM, forward)
sys.exit(cli())
"""


@dataclass(frozen=True)
class ServingSettings:
    """What the operator's configuration adds to every serving pod."""

    tracking_uri: str  # the tracking server as pods reach it
    tracking_secret: str | None = None  # a Secret with MLFLOW_TRACKING_* credentials, in each namespace
    server_source: str = ""  # the platform's model server (serving/server.py), for `server: mlplatform`


@dataclass(frozen=True)
class ServedVersion:
    """The exact model version a Deployment serves, and the image that serves it."""

    model: str
    version: str
    image: str

    @property
    def uri(self) -> str:
        return f"models:/{self.model}/{self.version}"


def deployment_name(modeldeployment: str) -> str:
    return short_name(modeldeployment)


def service_name(modeldeployment: str) -> str:
    """The Service: the stable name applications call (the CRD keeps object names DNS labels)."""
    return short_name(modeldeployment)


def server_configmap_name(modeldeployment: str) -> str:
    return f"{short_name(modeldeployment)}-server"


def service_url(modeldeployment: str, namespace: str) -> str:
    return f"http://{service_name(modeldeployment)}.{namespace}.svc.cluster.local/invocations"


def selector_labels(modeldeployment: str) -> dict[str, str]:
    return {names.LABEL_MODELDEPLOYMENT: short_name(modeldeployment)}


def labels(modeldeployment: str) -> dict[str, str]:
    return {**standard_labels(KIND_LABEL, modeldeployment, COMPONENT), **selector_labels(modeldeployment)}


def metadata(name: str, namespace: str, uid: str, object_name: str) -> Manifest:
    return {
        "name": object_name,
        "namespace": namespace,
        "labels": labels(name),
        "ownerReferences": [owner_reference(names.MODELDEPLOYMENT_KIND, name, uid)],
    }


def build_deployment(
    name: str,
    namespace: str,
    uid: str,
    *,
    spec: ModelDeploymentSpec,
    served: ServedVersion,
    settings: ServingSettings,
) -> Manifest:
    """The Deployment of a ModelDeployment, serving `served`. With autoscaling, replicas are the
    HorizontalPodAutoscaler's to set, so the manifest leaves them out."""
    rollout = spec.rollout
    deployment_spec: Manifest = {
        "selector": {"matchLabels": selector_labels(name)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": rollout.max_surge, "maxUnavailable": rollout.max_unavailable},
        },
        "progressDeadlineSeconds": rollout.progress_deadline_seconds,
        "revisionHistoryLimit": REVISION_HISTORY,
        "template": {
            "metadata": {
                "labels": {**labels(name), names.LABEL_MODEL_VERSION: served.version},
                "annotations": pod_annotations(spec, served, settings),
            },
            "spec": pod_spec(name, spec, served, settings),
        },
    }
    if spec.autoscaling is None:
        deployment_spec["replicas"] = spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name, namespace, uid, deployment_name(name)),
        "spec": deployment_spec,
    }


def pod_annotations(spec: ModelDeploymentSpec, served: ServedVersion, settings: ServingSettings) -> Manifest:
    annotations = {names.ANNOTATION_MODEL_URI: served.uri}
    if uses_platform_server(spec):  # a new server is a new template: the pods roll over to it
        annotations[names.ANNOTATION_SERVER_DIGEST] = serving.source_digest(settings.server_source)
    return annotations


def uses_platform_server(spec: ModelDeploymentSpec) -> bool:
    return spec.server == "mlplatform"


def pod_spec(
    name: str, spec: ModelDeploymentSpec, served: ServedVersion, settings: ServingSettings
) -> Manifest:
    volumes: list[Manifest] = [{"name": "model", "emptyDir": {}}, {"name": "scratch", "emptyDir": {}}]
    if uses_platform_server(spec):
        volumes.append({"name": "server", "configMap": {"name": server_configmap_name(name)}})
    pod: Manifest = {
        "securityContext": spec.pod_security_context or RESTRICTED_POD_SECURITY,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "initContainers": [fetch_container(spec, served, settings)],
        "containers": [server_container(spec, served)],
        "volumes": volumes,
        # A model server talks to no Kubernetes API: no token unless an account is named.
        "automountServiceAccountToken": spec.service_account_name is not None,
    }
    pod.update(pod_options(spec))
    return pod


def common_container(spec: ModelDeploymentSpec, served: ServedVersion) -> Manifest:
    """What both containers share: the image, the user's environment, security, scratch space."""
    container: Manifest = {
        "image": served.image,
        "securityContext": spec.security_context or RESTRICTED_CONTAINER_SECURITY,
        # A container that fails without a termination message: its log tail says why.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    optional: Manifest = {
        "imagePullPolicy": spec.image_pull_policy,
        "resources": spec.resources,
    }
    container.update({key: value for key, value in optional.items() if value})
    return container


def fetch_container(spec: ModelDeploymentSpec, served: ServedVersion, settings: ServingSettings) -> Manifest:
    """Downloads the version's artifacts through the tracking server's artifact proxy: the pod needs the
    tracking server's credentials (by Secret reference), never the object store's."""
    env_from = list(spec.env_from)
    if settings.tracking_secret:
        env_from.append({"secretRef": {"name": settings.tracking_secret, "optional": True}})
    container: Manifest = {
        "name": FETCH_CONTAINER,
        **common_container(spec, served),
        "command": ["mlflow", "artifacts", "download", "--artifact-uri", served.uri, "--dst-path", MODEL_DIR],
        "env": unique_env(
            [env_var("HOME", SCRATCH), *spec.env, env_var(names.ENV_TRACKING_URI, settings.tracking_uri)]
        ),
        "volumeMounts": [
            {"name": "model", "mountPath": MODEL_DIR},
            {"name": "scratch", "mountPath": SCRATCH},
        ],
    }
    if env_from:
        container["envFrom"] = env_from
    return container


def server_command(spec: ModelDeploymentSpec) -> list[str]:
    """The platform's server on the downloaded model, or MLflow's (`server: mlflow`), in the image's
    own environment; either serves on SERVER_PORT with spec.workers processes."""
    if uses_platform_server(spec):
        command = ["python", f"{SERVER_DIR}/{serving.SCRIPT_NAME}", "--model-dir", MODEL_DIR]
    else:
        command = ["python", "-c", SERVE_FORWARDING_SIGTERM, "models", "serve", "--model-uri", MODEL_DIR]
        command += ["--env-manager", "local", "--host", "0.0.0.0"]  # noqa: S104 - a server in a pod
    return [*command, "--port", str(SERVER_PORT), "--workers", str(spec.workers)]


def server_container(spec: ModelDeploymentSpec, served: ServedVersion) -> Manifest:
    # Loading a big model takes time: the startup probe allows the whole progress deadline for it.
    startup_failures = max(1, spec.rollout.progress_deadline_seconds // PROBE_PERIOD_SECONDS)
    mounts: list[Manifest] = [
        {"name": "model", "mountPath": MODEL_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": SCRATCH},
    ]
    if uses_platform_server(spec):
        mounts.append({"name": "server", "mountPath": SERVER_DIR, "readOnly": True})
    container: Manifest = {
        "name": SERVER_CONTAINER,
        **common_container(spec, served),
        "command": server_command(spec),
        "env": unique_env([env_var("HOME", SCRATCH), *spec.env]),
        "ports": [{"name": PORT_NAME, "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "startupProbe": http_probe("/ping", failures=startup_failures),
        "readinessProbe": http_probe("/ping", failures=2),
        "livenessProbe": http_probe("/health", failures=3, period=10),
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "volumeMounts": mounts,
    }
    if spec.env_from:
        container["envFrom"] = list(spec.env_from)
    return container


def build_server_configmap(name: str, namespace: str, uid: str, source: str) -> Manifest:
    """The platform's model server, as a file the serving pods mount."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(name, namespace, uid, server_configmap_name(name)),
        "data": {serving.SCRIPT_NAME: source},
    }


def unique_env(entries: list[Manifest]) -> list[Manifest]:
    """Each variable once, the last definition winning (the user's HOME over ours, the operator's
    tracking URI over anything): server-side apply refuses a container with a name twice."""
    last = {entry["name"]: index for index, entry in enumerate(entries)}
    return [entry for index, entry in enumerate(entries) if last[entry["name"]] == index]


def http_probe(path: str, *, failures: int, period: int = PROBE_PERIOD_SECONDS) -> Manifest:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def build_service(name: str, namespace: str, uid: str) -> Manifest:
    """The stable address of the model: port 80 to every ready serving pod, whatever version it runs."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, namespace, uid, service_name(name)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name),
            "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def build_autoscaler(name: str, namespace: str, uid: str, autoscaling: Autoscaling) -> Manifest:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(name, namespace, uid, deployment_name(name)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(name)},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": autoscaling.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }


def build_disruption_budget(name: str, namespace: str, uid: str) -> Manifest:
    """With more than one replica, a node drain takes them one at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(name, namespace, uid, deployment_name(name)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(name)}},
    }


def build_children(
    name: str,
    namespace: str,
    uid: str,
    *,
    spec: ModelDeploymentSpec,
    served: ServedVersion,
    settings: ServingSettings,
) -> tuple[list[Manifest], list[tuple[str, str]]]:
    """Every object the ModelDeployment wants, and the (kind, name) of those it must not have."""
    wanted = [
        build_deployment(name, namespace, uid, spec=spec, served=served, settings=settings),
        build_service(name, namespace, uid),
    ]
    unwanted: list[tuple[str, str]] = []
    if uses_platform_server(spec):  # first, so that the pods find their server
        wanted.insert(0, build_server_configmap(name, namespace, uid, settings.server_source))
    else:
        unwanted.append(("ConfigMap", server_configmap_name(name)))
    if spec.autoscaling is not None:
        wanted.append(build_autoscaler(name, namespace, uid, spec.autoscaling))
    else:
        unwanted.append(("HorizontalPodAutoscaler", deployment_name(name)))
    if spec.min_replicas > 1:
        wanted.append(build_disruption_budget(name, namespace, uid))
    else:
        unwanted.append(("PodDisruptionBudget", deployment_name(name)))
    return wanted, unwanted
