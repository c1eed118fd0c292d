"""A pod's volumes on the node: the objects they refer to (ConfigMaps, Secrets, service-account tokens,
claims and their bound volumes) read from the API, rendered and written into the pod's volume folders,
refreshed while the pod runs as the kubelet refreshes them; and what each container mounts of them."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from mlplatform.local.node.podcontext import PodContext
from mlplatform.local.node.sandbox import HOST_PATHS_IN_POD, VOLUMES_IN_POD
from mlplatform.local.node.shim import Mount
from mlplatform.local.node.volumes import (
    ClaimError,
    VolumeError,
    VolumeLookups,
    binds_host_folder,
    claim_names,
    claim_sources,
    read_only_volume,
    referenced_objects,
    rendered_files,
    token_audiences,
    with_claim_sources,
    write_atomically,
)

Manifest = dict[str, Any]
ObjectData = dict[str, dict[str, bytes] | None]  # ConfigMaps or Secrets by name: their data, None if missing
log = logging.getLogger(__name__)
VOLUME_RESYNC_SECONDS = 30.0
TOKEN_SECONDS = 3607
TOKEN_REFRESH_SHARE = 0.2  # a token is renewed once less than this share of its lifetime is left


def token_due(token: tuple[str, float] | None, now: float) -> bool:
    """Whether a token (with its expiry, epoch seconds) is to be requested (again)."""
    return token is None or token[1] - now < TOKEN_SECONDS * TOKEN_REFRESH_SHARE


def prepare_plain_volume(volume: Manifest, folder: Path, fs_group: int | None) -> None:
    """A volume the node renders nothing into: an emptyDir's folder (group-owned with an fsGroup), a
    hostPath's checked or created host folder; a claim's folder is mounted with the sandbox."""
    if "persistentVolumeClaim" in volume:  # mounted with the sandbox, as its bound volume's folder
        return
    if "hostPath" in volume:  # the sandbox binds the host folder itself
        host = Path(volume["hostPath"]["path"])
        kind = volume["hostPath"].get("type")
        if kind == "DirectoryOrCreate" and not host.exists():
            host.mkdir(parents=True)
        elif kind == "Directory" and not host.is_dir():
            raise VolumeError(f"hostPath type check failed: {host} is not a directory")
        return
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777 if fs_group is None else 0o2775)
    if fs_group is not None:
        os.chown(folder, -1, int(fs_group))


def volume_mounts(pod: Manifest, container: Manifest) -> list[Mount]:
    """The container's volumeMounts as the shim mounts them, from where the sandbox shows each volume."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    mounts = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"], {})
        source = f"{HOST_PATHS_IN_POD if binds_host_folder(volume) else VOLUMES_IN_POD}/{mount['name']}"
        if sub := mount.get("subPath"):
            source = f"{source}/{sub}"
        readonly = bool(mount.get("readOnly")) or read_only_volume(volume)
        mounts.append(Mount(source, mount["mountPath"], readonly))
    return mounts


class PodVolumes:
    def __init__(self, pod: PodContext) -> None:
        self.pod = pod
        self.tokens: dict[str, tuple[str, float]] = {}  # by audience: the token and when it expires
        self.synced_at = 0.0
        self.claim_sources: dict[str, Manifest] = {}  # hostPath sources of the claim volumes, by volume

    def sandbox_pod(self) -> Manifest:
        """The pod as its sandbox is built: its claims replaced by their bound volumes' folders."""
        return with_claim_sources(self.pod.manifest, self.claim_sources)

    async def referenced_data(self) -> tuple[ObjectData, ObjectData]:
        """The data of every ConfigMap and Secret the pod refers to, read now (None: it does not exist)."""
        namespace = self.pod.manifest["metadata"]["namespace"]
        config_map_names, secret_names = referenced_objects(self.pod.manifest)
        api = self.pod.node.api
        config_maps = {n: await api.config_map_data(namespace, n) for n in config_map_names}
        secrets = {n: await api.secret_data(namespace, n) for n in secret_names}
        return config_maps, secrets

    async def lookups(self, with_claims: bool) -> VolumeLookups:
        config_maps, secrets = await self.referenced_data()
        api = self.pod.node.api
        for audience in token_audiences(self.pod.manifest):
            if token_due(self.tokens.get(audience), time.time()):
                self.tokens[audience] = await api.service_account_token(
                    self.pod.manifest, audience, TOKEN_SECONDS
                )
        claims, bound = await self.claimed_volumes() if with_claims else ({}, {})
        return VolumeLookups(
            config_maps,
            secrets,
            {a: t for a, (t, _) in self.tokens.items()},
            self.pod.node.allocatable,
            claims,
            bound,
        )

    async def claimed_volumes(self) -> tuple[dict[str, Manifest | None], dict[str, Manifest | None]]:
        """The claims the pod uses and the PersistentVolumes bound to them, read now (None: not found)."""
        namespace, api = self.pod.manifest["metadata"]["namespace"], self.pod.node.api
        claims = {n: await api.persistent_volume_claim(namespace, n) for n in claim_names(self.pod.manifest)}
        bound = {c["spec"]["volumeName"] for c in claims.values() if c and c["spec"].get("volumeName")}
        return claims, {n: await api.persistent_volume(n) for n in bound}

    async def sync(self) -> bool:
        """Write the pod's volumes (again every 30s while it runs); False while one cannot be set up: its
        containers that never ran wait in ContainerCreating, with a FailedMount event."""
        alive = self.pod.sandbox_alive()
        if time.monotonic() - self.synced_at < VOLUME_RESYNC_SECONDS and alive:
            return True
        lookups = await self.lookups(with_claims=not alive)
        try:
            await asyncio.to_thread(self.write, lookups, not alive)
        except VolumeError as exc:
            await self.not_ready(exc)
            return False
        self.synced_at = time.monotonic()
        for name, (reason, _) in list(self.pod.waiting.items()):
            if reason == "ContainerCreating":
                del self.pod.waiting[name]
        return True

    def write(self, lookups: VolumeLookups, claims_too: bool) -> None:
        """Render and write every volume (in a thread: it touches files)."""
        pod = self.pod.manifest
        fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
        if claims_too:  # claims mount with the sandbox, once: a later change of a claim unmounts nothing
            self.claim_sources = claim_sources(pod, lookups)
        for volume in self.sandbox_pod()["spec"].get("volumes") or []:
            files = rendered_files(volume, pod, lookups)
            folder = self.pod.layout.volume(volume["name"])
            if files is None:
                prepare_plain_volume(volume, folder, fs_group)
            else:
                write_atomically(folder, files, fs_group)

    async def not_ready(self, problem: VolumeError) -> None:
        log.info("pod %s: volumes not ready: %s", self.pod.name, problem)
        for container in self.pod.all_containers():
            never_started = self.pod.attempts(container["name"])[0] is None
            if never_started and container["name"] not in self.pod.waiting:
                self.pod.waiting[container["name"]] = ("ContainerCreating", "")
        message = str(problem) if isinstance(problem, ClaimError) else f"MountVolume.SetUp failed: {problem}"
        await self.pod.event("Warning", "FailedMount", message)
        self.pod.wake_in(10)
