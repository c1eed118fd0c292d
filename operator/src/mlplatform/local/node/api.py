"""The few Kubernetes API calls the node makes, as the node's own identity, in plain dicts.

The node speaks with the credentials of `system:node:<name>`, so the Node authorizer and the
NodeRestriction admission plugin limit it to its own Node, its pods and the objects they use.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.rest import ApiException

Manifest = dict[str, Any]
log = logging.getLogger(__name__)
# The client is typed for model objects; the node speaks plain dicts, which it serializes as they are.
MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
LEASE_NAMESPACE = "kube-node-lease"


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def rfc3339(moment: datetime.datetime | None = None) -> str:
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeApi:
    """An API client for one node."""

    def __init__(self, api_client: client.ApiClient, node_name: str) -> None:
        self.api_client = api_client
        self.node_name = node_name
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.authorization = client.AuthorizationV1Api(api_client)

    @classmethod
    async def from_kubeconfig(cls, kubeconfig: Path, node_name: str) -> NodeApi:
        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        return cls(client.ApiClient(configuration), node_name)

    async def close(self) -> None:
        await self.api_client.close()

    @staticmethod
    def _body(manifest: Manifest) -> Any:
        return manifest

    def _plain(self, model: object) -> Manifest:
        result: Manifest = self.api_client.sanitize_for_serialization(model)
        return result

    # --- the Node and its lease -------------------------------------------------------------------
    async def read_node(self) -> Manifest | None:
        try:
            return self._plain(await self.core.read_node(self.node_name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def create_node(self, node: Manifest) -> Manifest:
        return self._plain(await self.core.create_node(self._body(node)))

    async def patch_node_status(self, status: Manifest) -> None:
        await self.core.patch_node_status(self.node_name, {"status": status}, **MERGE_PATCH)

    async def renew_lease(self, duration_seconds: int, owner_uid: str) -> None:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.node_name,
                "namespace": LEASE_NAMESPACE,
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": owner_uid}
                ],
            },
            "spec": {
                "holderIdentity": self.node_name,
                "leaseDurationSeconds": duration_seconds,
                "renewTime": now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
        }
        try:
            await self.coordination.patch_namespaced_lease(
                self.node_name, LEASE_NAMESPACE, {"spec": body["spec"]}, **MERGE_PATCH
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            await self.coordination.create_namespaced_lease(LEASE_NAMESPACE, self._body(body))

    # --- pods -----------------------------------------------------------------------------------
    async def list_pods(self) -> tuple[list[Manifest], str]:
        listing = self._plain(
            await self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node_name}")
        )
        return listing.get("items") or [], listing["metadata"]["resourceVersion"]

    async def watch_pods(self, resource_version: str) -> AsyncIterator[tuple[str, Manifest]]:
        """Pod events after `resource_version`; ends when the server closes the watch."""
        stream = watch.Watch()
        async with stream:
            async for event in stream.stream(
                self.core.list_pod_for_all_namespaces,
                field_selector=f"spec.nodeName={self.node_name}",
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=300,
            ):
                yield event["type"], event["raw_object"]

    async def read_pod(self, namespace: str, name: str) -> Manifest | None:
        try:
            return self._plain(await self.core.read_namespaced_pod(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def patch_pod_status(self, namespace: str, name: str, status: Manifest) -> Manifest:
        return self._plain(
            await self.core.patch_namespaced_pod_status(name, namespace, {"status": status}, **MERGE_PATCH)
        )

    async def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        """Remove a terminated pod's object for good (the node's last word on a pod)."""
        body = client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid))
        try:
            await self.core.delete_namespaced_pod(name, namespace, body=body)
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone already, or a new pod with the same name
                raise

    # --- what pods refer to -----------------------------------------------------------------------
    async def config_map_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        try:
            raw = self._plain(await self.core.read_namespaced_config_map(name, namespace))
        except ApiException as exc:
            if exc.status in (403, 404):  # 403: the Node authorizer denies objects no pod of ours uses yet
                return None
            raise
        data = {k: v.encode() for k, v in (raw.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (raw.get("binaryData") or {}).items()})
        return data

    async def secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        try:
            raw = self._plain(await self.core.read_namespaced_secret(name, namespace))
        except ApiException as exc:
            if exc.status in (403, 404):
                return None
            raise
        return {k: base64.b64decode(v) for k, v in (raw.get("data") or {}).items()}

    async def persistent_volume_claim(self, namespace: str, name: str) -> Manifest | None:
        try:
            return self._plain(await self.core.read_namespaced_persistent_volume_claim(name, namespace))
        except ApiException as exc:
            if exc.status in (403, 404):
                return None
            raise

    async def persistent_volume(self, name: str) -> Manifest | None:
        try:
            return self._plain(await self.core.read_persistent_volume(name))
        except ApiException as exc:
            if exc.status in (403, 404):  # 403: the Node authorizer learns of a claim's binding a moment late
                return None
            raise

    async def services(self, namespace: str) -> list[Manifest]:
        listing = self._plain(await self.core.list_namespaced_service(namespace))
        return listing.get("items") or []

    async def service_account_token(
        self, pod: Manifest, audience: str, expiration_seconds: int
    ) -> tuple[str, float]:
        """A token for the pod's service account, bound to the pod; returns it with its expiry (epoch)."""
        metadata = pod["metadata"]
        spec: Manifest = {
            "expirationSeconds": expiration_seconds,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": metadata["name"],
                "uid": metadata["uid"],
            },
        }
        if audience:
            spec["audiences"] = [audience]
        result = self._plain(
            await self.core.create_namespaced_service_account_token(
                pod["spec"].get("serviceAccountName") or "default",
                metadata["namespace"],
                self._body({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}),
            )
        )
        expiry = datetime.datetime.fromisoformat(
            result["status"]["expirationTimestamp"].replace("Z", "+00:00")
        )
        return result["status"]["token"], expiry.timestamp()

    # --- events and authorization -------------------------------------------------------------------
    async def event(self, pod: Manifest, event_type: str, reason: str, message: str) -> None:
        metadata = pod["metadata"]
        stamp = rfc3339()
        body = {
            "metadata": {
                "name": f"{metadata['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": metadata["namespace"],
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata["uid"],
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": "kubelet", "host": self.node_name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node_name,
        }
        try:
            await self.core.create_namespaced_event(metadata["namespace"], self._body(body))
        except ApiException as exc:  # an event is best effort: never let it stop the pod's work
            log.debug(
                "event %s for %s/%s not recorded: %s", reason, metadata["namespace"], metadata["name"], exc
            )

    async def may(self, user: str, groups: list[str], verb: str, subresource: str) -> bool:
        review = await self.authorization.create_subject_access_review(
            self._body(
                {
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SubjectAccessReview",
                    "spec": {
                        "user": user,
                        "groups": groups,
                        "resourceAttributes": {
                            "verb": verb,
                            "resource": "nodes",
                            "subresource": subresource,
                            "name": self.node_name,
                        },
                    },
                }
            )
        )
        return bool(review.status.allowed)


async def retry_forever(what: str, attempt: Any, delay: float = 1.0) -> Any:
    """Retry an API call through a restarting apiserver; log each failure once."""
    while True:
        try:
            return await attempt()
        except (TimeoutError, ApiException, OSError) as exc:
            log.warning("%s failed (%s); retrying", what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)
