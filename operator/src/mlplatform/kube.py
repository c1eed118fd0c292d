"""The few Kubernetes API calls the operator makes beyond kopf's own: children, and status of its objects.

Thin and typed over kubernetes_asyncio, so handlers read as what they do. Jobs are created once; the
children of a ModelDeployment are applied server-side (one field manager, so the operator owns exactly
the fields it sets and an autoscaler keeps `replicas`). Status takes merge patches: a custom resource
takes no strategic merge, and a merge patch touches only the fields it names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar, cast

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from mlplatform import names

Manifest = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "mlplatform-operator"
NOT_FOUND = 404
T = TypeVar("T")
CONFLICT = 409


async def connect() -> client.ApiClient:
    """An API client for the cluster the operator runs in, or else the one of $KUBECONFIG."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()
    return client.ApiClient()


async def unless_missing(call: Awaitable[T]) -> T | None:
    """The call's result, or None when the object it names does not exist (404)."""
    try:
        return await call
    except ApiException as exc:
        if exc.status == NOT_FOUND:
            return None
        raise


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        apps = client.AppsV1Api(api)
        autoscaling = client.AutoscalingV2Api(api)
        policy = client.PolicyV1Api(api)
        # kind -> (server-side apply, delete) of the namespaced kinds a ModelDeployment owns.
        self._namespaced: dict[str, tuple[Any, Any]] = {
            "Deployment": (apps.patch_namespaced_deployment, apps.delete_namespaced_deployment),
            "Service": (self.core.patch_namespaced_service, self.core.delete_namespaced_service),
            "ConfigMap": (self.core.patch_namespaced_config_map, self.core.delete_namespaced_config_map),
            "HorizontalPodAutoscaler": (
                autoscaling.patch_namespaced_horizontal_pod_autoscaler,
                autoscaling.delete_namespaced_horizontal_pod_autoscaler,
            ),
            "PodDisruptionBudget": (
                policy.patch_namespaced_pod_disruption_budget,
                policy.delete_namespaced_pod_disruption_budget,
            ),
        }

    async def apply(self, manifest: Mapping[str, Any]) -> Manifest:
        """Server-side apply: the object as `manifest` says, whatever it was (or create it)."""
        patch, _ = self._namespaced[manifest["kind"]]
        metadata = manifest["metadata"]
        applied = await patch(
            metadata["name"],
            metadata["namespace"],
            dict(manifest),
            field_manager=FIELD_MANAGER,
            force=True,  # the operator's fields are the operator's, even after a `kubectl edit`
            _content_type=APPLY_PATCH,
        )
        return cast(Manifest, self.api.sanitize_for_serialization(applied))

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete the object; a missing one is no error."""
        _, delete = self._namespaced[kind]
        await unless_missing(delete(name, namespace))

    async def list_pods(self, namespace: str, selector: Mapping[str, str]) -> list[Manifest]:
        label_selector = ",".join(f"{key}={value}" for key, value in selector.items())
        found = await self.core.list_namespaced_pod(namespace, label_selector=label_selector)
        return [cast(Manifest, self.api.sanitize_for_serialization(pod)) for pod in found.items]

    async def create_job(self, job: Mapping[str, Any]) -> Manifest:
        """Create the Job, or return the existing one of that name (after a crash or a retry)."""
        namespace = job["metadata"]["namespace"]
        try:
            created = await self.batch.create_namespaced_job(namespace, dict(job))  # type: ignore[arg-type]
        except ApiException as exc:
            if exc.status != CONFLICT:
                raise
            created = await self.batch.read_namespaced_job(job["metadata"]["name"], namespace)
        return cast(Manifest, self.api.sanitize_for_serialization(created))

    async def read_job(self, namespace: str, name: str) -> Manifest | None:
        found = await unless_missing(self.batch.read_namespaced_job(name, namespace))
        return None if found is None else cast(Manifest, self.api.sanitize_for_serialization(found))

    async def suspend_job(self, namespace: str, name: str, suspend: bool) -> None:
        await self.batch.patch_namespaced_job(
            name,
            namespace,
            {"spec": {"suspend": suspend}},
            _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # the client takes it; its stubs do not say
        )

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete the Job and, through the garbage collector, its pods; a missing Job is no error."""
        await unless_missing(
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        )

    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge `status` into one of our objects' status; an object deleted meanwhile is no error."""
        await unless_missing(
            self.custom.patch_namespaced_custom_object_status(
                names.GROUP,
                names.VERSION,
                namespace,
                plural,
                name,
                {"status": dict(status)},
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]
            )
        )
