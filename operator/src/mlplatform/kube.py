"""The few Kubernetes API calls the operator makes beyond kopf's own: children, and status of its objects.

Over lightkube's client with its dict-backed generic resources: manifests go out and objects come back as
plain dicts, with no typed model to build or to convert back, and no model module loaded (the official
clients load every model of every API group: tens of megabytes in a process that watches thousands of
objects). Jobs are created once; the children of a ModelDeployment are applied server-side (one field
manager, so the operator owns exactly the fields it sets and an autoscaler keeps `replicas`). Status takes
merge patches: a custom resource takes no strategic merge, and a merge patch touches only the fields it
names.

Every failure is a KubeError: the apiserver's status code and message, or code 0 when it did not answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, Final, TypeVar, cast

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import GenericNamespacedResource, create_namespaced_resource
from lightkube.types import CascadeType, PatchType

from mlplatform import names

Manifest = dict[str, Any]
FIELD_MANAGER: Final = "mlplatform-operator"
NOT_FOUND: Final = 404
CONFLICT: Final = 409
UNREACHABLE: Final = 0  # the status of a KubeError when no answer came
T = TypeVar("T")
Resource = type[GenericNamespacedResource]

# kind -> (API group, version, plural) of every kind the operator reads or writes.
KINDS: Final[dict[str, tuple[str, str, str]]] = {
    "Job": ("batch", "v1", "jobs"),
    "Pod": ("", "v1", "pods"),
    "Deployment": ("apps", "v1", "deployments"),
    "Service": ("", "v1", "services"),
    "ConfigMap": ("", "v1", "configmaps"),
    "HorizontalPodAutoscaler": ("autoscaling", "v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("policy", "v1", "poddisruptionbudgets"),
    names.TRAININGRUN_KIND: (names.GROUP, names.VERSION, names.TRAININGRUN_PLURAL),
    names.MODELDEPLOYMENT_KIND: (names.GROUP, names.VERSION, names.MODELDEPLOYMENT_PLURAL),
}
RESOURCES: Final[dict[str, Resource]] = {
    kind: create_namespaced_resource(group, version, kind, plural)
    for kind, (group, version, plural) in KINDS.items()
}
BY_PLURAL: Final[dict[str, Resource]] = {plural: RESOURCES[kind] for kind, (_, _, plural) in KINDS.items()}


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def connect() -> AsyncClient:
    """A client for the cluster the operator runs in, or else the one of $KUBECONFIG."""
    return AsyncClient(field_manager=FIELD_MANAGER)


async def answer(call: Awaitable[T]) -> T:
    """The call's result; its failure as a KubeError."""
    try:
        return await call
    except ApiError as exc:
        raise KubeError(exc.status.code or UNREACHABLE, exc.status.message or str(exc)) from None
    except httpx2.TransportError as exc:
        raise KubeError(UNREACHABLE, f"the API server did not answer: {exc!r}") from None


async def unless_missing(call: Awaitable[T]) -> T | None:
    """The call's result, or None when the object it names does not exist (404)."""
    try:
        return await answer(call)
    except KubeError as exc:
        if exc.status == NOT_FOUND:
            return None
        raise


def as_dict(found: Any) -> Manifest:
    return cast(Manifest, found.to_dict())


class Kube:
    def __init__(self, api: AsyncClient) -> None:
        self.api = api

    async def close(self) -> None:
        await self.api.close()

    async def apply(self, manifest: Mapping[str, Any]) -> Manifest:
        """Server-side apply: the object as `manifest` says, whatever it was (or create it)."""
        metadata = manifest["metadata"]
        applied = await answer(
            self.api.patch(
                RESOURCES[manifest["kind"]],
                metadata["name"],
                dict(manifest),
                namespace=metadata["namespace"],
                patch_type=PatchType.APPLY,
                force=True,  # the operator's fields are the operator's, even after a `kubectl edit`
            )
        )
        return as_dict(applied)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete the object; a missing one is no error. Its dependents go in the background."""
        await unless_missing(
            self.api.delete(RESOURCES[kind], name, namespace=namespace, cascade=CascadeType.BACKGROUND)
        )

    async def list_pods(self, namespace: str, selector: Mapping[str, str]) -> list[Manifest]:
        async def listed() -> list[Manifest]:
            return [
                as_dict(pod)
                async for pod in self.api.list(RESOURCES["Pod"], namespace=namespace, labels=dict(selector))
            ]

        return await answer(listed())

    async def create_job(self, job: Mapping[str, Any]) -> Manifest:
        """Create the Job, or return the existing one of that name (after a crash or a retry)."""
        metadata = job["metadata"]
        try:
            created = await answer(self.api.create(RESOURCES["Job"].from_dict(dict(job))))
        except KubeError as exc:
            if exc.status != CONFLICT:
                raise
            created = await answer(
                self.api.get(RESOURCES["Job"], metadata["name"], namespace=metadata["namespace"])
            )
        return as_dict(created)

    async def read_job(self, namespace: str, name: str) -> Manifest | None:
        found = await unless_missing(self.api.get(RESOURCES["Job"], name, namespace=namespace))
        return None if found is None else as_dict(found)

    async def suspend_job(self, namespace: str, name: str, suspend: bool) -> None:
        patch = {"spec": {"suspend": suspend}}
        await answer(
            self.api.patch(RESOURCES["Job"], name, patch, namespace=namespace, patch_type=PatchType.MERGE)
        )

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete the Job and, through the garbage collector, its pods; a missing Job is no error."""
        await self.delete("Job", namespace, name)

    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge `status` into one of our objects' status; an object deleted meanwhile is no error."""
        patch = {"status": dict(status)}
        await unless_missing(
            self.api.patch(
                BY_PLURAL[plural].Status, name, patch, namespace=namespace, patch_type=PatchType.MERGE
            )
        )
