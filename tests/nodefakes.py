"""A stand-in for the node's Kubernetes API (NodeApi), for unit tests of the pod worker's parts without a
cluster: it serves ConfigMaps, Secrets, claims, PersistentVolumes, Services and tokens from dicts and records
the events, status patches and deletions it is sent. Everything else in those tests is real: the pod's
folders under a temporary directory, the files written there, the processes started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from mlplatform.local.config import LocalConfig
from mlplatform.local.node.api import NodeApi
from mlplatform.local.node.layout import NodeLayout
from mlplatform.local.node.podcontext import NodeContext, PodContext

Manifest = dict[str, Any]


class FakeNodeApi(NodeApi):
    def __init__(self) -> None:  # no API client: nothing here talks to a server
        self.config_maps: dict[str, dict[str, bytes]] = {}
        self.secrets: dict[str, dict[str, bytes]] = {}
        self.claims: dict[str, Manifest] = {}
        self.persistent_volumes: dict[str, Manifest] = {}
        self.service_lists: dict[str, list[Manifest]] = {}
        self.token_expiry = 0.0  # when the tokens it hands out expire (epoch seconds)
        self.tokens_issued: list[str] = []  # by audience
        self.events: list[tuple[str, str, str]] = []  # (type, reason, message)
        self.statuses: list[Manifest] = []
        self.deleted: list[str] = []

    async def config_map_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return self.config_maps.get(name)

    async def secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return self.secrets.get(name)

    async def persistent_volume_claim(self, namespace: str, name: str) -> Manifest | None:
        return self.claims.get(name)

    async def persistent_volume(self, name: str) -> Manifest | None:
        return self.persistent_volumes.get(name)

    async def services(self, namespace: str) -> list[Manifest]:
        return self.service_lists.get(namespace, [])

    async def service_account_token(
        self, pod: Manifest, audience: str, expiration_seconds: int
    ) -> tuple[str, float]:
        self.tokens_issued.append(audience)
        return f"token-{len(self.tokens_issued)}", self.token_expiry

    async def event(self, pod: Manifest, event_type: str, reason: str, message: str) -> None:
        self.events.append((event_type, reason, message))

    async def patch_pod_status(self, namespace: str, name: str, status: Manifest) -> Manifest:
        self.statuses.append(status)
        return {"status": status}

    async def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        self.deleted.append(name)

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


# A pod spec with native sidecars (proxy, logger) around a regular init container, and two main ones.
SIDECAR_SPEC = {
    "initContainers": [
        {"name": "proxy", "restartPolicy": "Always"},
        {"name": "setup"},
        {"name": "logger", "restartPolicy": "Always"},
    ],
    "containers": [{"name": "main"}, {"name": "helper"}],
}


def pod_manifest(*containers: Manifest, uid: str = "0123456789abcdef", **spec: Any) -> Manifest:
    return {
        "metadata": {"name": "web", "namespace": "team-a", "uid": uid},
        "spec": {"containers": list(containers), **spec},
    }


def pod_context(
    tmp_path: Path, api: FakeNodeApi, http: aiohttp.ClientSession, manifest: Manifest
) -> PodContext:
    """A pod on a node whose state lives under `tmp_path` (no sandbox: nothing of the pod runs yet)."""
    config = LocalConfig(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    image_map = tmp_path / "local-images.yaml"
    image_map.touch()
    node = NodeContext(api, config, NodeLayout(tmp_path / "node"), image_map, {"cpu": "2"}, http)
    return PodContext(node, manifest)
