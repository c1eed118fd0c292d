"""The few Kubernetes API calls the operator makes beyond kopf's own: Jobs, and status of other objects.

Thin and typed over kubernetes_asyncio, so handlers read as what they do. Merge patches throughout: a
custom resource takes no strategic merge, and a merge patch touches only the fields it names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from mlplatform import names

Manifest = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
NOT_FOUND = 404
CONFLICT = 409


async def connect() -> client.ApiClient:
    """An API client for the cluster the operator runs in, or else the one of $KUBECONFIG."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()
    return client.ApiClient()


def is_status(exc: BaseException, status: int) -> bool:
    return isinstance(exc, ApiException) and exc.status == status


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)

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
        try:
            found = await self.batch.read_namespaced_job(name, namespace)
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return None
            raise
        return cast(Manifest, self.api.sanitize_for_serialization(found))

    async def suspend_job(self, namespace: str, name: str, suspend: bool) -> None:
        await self.batch.patch_namespaced_job(
            name,
            namespace,
            {"spec": {"suspend": suspend}},
            _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # the client takes it; its stubs do not say
        )

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete the Job and, through the garbage collector, its pods; a missing Job is no error."""
        try:
            await self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != NOT_FOUND:
                raise

    async def patch_trainingrun_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge `status` into the TrainingRun's status; a TrainingRun deleted meanwhile is no error."""
        try:
            await self.custom.patch_namespaced_custom_object_status(
                names.GROUP,
                names.VERSION,
                namespace,
                names.TRAININGRUN_PLURAL,
                name,
                {"status": dict(status)},
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]
            )
        except ApiException as exc:
            if exc.status != NOT_FOUND:
                raise
