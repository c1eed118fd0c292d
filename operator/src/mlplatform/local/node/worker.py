"""One pod's life on the node: the kubelet's sync loop, as an asyncio task per pod.

Each pass compares the pod's spec with what runs (read back from the runtime's records, never from
memory alone), decides what to do next and has its collaborators do it — prepare the images' environments,
write volumes (podvolumes.py), start the sandbox, start or restart containers and stop them
(containers.py), probe them (podprobes.py) — and reports the pod's status if it changed (podstatus.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from mlplatform.aio import wait_woken
from mlplatform.local.files import write_if_changed
from mlplatform.local.images import ensure_image, prepared_key, pull_failure, resolve_image
from mlplatform.local.node import runtime
from mlplatform.local.node.containers import PodContainers
from mlplatform.local.node.containerspec import container_spec
from mlplatform.local.node.podcontext import (
    NodeContext,
    PodContext,
    epoch,
    main_containers_ended,
    sidecar_names,
)
from mlplatform.local.node.podprobes import PodProbes
from mlplatform.local.node.podstatus import PodStatusReporter
from mlplatform.local.node.podvolumes import PodVolumes
from mlplatform.local.node.shim import ContainerSpec
from mlplatform.local.node.status import Attempt
from mlplatform.local.node.validation import refusal_message

Manifest = dict[str, Any]
log = logging.getLogger(__name__)
RESYNC_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 300


def backoff_seconds(next_number: int) -> int:
    """The kubelet's crash back-off: restart at once the first time, then 10s, 20s, … up to 5 minutes."""
    return 0 if next_number <= 1 else min(10 * 2 ** (next_number - 2), MAX_BACKOFF_SECONDS)


class PodWorker:
    def __init__(self, node: NodeContext, manifest: Manifest) -> None:
        self.pod = PodContext(node, manifest)
        self.volumes = PodVolumes(self.pod)
        self.probes = PodProbes(self.pod, on_failure=self.restart_unhealthy)
        self.containers = PodContainers(self.pod, self.probes, self.container_spec)
        self.status = PodStatusReporter(self.pod, self.probes, self.containers)
        self.deleted = False
        self.task: asyncio.Task[None] | None = None

    # --- the loop
    @property
    def reported(self) -> Manifest | None:
        """The status last written (the agent presets it for a pod that had ended: it never runs again)."""
        return self.status.reported

    @reported.setter
    def reported(self, status: Manifest | None) -> None:
        self.status.reported = status

    def update(self, manifest: Manifest) -> None:
        self.pod.manifest = manifest
        self.pod.wake.set()

    def mark_deleted(self) -> None:
        self.deleted = True
        self.pod.wake.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"pod-{self.pod.name}")

    async def run(self) -> None:
        failures = 0
        pod = self.pod
        while True:
            pod.wake.clear()
            if pod.wake_at is not None and pod.wake_at <= time.monotonic():
                pod.wake_at = None  # due: this pass handles it (a later one stays pending)
            try:
                if await self.sync():
                    return
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                log.exception("sync of pod %s failed", pod.name)
                pod.wake_at = time.monotonic() + min(2**failures, 30)
            delay = RESYNC_SECONDS if pod.wake_at is None else max(0.0, pod.wake_at - time.monotonic())
            await wait_woken(pod.wake, min(delay, RESYNC_SECONDS))

    # --- the sync pass
    async def sync(self) -> bool:
        """One pass; True when the pod is gone and the worker is done."""
        manifest = self.pod.manifest
        if self.deleted or manifest["metadata"].get("deletionTimestamp"):
            await self.containers.terminate(self.pod.grace_seconds())
            if not self.deleted:
                await self.status.report_final()
                metadata = manifest["metadata"]
                await self.pod.node.api.delete_pod(metadata["namespace"], metadata["name"], self.pod.uid)
            await asyncio.to_thread(runtime.remove_pod_dir, self.pod.layout)
            self.containers.unwatch_exits()
            return True
        await asyncio.to_thread(self._remember_pod)
        if self.status.finished():
            await self.containers.stop_everything()
            return False
        if self.deadline_exceeded():
            await self.containers.terminate(self.pod.grace_seconds(), reason="DeadlineExceeded")
            self.status.terminal_reason = {
                "reason": "DeadlineExceeded",
                "message": "Pod was active on the node longer than the specified deadline",
            }
            await self.status.report()
            return False
        if await self.prepare() and await self.run_init_containers():
            await self.run_containers()
        await self.status.report()
        if self.status.finished():
            await self.containers.stop_everything()
        return False

    def _remember_pod(self) -> None:
        self.pod.layout.root.mkdir(parents=True, exist_ok=True)
        # Atomically: the log endpoint reads it at any moment, and a half-written file loses the pod (404).
        write_if_changed(self.pod.layout.pod_file, json.dumps(self.pod.manifest))

    def deadline_exceeded(self) -> bool:
        deadline = self.pod.spec.get("activeDeadlineSeconds")
        started = (self.pod.manifest.get("status") or {}).get("startTime")
        return bool(deadline and started and time.time() - epoch(started) > int(deadline))

    # --- images, volumes, sandbox
    async def prepare(self) -> bool:
        """Environments for every image, the pod's volumes and its sandbox; False while not possible yet."""
        if refused := refusal_message(self.pod.manifest):  # fields the node cannot honour: it never starts
            for container in self.pod.all_containers():
                self.pod.waiting[container["name"]] = ("CreateContainerConfigError", refused)
            await self.pod.event("Warning", "Failed", f"Error: {refused}")
            return False
        ready = True
        for container in self.pod.all_containers():
            if not await self.prepare_image(container):
                ready = False
        if not ready:
            return False
        if not await self.volumes.sync():
            return False
        return await self.ensure_sandbox()

    async def prepare_image(self, container: Manifest) -> bool:
        pod, node = self.pod, self.pod.node
        name, image = container["name"], container["image"]
        environment = resolve_image(image, node.images())
        if message := pull_failure(image, environment):  # not in the map, or a line the map cannot reproduce
            already_failed = pod.waiting.get(name, ("",))[0] in ("ErrImagePull", "ImagePullBackOff")
            pod.waiting[name] = ("ImagePullBackOff" if already_failed else "ErrImagePull", message)
            await pod.event("Warning", "Failed", message)
            pod.wake_in(20)
            return False
        assert environment is not None  # pull_failure says why when it is None
        pod.images[name] = environment
        key = prepared_key(environment)
        if key not in node.environments:
            lock = node.environment_locks.setdefault(key, asyncio.Lock())
            async with lock:
                if key not in node.environments:
                    if pod.attempts(name)[0] is None:
                        pod.waiting[name] = ("ContainerCreating", f"building the environment of {image}")
                        await self.status.report()
                    await pod.event("Normal", "Pulling", f'Building environment for image "{image}"')
                    started = time.monotonic()
                    try:
                        prepared = await asyncio.to_thread(
                            ensure_image,
                            environment,
                            node.config.cache_dir,
                            lambda line: log.info("%s", line),
                        )
                    except Exception as exc:
                        message = f'Failed to pull image "{image}": {exc}'
                        pod.waiting[name] = ("ErrImagePull", message)
                        await pod.event("Warning", "Failed", message)
                        pod.wake_in(30)
                        return False
                    node.environments[key] = prepared
                    await pod.event(
                        "Normal",
                        "Pulled",
                        f'Environment for image "{image}" ready in {time.monotonic() - started:.1f}s',
                    )
        if pod.waiting.get(name, ("",))[0] in ("ErrImagePull", "ImagePullBackOff", "ContainerCreating"):
            del pod.waiting[name]
        return True

    def visible_paths(self) -> list[str]:
        paths = {str(Path(sys.base_prefix).resolve())}
        for environment in self.pod.images.values():
            paths.add(str(environment.context.resolve()))
            if (prepared := self.pod.node.environments.get(prepared_key(environment))) is not None:
                paths.update(str(folder) for folder in prepared.host_folders)
        return sorted(paths)

    def private_paths(self) -> list[str]:
        """Host folders no pod sees: the user's home, the platform's cache and state (its keys, tokens and
        credentials) and the checkout holding the image map (the image folders in it stay visible)."""
        node = self.pod.node
        folders = (Path.home(), node.config.cache_dir, node.config.state_dir, node.image_map_file.parent)
        return sorted({str(folder.resolve()) for folder in folders})

    async def ensure_sandbox(self) -> bool:
        pod = self.pod
        if pod.sandbox_alive():
            return True
        if runtime.read_sandbox(pod.layout) is not None:
            # The sandbox died (host reboot, someone killed it): its containers died with their namespaces.
            await pod.event(
                "Normal", "SandboxChanged", "Pod sandbox changed, it will be killed and re-created."
            )
            await asyncio.to_thread(runtime.kill_pod, pod.layout, pod.node.layout)
        try:
            await asyncio.to_thread(
                runtime.create_sandbox,
                self.volumes.sandbox_pod(),
                pod.layout,
                pod.node.layout,
                pod.node.config.network,
                visible_paths=self.visible_paths(),
                hidden_paths=self.private_paths(),
            )
        except (runtime.SandboxError, OSError) as exc:
            await pod.event("Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {exc}")
            pod.wake_in(5)
            return False
        return True

    # --- containers
    async def run_init_containers(self) -> bool:
        """Run init containers in order; True once the pod is initialized. One that runs to completion must
        succeed before the next starts; a sidecar (restartPolicy Always) only has to start (postStart hook
        ended, startup probe passed), then runs beside the next ones, restarted whenever it ends."""
        pod = self.pod
        if sidecar_names(pod.spec) and self.main_ended():
            return True  # the pod is ending: nothing of its init sequence runs again, sidecars included
        for index, container in enumerate(pod.spec.get("initContainers") or []):
            name = container["name"]
            if pod.is_sidecar(name):
                await self.sync_container(container)
                if self.status.view(container).started_and_running or self.sequence_passed(index):
                    continue
                return False
            latest, _ = pod.attempts(name)
            if latest is not None and latest.succeeded:
                continue
            if latest is None:
                await self.containers.start(container, 0)
            elif latest.finished:
                if pod.restarts(container, latest):
                    await self.restart_after_backoff(container, latest)
                else:
                    await self.containers.stop_sidecars()  # the pod failed: the kubelet stops what still runs
            else:
                self.containers.watch_exit(name, latest.number)
            return False
        return True

    def sequence_passed(self, index: int) -> bool:
        """Whether a container after init container `index` ever ran: the init sequence went past it, so a
        sidecar restarting there holds nothing back (the kubelet's isPreviouslyInitialized)."""
        spec = self.pod.spec
        later = [*(spec.get("initContainers") or [])[index + 1 :], *spec["containers"]]
        return any(runtime.attempt_numbers(self.pod.layout, c["name"]) for c in later)

    async def run_containers(self) -> None:
        for container in self.pod.spec["containers"]:
            if self.containers.any_post_start_running():
                return  # as the kubelet's sync, which waits for a postStart hook: nothing else starts
            await self.sync_container(container)
        if sidecar_names(self.pod.spec) and self.main_ended():
            self.containers.drop_sidecar_backoffs()  # from the first status that shows the pod ending
            await self.status.report()  # the main containers' end first: the kubelet reports it, then stops
            await self.containers.stop_sidecars()

    async def sync_container(self, container: Manifest) -> None:
        """Start a container, restart it once its back-off allows, or watch the attempt that runs."""
        name = container["name"]
        latest, _ = self.pod.attempts(name)
        if latest is None:
            await self.containers.start(container, 0)
        elif latest.finished:
            self.probes.stop(name)
            if self.pod.restarts(container, latest):
                await self.restart_after_backoff(container, latest)
        elif latest.running:
            if latest.started_at is None:
                self.pod.wake_in(0.2)  # the shim has not recorded the start yet
            self.containers.watch_exit(name, latest.number)
            post_start_running = self.containers.post_start_running(name, latest.number)
            unprobed = not self.probes.probing(name) and not post_start_running
            if unprobed and (name, latest.number) not in self.containers.stopping:
                self.probes.start(container, latest)  # an attempt re-adopted after an agent restart

    def main_ended(self) -> bool:
        spec = self.pod.spec
        latest = [self.pod.attempts(c["name"])[0] for c in spec["containers"]]
        return main_containers_ended(spec.get("restartPolicy", "Always"), latest)

    async def restart_after_backoff(self, container: Manifest, latest: Attempt) -> None:
        name = container["name"]
        delay = backoff_seconds(latest.number + 1)
        finished = epoch(latest.finished_at) if latest.finished_at else time.time()
        remaining = finished + delay - time.time()
        if remaining > 0:
            message = f"back-off {delay}s restarting failed container={name} pod={self.pod.pod_ref()}"
            self.pod.waiting[name] = ("CrashLoopBackOff", message)
            await self.pod.event("Warning", "BackOff", "Back-off restarting failed container " + name)
            self.pod.wake_in(remaining)
            return
        self.pod.waiting.pop(name, None)
        await self.containers.start(container, latest.number + 1)

    async def restart_unhealthy(self, name: str, number: int, kind: str) -> None:
        """A liveness or startup probe failed: the container is killed, and restarted by its policy."""
        await self.pod.event("Normal", "Killing", f"Container {name} failed {kind} probe, will be restarted")
        await self.containers.stop_container(name, number, self.pod.grace_seconds())
        self.pod.wake.set()

    async def container_spec(self, container: Manifest, number: int) -> ContainerSpec:
        return await container_spec(self.pod, self.volumes, container, number)
