"""What a pod's worker and its collaborators (volumes, probes, containers, status) share: the node's context,
the pod as last read, where its records live, why its containers wait, its events and the worker's wake-up;
and the pod's pure rules: which containers are sidecars, which run to completion, what restarts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from mlplatform.local.config import LocalConfig
from mlplatform.local.images import ImageEnvironment, PreparedImage, load_image_map
from mlplatform.local.node import runtime
from mlplatform.local.node.api import NodeApi
from mlplatform.local.node.layout import NodeLayout, PodLayout
from mlplatform.local.node.logs import parse_time
from mlplatform.local.node.probes import ProbeTarget
from mlplatform.local.node.status import Attempt

Manifest = dict[str, Any]
EVENT_REPEAT_SECONDS = 60  # the same event of a pod is sent at most once a minute


@dataclass
class NodeContext:
    """What every pod worker shares."""

    api: NodeApi
    config: LocalConfig
    layout: NodeLayout
    image_map_file: Path
    allocatable: dict[str, str]
    http: aiohttp.ClientSession
    environments: dict[str, PreparedImage] = field(default_factory=dict)  # prepared images by context
    environment_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _image_map: tuple[float, list[ImageEnvironment]] = (-1.0, [])

    def images(self) -> list[ImageEnvironment]:
        """The image map, read again whenever its file changes: adding an image needs no restart."""
        mtime = self.image_map_file.stat().st_mtime
        if mtime != self._image_map[0]:
            self._image_map = (mtime, load_image_map(self.image_map_file))
        return self._image_map[1]


def should_restart(restart_policy: str, attempt: Attempt, init: bool) -> bool:
    if restart_policy == "Never":
        return False
    if restart_policy == "OnFailure" or init:
        return attempt.exit_code != 0
    return True


def sidecar_names(spec: Manifest) -> list[str]:
    """A pod's native sidecars in order: its init containers with restartPolicy Always, which start in the
    init sequence and then run beside the main containers."""
    return [c["name"] for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]


def main_containers_ended(restart_policy: str, latest: Sequence[Attempt | None]) -> bool:
    """Whether every main container (its `latest` attempt) ran and ended for good: the kubelet then stops
    the pod's sidecars, which would otherwise keep it running for nothing."""
    return all(
        attempt is not None and attempt.finished and not should_restart(restart_policy, attempt, init=False)
        for attempt in latest
    )


def epoch(stamp: str) -> float:
    """Seconds since the epoch of an API timestamp (RFC 3339, with or without fractions)."""
    return parse_time(stamp).timestamp()


class PodContext:
    """One pod as its collaborators see it. `manifest` is the pod as last read or reported; `waiting` holds
    why a container does not run (reason, message) until it starts; `images` the image of each container."""

    def __init__(self, node: NodeContext, manifest: Manifest) -> None:
        self.node = node
        self.manifest = manifest
        self.uid: str = manifest["metadata"]["uid"]
        self.layout: PodLayout = node.layout.pod(self.uid)
        self.waiting: dict[str, tuple[str, str]] = {}
        self.images: dict[str, ImageEnvironment] = {}
        self.wake = asyncio.Event()
        self.wake_at: float | None = None
        self.recent_events: dict[tuple[str, str], float] = {}

    @property
    def spec(self) -> Manifest:
        spec: Manifest = self.manifest["spec"]
        return spec

    @property
    def name(self) -> str:
        return f"{self.manifest['metadata']['namespace']}/{self.manifest['metadata']['name']}"

    def pod_ref(self) -> str:
        """The pod as the kubelet names it in messages: name_namespace(uid)."""
        metadata = self.manifest["metadata"]
        return f"{metadata['name']}_{metadata['namespace']}({self.uid})"

    def wake_in(self, seconds: float) -> None:
        at = time.monotonic() + seconds
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)

    async def event(self, kind: str, reason: str, message: str) -> None:
        key = (reason, message)
        if time.monotonic() - self.recent_events.get(key, -1e9) < EVENT_REPEAT_SECONDS:
            return
        self.recent_events[key] = time.monotonic()
        await self.node.api.event(self.manifest, kind, reason, message)

    def grace_seconds(self) -> int:
        metadata = self.manifest["metadata"]
        value = metadata.get("deletionGracePeriodSeconds")
        return int(value if value is not None else self.spec.get("terminationGracePeriodSeconds", 30))

    # --- its containers
    def all_containers(self) -> list[Manifest]:
        return [*(self.spec.get("initContainers") or []), *self.spec["containers"]]

    def container(self, name: str) -> Manifest | None:
        return next((c for c in self.all_containers() if c["name"] == name), None)

    def attempts(self, name: str) -> tuple[Attempt | None, Attempt | None]:
        """The latest and the previous attempt of a container, as their shims recorded them."""
        numbers = runtime.attempt_numbers(self.layout, name)
        latest = runtime.read_attempt(self.layout, name, numbers[-1]) if numbers else None
        previous = runtime.read_attempt(self.layout, name, numbers[-2]) if len(numbers) > 1 else None
        return latest, previous

    def is_init(self, name: str) -> bool:
        return any(c["name"] == name for c in self.spec.get("initContainers") or [])

    def is_sidecar(self, name: str) -> bool:
        return name in sidecar_names(self.spec)

    def runs_to_completion(self, name: str) -> bool:
        """An init container other than a sidecar: it runs once, unprobed, before the next one starts."""
        return self.is_init(name) and not self.is_sidecar(name)

    def restarts(self, container: Manifest, attempt: Attempt) -> bool:
        """Whether an ended attempt runs again: a sidecar's whenever it ends, whatever the pod's policy."""
        name = container["name"]
        policy = "Always" if self.is_sidecar(name) else self.spec.get("restartPolicy", "Always")
        return should_restart(policy, attempt, init=self.runs_to_completion(name))

    # --- where its containers are reached
    def sandbox_alive(self) -> bool:
        record = runtime.read_sandbox(self.layout)
        return record is not None and record.holder.alive()

    def target(self, container: Manifest, number: int) -> ProbeTarget:
        """Where probes and lifecycle hooks reach one attempt of a container."""
        name = container["name"]
        record = runtime.read_sandbox(self.layout)
        ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")}
        return ProbeTarget(
            record.ip or self.node.config.network.host_address if record else "",
            lambda: runtime.container_pid(self.layout, name, number),
            ports,
            self.attempt_env(name, number),
        )

    def attempt_env(self, name: str, number: int) -> dict[str, str]:
        """The environment an attempt was started with (exec handlers run with it); empty if unknown."""
        spec_file = self.layout.container(name, number).spec_file
        try:
            env: dict[str, str] = json.loads(spec_file.read_text())["env"]
            return env
        except (OSError, ValueError, KeyError):
            return {}
