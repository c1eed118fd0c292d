"""One pod's life on the node: the kubelet's sync loop, as an asyncio task per pod.

Each pass compares the pod's spec with what runs (read back from the runtime's records, never from
memory alone), acts — build the image's environment, write volumes, start the sandbox, start or restart
containers, run probes, stop everything on deletion — and reports the pod's status if it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio.client.rest import ApiException

from mlplatform.local.config import LocalConfig
from mlplatform.local.files import write_if_changed
from mlplatform.local.images import ImageEnvironment, ensure_environment, load_image_map, resolve_image
from mlplatform.local.node import runtime
from mlplatform.local.node.api import NodeApi, rfc3339
from mlplatform.local.node.environment import (
    ContainerConfigError,
    Lookups,
    container_argv,
    container_env,
    quantity_bytes,
    quantity_millicores,
    service_link_env,
)
from mlplatform.local.node.hooks import failure_message, run_hook, signal_grace
from mlplatform.local.node.layout import NodeLayout, PodLayout
from mlplatform.local.node.logs import parse_time
from mlplatform.local.node.probes import ProbeRunner, ProbeTarget
from mlplatform.local.node.sandbox import HOST_PATHS_IN_POD, VOLUMES_IN_POD
from mlplatform.local.node.shim import ContainerSpec, Identity, Mount
from mlplatform.local.node.status import Attempt, ContainerView, pod_status
from mlplatform.local.node.volumes import (
    VolumeError,
    VolumeLookups,
    referenced_objects,
    rendered_files,
    token_audiences,
    write_atomically,
)

Manifest = dict[str, Any]
ObjectData = dict[str, dict[str, bytes] | None]  # ConfigMaps or Secrets by name: their data, None if missing
log = logging.getLogger(__name__)
RESYNC_SECONDS = 10.0
VOLUME_RESYNC_SECONDS = 30.0
TOKEN_SECONDS = 3607
MAX_BACKOFF_SECONDS = 300
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


@dataclass
class NodeContext:
    """What every pod worker shares."""

    api: NodeApi
    config: LocalConfig
    layout: NodeLayout
    image_map_file: Path
    allocatable: dict[str, str]
    http: aiohttp.ClientSession
    environments: dict[str, Path] = field(default_factory=dict)  # built environments by image context
    environment_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _image_map: tuple[float, list[ImageEnvironment]] = (-1.0, [])

    def images(self) -> list[ImageEnvironment]:
        """The image map, read again whenever its file changes: adding an image needs no restart."""
        mtime = self.image_map_file.stat().st_mtime
        if mtime != self._image_map[0]:
            self._image_map = (mtime, load_image_map(self.image_map_file))
        return self._image_map[1]


def backoff_seconds(next_number: int) -> int:
    """The kubelet's crash back-off: restart at once the first time, then 10s, 20s, … up to 5 minutes."""
    return 0 if next_number <= 1 else min(10 * 2 ** (next_number - 2), MAX_BACKOFF_SECONDS)


def should_restart(restart_policy: str, attempt: Attempt, init: bool) -> bool:
    if restart_policy == "Never":
        return False
    if restart_policy == "OnFailure" or init:
        return attempt.exit_code != 0
    return True


def lifecycle_handler(container: Manifest | None, hook: str) -> Manifest | None:
    """The container's `postStart` or `preStop` handler, if it has one."""
    handler: Manifest | None = ((container or {}).get("lifecycle") or {}).get(hook)
    return handler


def epoch(stamp: str) -> float:
    """Seconds since the epoch of an API timestamp (RFC 3339, with or without fractions)."""
    return parse_time(stamp).timestamp()


class PodWorker:
    def __init__(self, node: NodeContext, pod: Manifest) -> None:
        self.node = node
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.layout: PodLayout = node.layout.pod(self.uid)
        self.wake = asyncio.Event()
        self.deleted = False
        self.waiting: dict[str, tuple[str, str]] = {}
        self.images: dict[str, ImageEnvironment] = {}
        self.probes: dict[str, dict[str, ProbeRunner]] = {}
        self.probe_results: dict[tuple[str, str], bool] = {}
        self.tokens: dict[str, tuple[str, float]] = {}
        self.volumes_synced_at = 0.0
        self.wake_at: float | None = None
        self.reported: Manifest | None = None
        self.terminal_reason: dict[str, str] | None = None
        self.recent_events: dict[tuple[str, str], float] = {}
        self.exit_watches: dict[tuple[str, int], int] = {}
        self.post_starts: dict[str, tuple[int, asyncio.Task[None]]] = {}  # running postStart hooks
        self.pre_stopped: set[tuple[str, int]] = set()  # attempts whose preStop hook ran: it runs once
        self.stopping: set[tuple[str, int]] = set()  # attempts being stopped: their probes stay off
        self.background: set[asyncio.Task[None]] = set()
        self.task: asyncio.Task[None] | None = None

    # --- the loop
    @property
    def name(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    def update(self, pod: Manifest) -> None:
        self.pod = pod
        self.wake.set()

    def mark_deleted(self) -> None:
        self.deleted = True
        self.wake.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"pod-{self.name}")

    async def run(self) -> None:
        failures = 0
        while True:
            self.wake.clear()
            if self.wake_at is not None and self.wake_at <= time.monotonic():
                self.wake_at = None  # due: this pass handles it (a later one stays pending)
            try:
                if await self.sync():
                    return
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                log.exception("sync of pod %s failed", self.name)
                self.wake_at = time.monotonic() + min(2**failures, 30)
            delay = RESYNC_SECONDS if self.wake_at is None else max(0.0, self.wake_at - time.monotonic())
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=min(delay, RESYNC_SECONDS))

    def wake_in(self, seconds: float) -> None:
        at = time.monotonic() + seconds
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)

    async def event(self, kind: str, reason: str, message: str) -> None:
        key = (reason, message)
        if time.monotonic() - self.recent_events.get(key, -1e9) < 60:
            return
        self.recent_events[key] = time.monotonic()
        await self.node.api.event(self.pod, kind, reason, message)

    # --- the sync pass
    async def sync(self) -> bool:
        """One pass; True when the pod is gone and the worker is done."""
        pod = self.pod
        if self.deleted or pod["metadata"].get("deletionTimestamp"):
            await self.terminate(self.grace_seconds())
            if not self.deleted:
                await self.report_final()
                await self.node.api.delete_pod(
                    pod["metadata"]["namespace"], pod["metadata"]["name"], self.uid
                )
            await asyncio.to_thread(runtime.remove_pod_dir, self.layout)
            self.unwatch_exits()
            return True
        await asyncio.to_thread(self._remember_pod)
        if self.finished():
            await self.stop_everything()
            return False
        if self.deadline_exceeded():
            await self.terminate(self.grace_seconds(), reason="DeadlineExceeded")
            self.terminal_reason = {
                "reason": "DeadlineExceeded",
                "message": "Pod was active on the node longer than the specified deadline",
            }
            await self.report()
            return False
        if await self.prepare() and await self.run_init_containers():
            await self.run_containers()
        await self.report()
        if self.finished():
            await self.stop_everything()
        return False

    def _remember_pod(self) -> None:
        self.layout.root.mkdir(parents=True, exist_ok=True)
        # Atomically: the log endpoint reads it at any moment, and a half-written file loses the pod (404).
        write_if_changed(self.layout.pod_file, json.dumps(self.pod))

    def finished(self) -> bool:
        return (self.reported or {}).get("phase") in ("Succeeded", "Failed")

    def grace_seconds(self) -> int:
        metadata, spec = self.pod["metadata"], self.pod["spec"]
        value = metadata.get("deletionGracePeriodSeconds")
        return int(value if value is not None else spec.get("terminationGracePeriodSeconds", 30))

    def deadline_exceeded(self) -> bool:
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        started = (self.pod.get("status") or {}).get("startTime")
        return bool(deadline and started and time.time() - epoch(started) > int(deadline))

    # --- images, volumes, sandbox
    def all_containers(self) -> list[Manifest]:
        spec = self.pod["spec"]
        return [*(spec.get("initContainers") or []), *spec["containers"]]

    async def prepare(self) -> bool:
        """Environments for every image, the pod's volumes and its sandbox; False while not possible yet."""
        ready = True
        for container in self.all_containers():
            if not await self.prepare_image(container):
                ready = False
        if not ready:
            return False
        if not await self.sync_volumes():
            return False
        return await self.ensure_sandbox()

    async def prepare_image(self, container: Manifest) -> bool:
        name, image = container["name"], container["image"]
        environment = resolve_image(image, self.node.images())
        if environment is None:
            message = (
                f'Failed to pull image "{image}": the local node has no environment for it '
                "(images it can run are listed in local-images.yaml)"
            )
            already_failed = self.waiting.get(name, ("",))[0] in ("ErrImagePull", "ImagePullBackOff")
            self.waiting[name] = ("ImagePullBackOff" if already_failed else "ErrImagePull", message)
            await self.event("Warning", "Failed", message)
            self.wake_in(20)
            return False
        self.images[name] = environment
        key = str(environment.context)
        if key not in self.node.environments:
            lock = self.node.environment_locks.setdefault(key, asyncio.Lock())
            async with lock:
                if key not in self.node.environments:
                    if self.attempts(name)[0] is None:
                        self.waiting[name] = ("ContainerCreating", f"building the environment of {image}")
                        await self.report()
                    await self.event("Normal", "Pulling", f'Building environment for image "{image}"')
                    started = time.monotonic()
                    try:
                        path = await asyncio.to_thread(
                            ensure_environment,
                            environment,
                            self.node.config.cache_dir,
                            lambda line: log.info("%s", line),
                        )
                    except Exception as exc:
                        message = f'Failed to pull image "{image}": {exc}'
                        self.waiting[name] = ("ErrImagePull", message)
                        await self.event("Warning", "Failed", message)
                        self.wake_in(30)
                        return False
                    self.node.environments[key] = path
                    await self.event(
                        "Normal",
                        "Pulled",
                        f'Environment for image "{image}" ready in {time.monotonic() - started:.1f}s',
                    )
        if self.waiting.get(name, ("",))[0] in ("ErrImagePull", "ImagePullBackOff", "ContainerCreating"):
            del self.waiting[name]
        return True

    async def referenced_data(self) -> tuple[ObjectData, ObjectData]:
        """The data of every ConfigMap and Secret the pod refers to, read now (None: it does not exist)."""
        namespace = self.pod["metadata"]["namespace"]
        config_map_names, secret_names = referenced_objects(self.pod)
        api = self.node.api
        config_maps = {n: await api.config_map_data(namespace, n) for n in config_map_names}
        secrets = {n: await api.secret_data(namespace, n) for n in secret_names}
        return config_maps, secrets

    async def volume_lookups(self) -> VolumeLookups:
        config_maps, secrets = await self.referenced_data()
        api = self.node.api
        for audience in token_audiences(self.pod):
            token = self.tokens.get(audience)
            if token is None or token[1] - time.time() < TOKEN_SECONDS * 0.2:
                self.tokens[audience] = await api.service_account_token(self.pod, audience, TOKEN_SECONDS)
        return VolumeLookups(
            config_maps, secrets, {a: t for a, (t, _) in self.tokens.items()}, self.node.allocatable
        )

    async def sync_volumes(self) -> bool:
        if time.monotonic() - self.volumes_synced_at < VOLUME_RESYNC_SECONDS and self.sandbox_alive():
            return True
        lookups = await self.volume_lookups()
        fs_group = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        try:
            for volume in self.pod["spec"].get("volumes") or []:
                files = rendered_files(volume, self.pod, lookups)
                folder = self.layout.volume(volume["name"])
                if files is None:
                    await asyncio.to_thread(self._plain_volume, volume, folder, fs_group)
                else:
                    await asyncio.to_thread(write_atomically, folder, files, fs_group)
        except VolumeError as exc:
            log.info("pod %s: volumes not ready: %s", self.name, exc)
            for container in self.all_containers():
                never_started = self.attempts(container["name"])[0] is None
                if never_started and container["name"] not in self.waiting:
                    self.waiting[container["name"]] = ("ContainerCreating", "")
            await self.event("Warning", "FailedMount", f"MountVolume.SetUp failed: {exc}")
            self.wake_in(10)
            return False
        self.volumes_synced_at = time.monotonic()
        for name, (reason, _) in list(self.waiting.items()):
            if reason == "ContainerCreating":
                del self.waiting[name]
        return True

    @staticmethod
    def _plain_volume(volume: Manifest, folder: Path, fs_group: int | None) -> None:
        if "hostPath" in volume:  # the sandbox binds the host folder itself
            host = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") == "DirectoryOrCreate" and not host.exists():
                host.mkdir(parents=True)
            return
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777 if fs_group is None else 0o2775)
        if fs_group is not None:
            os.chown(folder, -1, int(fs_group))

    def sandbox_alive(self) -> bool:
        record = runtime.read_sandbox(self.layout)
        return record is not None and record.holder.alive()

    def visible_paths(self) -> list[str]:
        paths = {str(Path(sys.base_prefix).resolve())}
        for environment in self.images.values():
            paths.add(str(environment.context.resolve()))
            if (built := self.node.environments.get(str(environment.context))) is not None:
                paths.add(str(built))
        return sorted(paths)

    async def ensure_sandbox(self) -> bool:
        if self.sandbox_alive():
            return True
        if runtime.read_sandbox(self.layout) is not None:
            # The sandbox died (host reboot, someone killed it): its containers died with their namespaces.
            await self.event(
                "Normal", "SandboxChanged", "Pod sandbox changed, it will be killed and re-created."
            )
            await asyncio.to_thread(runtime.kill_pod, self.layout, self.node.layout)
        try:
            await asyncio.to_thread(
                runtime.create_sandbox,
                self.pod,
                self.layout,
                self.node.layout,
                self.node.config.network,
                self.visible_paths(),
            )
        except (runtime.SandboxError, OSError) as exc:
            await self.event("Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {exc}")
            self.wake_in(5)
            return False
        return True

    # --- containers
    def attempts(self, name: str) -> tuple[Attempt | None, Attempt | None]:
        numbers = runtime.attempt_numbers(self.layout, name)
        latest = runtime.read_attempt(self.layout, name, numbers[-1]) if numbers else None
        previous = runtime.read_attempt(self.layout, name, numbers[-2]) if len(numbers) > 1 else None
        return latest, previous

    async def run_init_containers(self) -> bool:
        """Run init containers one after another; True once all of them succeeded."""
        policy = self.pod["spec"].get("restartPolicy", "Always")
        for container in self.pod["spec"].get("initContainers") or []:
            latest, _ = self.attempts(container["name"])
            if latest is not None and latest.succeeded:
                continue
            if latest is None:
                await self.start_container(container, 0)
            elif latest.finished:
                if should_restart(policy, latest, init=True):
                    await self.restart_after_backoff(container, latest)
            else:
                self.watch_exit(container["name"], latest.number)
            return False
        return True

    async def run_containers(self) -> None:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        for container in self.pod["spec"]["containers"]:
            if self.post_starts:
                return  # as the kubelet's sync, which waits for a postStart hook: nothing else starts
            name = container["name"]
            latest, _ = self.attempts(name)
            if latest is None:
                await self.start_container(container, 0)
            elif latest.finished:
                self.stop_probes(name)
                if should_restart(policy, latest, init=False):
                    await self.restart_after_backoff(container, latest)
            elif latest.running:
                if latest.started_at is None:
                    self.wake_in(0.2)  # the shim has not recorded the start yet
                self.watch_exit(name, latest.number)
                if name not in self.probes and (name, latest.number) not in self.stopping:
                    self.start_probes(container, latest)  # an attempt re-adopted after an agent restart

    async def restart_after_backoff(self, container: Manifest, latest: Attempt) -> None:
        name = container["name"]
        delay = backoff_seconds(latest.number + 1)
        finished = epoch(latest.finished_at) if latest.finished_at else time.time()
        remaining = finished + delay - time.time()
        if remaining > 0:
            message = (
                f"back-off {delay}s restarting failed container={name} "
                f"pod={self.pod['metadata']['name']}_{self.pod['metadata']['namespace']}({self.uid})"
            )
            self.waiting[name] = ("CrashLoopBackOff", message)
            await self.event("Warning", "BackOff", "Back-off restarting failed container " + name)
            self.wake_in(remaining)
            return
        self.waiting.pop(name, None)
        await self.start_container(container, latest.number + 1)

    async def start_container(self, container: Manifest, number: int) -> None:
        name = container["name"]
        try:
            spec = await self.container_spec(container, number)
        except ContainerConfigError as exc:
            self.waiting[name] = ("CreateContainerConfigError", str(exc))
            await self.event("Warning", "Failed", f"Error: {exc}")
            self.wake_in(10)
            return
        self.waiting.pop(name, None)
        await asyncio.to_thread(runtime.start_container, self.layout, spec, number)
        log.info("pod %s: started container %s (attempt %d)", self.name, name, number)
        await self.event("Normal", "Started", f"Started container {name}")
        await self.until_recorded(name, number)
        self.watch_exit(name, number)
        latest, _ = self.attempts(name)
        if latest is not None and latest.running and (hook := lifecycle_handler(container, "postStart")):
            task = asyncio.create_task(self.post_start(container, latest, hook), name=f"post-start-{name}")
            self.post_starts[name] = (number, task)
        elif latest is not None and not self.is_init(name):
            self.start_probes(container, latest)
        self.wake_in(0.5)

    # --- lifecycle hooks
    async def post_start(self, container: Manifest, attempt: Attempt, hook: Manifest) -> None:
        """Run a postStart hook; the container counts as started (and is probed) once it succeeded, and is
        killed if it failed, as the kubelet does. Runs as a task: the pod can be deleted meanwhile."""
        name = container["name"]
        try:
            ok, message = await run_hook(hook, self.probe_target(container, attempt.number), self.node.http)
            if ok:
                if not self.is_init(name):
                    self.start_probes(container, attempt)
                return
            await self.failed_post_start(
                name, attempt.number, failure_message(hook, name, self.pod_ref(), message)
            )
        finally:
            if self.post_start_running(name, attempt.number):
                del self.post_starts[name]
            self.wake.set()

    async def failed_post_start(self, name: str, number: int, detail: str) -> None:
        log.info("pod %s: %s", self.name, detail)
        self.waiting[name] = ("PostStartHookError", detail)  # shown while the container waits to restart
        await self.event("Warning", "FailedPostStartHook", f"PostStartHook failed for container {name}")
        await self.event("Normal", "Killing", "FailedPostStartHook")
        await self.stop_container(name, number, self.grace_seconds())

    def post_start_running(self, name: str, number: int) -> bool:
        return self.post_starts.get(name, (-1,))[0] == number

    async def cancel_post_starts(self) -> None:
        tasks = [task for _, task in self.post_starts.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def pre_stop(self, name: str, number: int, grace: float) -> float | None:
        """Run the preStop hook of a running attempt, once, for at most `grace` seconds (a hook still
        running then is given up, as the kubelet gives it up); the seconds it took, None if none ran."""
        container = next((c for c in self.all_containers() if c["name"] == name), None)
        hook = lifecycle_handler(container, "preStop")
        if container is None or hook is None or grace <= 0 or (name, number) in self.pre_stopped:
            return None
        if not runtime.read_attempt(self.layout, name, number).running:
            return None
        self.pre_stopped.add((name, number))
        started = time.monotonic()
        target = self.probe_target(container, number)
        try:
            ok, message = await asyncio.wait_for(run_hook(hook, target, self.node.http), grace)
        except TimeoutError:
            log.info("pod %s: the preStop hook of %s did not end within %gs", self.name, name, grace)
        else:
            if not ok:
                log.info("pod %s: %s", self.name, failure_message(hook, name, self.pod_ref(), message))
                await self.event("Warning", "FailedPreStopHook", f"PreStopHook failed for container {name}")
        return time.monotonic() - started

    def pod_ref(self) -> str:
        """The pod as the kubelet names it in messages: name_namespace(uid)."""
        metadata = self.pod["metadata"]
        return f"{metadata['name']}_{metadata['namespace']}({self.uid})"

    async def until_recorded(self, name: str, number: int, timeout: float = 5.0) -> None:
        """Wait (briefly) for the shim to record the start, so the next report already says Running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            attempt = runtime.read_attempt(self.layout, name, number)
            if attempt.started_at is not None or attempt.finished:
                return
            await asyncio.sleep(0.01)

    def watch_exit(self, name: str, number: int) -> None:
        """Wake this worker the moment the shim of a container attempt exits (a pidfd on the event loop)."""
        key = (name, number)
        shim = runtime.shim_ref(self.layout, name, number)
        if key in self.exit_watches or shim is None:
            return
        try:
            descriptor = os.pidfd_open(shim.pid)
        except ProcessLookupError:
            self.wake.set()
            return
        if not shim.alive():  # the PID was reused after our shim exited
            os.close(descriptor)
            self.wake.set()
            return
        loop = asyncio.get_running_loop()

        def exited() -> None:
            loop.remove_reader(descriptor)
            os.close(descriptor)
            self.exit_watches.pop(key, None)
            self.wake.set()

        loop.add_reader(descriptor, exited)
        self.exit_watches[key] = descriptor

    def unwatch_exits(self) -> None:
        loop = asyncio.get_running_loop()
        for descriptor in self.exit_watches.values():
            loop.remove_reader(descriptor)
            os.close(descriptor)
        self.exit_watches.clear()

    def is_init(self, name: str) -> bool:
        return any(c["name"] == name for c in self.pod["spec"].get("initContainers") or [])

    async def container_spec(self, container: Manifest, number: int) -> ContainerSpec:
        environment = self.images[container["name"]]
        built = self.node.environments[str(environment.context)]
        config_maps, secrets = await self.referenced_data()  # read at each start, as the kubelet does
        lookups = Lookups(
            {n: _text(d) for n, d in config_maps.items()}, {n: _text(d) for n, d in secrets.items()}
        )
        services = await self.service_links(self.pod["metadata"]["namespace"])
        env = self.image_env(environment, built)
        env.update(container_env(self.with_addresses(), container, lookups, services, self.node.allocatable))
        identity = self.identity(container, environment)
        env.setdefault("HOME", "/root" if not identity.uid else "/")
        argv = container_argv(container, environment.entrypoint, environment.cmd, env)
        limits = (container.get("resources") or {}).get("limits") or {}
        layout = self.layout.container(container["name"], number)
        sandbox = runtime.read_sandbox(self.layout)
        if sandbox is None:
            raise ContainerConfigError("the pod sandbox is gone; it will be re-created")
        termination_log = self.layout.termination_log(container["name"], number)
        mounts = self.mounts(container, environment)
        if path := container.get("terminationMessagePath", DEFAULT_TERMINATION_MESSAGE_PATH):
            # Last, as the kubelet mounts it: over any volume mounted at the same place.
            in_pod = f"{VOLUMES_IN_POD}/{termination_log.relative_to(self.layout.volumes)}"
            mounts.append(Mount(in_pod, path))
        return ContainerSpec(
            name=container["name"],
            argv=argv,
            env=env,
            working_dir=container.get("workingDir") or environment.working_dir or "/",
            sandbox_pid=sandbox.holder.pid,
            mounts=mounts,
            identity=identity,
            cgroup=f"{runtime.pod_cgroup(self.uid)}/{container['name']}-{number}",
            memory_bytes=quantity_bytes(limits.get("memory")),
            cpu_millicores=quantity_millicores(limits.get("cpu")),
            log_file=str(self.layout.log(container["name"], number)),
            state_file=str(layout.state_file),
            exit_file=str(layout.exit_file),
            termination_log=str(termination_log) if path else "",
            fallback_to_logs=container.get("terminationMessagePolicy") == "FallbackToLogsOnError",
        )

    def with_addresses(self) -> Manifest:
        """The pod with the IPs the node knows before it reports them: fieldRef status.podIP works at once."""
        record = runtime.read_sandbox(self.layout)
        host = self.node.config.network.host_address
        pod_ip = host if self.pod["spec"].get("hostNetwork") or record is None else record.ip
        addresses = {"podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "hostIP": host, "hostIPs": [{"ip": host}]}
        return {**self.pod, "status": {**(self.pod.get("status") or {}), **addresses}}

    async def service_links(self, namespace: str) -> dict[str, str]:
        api = self.node.api
        services = [s for s in await api.services("default") if s["metadata"]["name"] == "kubernetes"]
        if self.pod["spec"].get("enableServiceLinks", True):
            services = [*(await api.services(namespace)), *services]
        return service_link_env(services)

    def image_env(self, environment: ImageEnvironment, built: Path) -> dict[str, str]:
        """What the image itself gives a process: its ENV, its environment first on PATH, the hostname."""
        env = dict(environment.env)
        env["PATH"] = f"{built / 'bin'}:{env.get('PATH', DEFAULT_PATH)}"
        env["VIRTUAL_ENV"] = str(built)
        env["HOSTNAME"] = runtime.pod_hostname(self.pod)
        return env

    def mounts(self, container: Manifest, environment: ImageEnvironment) -> list[Mount]:
        mounts = []
        if environment.code_path:
            mounts.append(Mount(str(environment.context.resolve()), environment.code_path, readonly=True))
        volumes = {v["name"]: v for v in self.pod["spec"].get("volumes") or []}
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"], {})
            source = f"{HOST_PATHS_IN_POD if 'hostPath' in volume else VOLUMES_IN_POD}/{mount['name']}"
            if sub := mount.get("subPath"):
                source = f"{source}/{sub}"
            readonly = bool(mount.get("readOnly")) or any(
                k in volume for k in ("configMap", "secret", "projected", "downwardAPI")
            )
            mounts.append(Mount(source, mount["mountPath"], readonly))
        return mounts

    def identity(self, container: Manifest, environment: ImageEnvironment) -> Identity:
        pod_context = self.pod["spec"].get("securityContext") or {}
        context = container.get("securityContext") or {}

        def pick(key: str) -> Any:
            return context.get(key, pod_context.get(key))

        image_user = environment.user
        uid = pick("runAsUser")
        if uid is None and image_user is not None:
            if not str(image_user).split(":")[0].isdigit():
                if pick("runAsNonRoot"):
                    raise ContainerConfigError(
                        f"container has runAsNonRoot and image has non-numeric user "
                        f"({image_user}), cannot verify user is non-root"
                    )
            else:
                uid = int(str(image_user).split(":")[0])
        if pick("runAsNonRoot") and not uid:
            metadata = self.pod["metadata"]
            raise ContainerConfigError(
                f'container has runAsNonRoot and image will run as root (pod: "{metadata["name"]}_'
                f'{metadata["namespace"]}({self.uid})", container: {container["name"]})'
            )
        gid = pick("runAsGroup")
        groups = [int(g) for g in pod_context.get("supplementalGroups") or []]
        if pod_context.get("fsGroup") is not None:
            groups.append(int(pod_context["fsGroup"]))
        drop = (context.get("capabilities") or {}).get("drop") or []
        return Identity(
            uid=None if uid is None else int(uid),
            gid=None if gid is None else int(gid),
            groups=groups,
            no_new_privs=context.get("allowPrivilegeEscalation") is False,
            drop_capabilities="ALL" in drop,
        )

    # --- probes
    def probe_target(self, container: Manifest, number: int) -> ProbeTarget:
        """Where probes and lifecycle hooks reach one attempt of a container."""
        name = container["name"]
        record = runtime.read_sandbox(self.layout)
        ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")}
        return ProbeTarget(
            record.ip or self.node.config.network.host_address if record else "",
            lambda: runtime.container_pid(self.layout, name, number),
            ports,
            self._probe_env(name, number),
        )

    def start_probes(self, container: Manifest, attempt: Attempt) -> None:
        name = container["name"]
        self.stop_probes(name)
        target = self.probe_target(container, attempt.number)
        has_startup = "startupProbe" in container and not self.reported_started(name, attempt)
        self.probe_results[(name, "startup")] = not has_startup
        number = attempt.number

        def started() -> bool:  # liveness and readiness wait for the startup probe
            return self.probe_results[(name, "startup")]

        async def report(kind: str, ok: bool, message: str) -> None:
            await self.on_probe(name, number, kind, ok, message)

        runners = {}
        for kind in ("startup", "liveness", "readiness") if has_startup else ("liveness", "readiness"):
            if probe := container.get(f"{kind}Probe"):
                gate = (lambda: True) if kind == "startup" else started
                runners[kind] = ProbeRunner(
                    kind, probe=probe, target=target, http=self.node.http, on_result=report, gate=gate
                )
        self.probe_results[(name, "readiness")] = "readinessProbe" not in container
        self.probes[name] = runners
        for runner in runners.values():
            runner.start()

    def reported_started(self, name: str, attempt: Attempt) -> bool:
        """Whether this attempt's startup probe already succeeded (reported before an agent restart): the
        kubelet probes a container's start once, never again while that container runs."""
        statuses = (self.pod.get("status") or {}).get("containerStatuses") or []
        return any(
            s.get("name") == name and s.get("containerID") == attempt.container_id and s.get("started")
            for s in statuses
        )

    def _probe_env(self, name: str, number: int) -> dict[str, str]:
        spec_file = self.layout.container(name, number).spec_file
        try:
            env: dict[str, str] = json.loads(spec_file.read_text())["env"]
            return env
        except (OSError, ValueError, KeyError):
            return {}

    def stop_probes(self, name: str) -> None:
        for runner in self.probes.pop(name, {}).values():
            runner.stop()

    async def on_probe(self, name: str, number: int, kind: str, ok: bool, message: str) -> None:
        self.probe_results[(name, kind)] = ok
        if not ok:
            await self.event("Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {message}")
        if kind in ("liveness", "startup") and not ok:
            # This runs inside the probe's own task, which stop_probes cancels: kill from a task of its own.
            self.stop_probes(name)
            task = asyncio.create_task(self.restart_unhealthy(name, number, kind))
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        self.wake.set()

    async def restart_unhealthy(self, name: str, number: int, kind: str) -> None:
        await self.event("Normal", "Killing", f"Container {name} failed {kind} probe, will be restarted")
        await self.stop_container(name, number, self.grace_seconds())
        self.wake.set()

    # --- stopping
    async def stop_container(self, name: str, number: int, grace: float) -> None:
        """The kubelet's killContainer: the preStop hook, then SIGTERM, then SIGKILL once the grace period is
        spent; the hook's time counts against the grace period."""
        key = (name, number)
        self.stopping.add(key)
        try:
            spent = await self.pre_stop(name, number, grace)
            await self.signal_until_stopped(name, number, signal_grace(grace, spent))
        finally:
            self.stopping.discard(key)

    async def signal_until_stopped(self, name: str, number: int, grace: float) -> None:
        await asyncio.to_thread(runtime.signal_container, self.layout, name, number, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not runtime.read_attempt(self.layout, name, number).running:
                return
            await asyncio.sleep(0.1)
        await asyncio.to_thread(runtime.signal_container, self.layout, name, number, signal.SIGKILL)
        for _ in range(50):
            if not runtime.read_attempt(self.layout, name, number).running:
                return
            await asyncio.sleep(0.1)

    async def terminate(self, grace: int, reason: str = "") -> None:
        """Stop every container gracefully (preStop hook, SIGTERM, then SIGKILL after `grace`), then the
        sandbox."""
        for name in list(self.probes):
            self.stop_probes(name)
        await self.cancel_post_starts()
        running = []
        for container in self.all_containers():
            latest, _ = self.attempts(container["name"])
            if latest is not None and latest.running:
                running.append((container["name"], latest.number))
                await self.event(
                    "Normal",
                    "Killing",
                    f"Stopping container {container['name']}" + (f": {reason}" if reason else ""),
                )
        await asyncio.gather(*(self.stop_container(n, a, grace) for n, a in running))
        await self.stop_everything()

    async def stop_everything(self) -> None:
        await self.cancel_post_starts()
        if runtime.read_sandbox(self.layout) is not None or self.probes:
            for name in list(self.probes):
                self.stop_probes(name)
            await asyncio.to_thread(runtime.kill_pod, self.layout, self.node.layout)

    # --- status
    def view(self, container: Manifest, final: bool = False) -> ContainerView:
        """What the node knows of a container; `final`: the pod is stopping for good, nothing restarts."""
        name = container["name"]
        latest, previous = self.attempts(name)
        waiting = None if final else self.waiting.get(name)
        policy = self.pod["spec"].get("restartPolicy", "Always")
        if latest is not None and (latest.running or not should_restart(policy, latest, self.is_init(name))):
            waiting = None  # a reason to wait only counts for a container that is to (re)start
        if latest is not None and latest.running and self.post_start_running(name, latest.number):
            waiting = ("ContainerCreating", "")  # the kubelet reports a container once its postStart ended
        running = latest is not None and latest.running and waiting is None
        started = waiting is None and self.probe_results.get((name, "startup"), True)
        ready = (
            running
            and started
            and self.probe_results.get((name, "readiness"), True)
            and not self.is_init(name)
        )
        environment = self.images.get(name)
        built = self.node.environments.get(str(environment.context)) if environment else None
        image_id = f"mlplatform-local://{built.name}" if built else ""
        if waiting is None and latest is not None and latest.running and latest.started_at is None:
            waiting = ("ContainerCreating", "")
        return ContainerView(
            name, container["image"], image_id, latest, previous, waiting, bool(ready), started
        )

    async def report_final(self) -> None:
        """The pod's last status, written before the node removes it, as kubelets since 1.27 do: the
        terminal phase and how each container ended (exit code, reason, termination message), which is
        what a Job's controller and a user read about why the pod ended."""
        if self.finished() or (self.pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return  # a pod that had ended keeps the status it ended with
        try:
            await self.report(final=True)
        except ApiException as exc:
            if exc.status != 404:  # gone already: nobody is left to read it
                raise

    async def report(self, final: bool = False) -> None:
        spec = self.pod["spec"]
        init_views = [self.view(c, final) for c in spec.get("initContainers") or []]
        views = [self.view(c, final) for c in spec["containers"]]
        record = runtime.read_sandbox(self.layout)
        sandbox_ready = record is not None and record.holder.alive()
        host = self.node.config.network.host_address
        pod_ip = (
            (host if spec.get("hostNetwork") else record.ip) if record else (self.reported or {}).get("podIP")
        )
        current = self.pod.get("status") or {}
        status = pod_status(
            self.pod,
            init_views,
            views,
            sandbox_ready=sandbox_ready,
            pod_ip=pod_ip,
            host_ip=host,
            start_time=current.get("startTime") or rfc3339(),
            stamp=rfc3339(),
            reason=self.terminal_reason,
            terminal=final,
        )
        comparable = _without_times(status)
        if self.reported is not None and _without_times(self.reported) == comparable:
            return
        if status["phase"] != (self.reported or {}).get("phase"):
            log.info("pod %s: %s", self.name, status["phase"])
        updated = await self.node.api.patch_pod_status(
            self.pod["metadata"]["namespace"], self.pod["metadata"]["name"], status
        )
        self.pod = {**self.pod, "status": updated.get("status", status)}
        self.reported = status


def _text(data: Mapping[str, bytes] | None) -> dict[str, str] | None:
    return None if data is None else {k: v.decode(errors="replace") for k, v in data.items()}


def _without_times(status: Manifest) -> Manifest:
    copy: Manifest = json.loads(json.dumps(status))
    for condition in copy.get("conditions", []):
        condition.pop("lastTransitionTime", None)
    return copy
