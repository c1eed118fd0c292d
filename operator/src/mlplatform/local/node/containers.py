"""Starting and stopping a pod's containers as the kubelet's runtime manager does: a shim per attempt, the
postStart hook after start (the container counts as started once it ended), and on stop the preStop hook,
then the image's stop signal, then SIGKILL once the grace period is spent, sidecars last in reverse order.
The worker decides what starts or stops when; this module does it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any

from mlplatform.local.node import runtime
from mlplatform.local.node.environment import ContainerConfigError
from mlplatform.local.node.hooks import failure_message, run_hook, signal_grace
from mlplatform.local.node.podcontext import PodContext, sidecar_names
from mlplatform.local.node.podprobes import PodProbes
from mlplatform.local.node.shim import ContainerSpec
from mlplatform.local.node.status import Attempt

Manifest = dict[str, Any]
SpecBuilder = Callable[[Manifest, int], Coroutine[Any, Any, ContainerSpec]]  # (container, attempt number)
log = logging.getLogger(__name__)
KILL_WAIT_SECONDS = 5.0  # how long a SIGKILLed attempt may take to be recorded as ended
POLL_SECONDS = 0.1


def termination_order(spec: Manifest, running: Collection[str]) -> dict[str, list[str]]:
    """The kubelet's termination ordering: for each running container, the running ones that must stop
    before it gets SIGTERM. A sidecar waits for every main container and every sidecar after it (sidecars
    stop last, in reverse order); other containers wait for none."""
    sidecars = sidecar_names(spec)
    mains = [c["name"] for c in spec["containers"]]
    order: dict[str, list[str]] = {}
    for name in running:
        before = [*mains, *sidecars[sidecars.index(name) + 1 :]] if name in sidecars else []
        order[name] = [other for other in before if other in running]
    return order


def lifecycle_handler(container: Manifest | None, hook: str) -> Manifest | None:
    """The container's `postStart` or `preStop` handler, if it has one."""
    handler: Manifest | None = ((container or {}).get("lifecycle") or {}).get(hook)
    return handler


class PodContainers:
    def __init__(self, pod: PodContext, probes: PodProbes, build_spec: SpecBuilder) -> None:
        self.pod = pod
        self.probes = probes
        self.build_spec = build_spec
        self.exit_watches: dict[tuple[str, int], int] = {}  # pidfds of the shims watched, by attempt
        self.post_starts: dict[str, tuple[int, asyncio.Task[None]]] = {}  # running postStart hooks
        self.pre_stopped: set[tuple[str, int]] = set()  # attempts whose preStop hook ran: it runs once
        self.stopping: set[tuple[str, int]] = set()  # attempts being stopped: their probes stay off

    # --- starting
    async def start(self, container: Manifest, number: int) -> None:
        """Start attempt `number` of a container, then its postStart hook, or else its probes."""
        name = container["name"]
        try:
            spec = await self.build_spec(container, number)
        except ContainerConfigError as exc:
            self.pod.waiting[name] = ("CreateContainerConfigError", str(exc))
            await self.pod.event("Warning", "Failed", f"Error: {exc}")
            self.pod.wake_in(10)
            return
        self.pod.waiting.pop(name, None)
        await asyncio.to_thread(runtime.start_container, self.pod.layout, spec, number)
        log.info("pod %s: started container %s (attempt %d)", self.pod.name, name, number)
        await self.pod.event("Normal", "Started", f"Started container {name}")
        await self.until_recorded(name, number)
        self.watch_exit(name, number)
        latest, _ = self.pod.attempts(name)
        if latest is not None and latest.running and (hook := lifecycle_handler(container, "postStart")):
            task = asyncio.create_task(self.post_start(container, latest, hook), name=f"post-start-{name}")
            self.post_starts[name] = (number, task)
        elif latest is not None and not self.pod.runs_to_completion(name):
            self.probes.start(container, latest)
        self.pod.wake_in(0.5)

    async def until_recorded(self, name: str, number: int, timeout: float = 5.0) -> None:
        """Wait (briefly) for the shim to record the start, so the next report already says Running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            attempt = runtime.read_attempt(self.pod.layout, name, number)
            if attempt.started_at is not None or attempt.finished:
                return
            await asyncio.sleep(0.01)

    def watch_exit(self, name: str, number: int) -> None:
        """Wake the worker the moment the shim of a container attempt exits (a pidfd on the event loop)."""
        key = (name, number)
        shim = runtime.shim_ref(self.pod.layout, name, number)
        if key in self.exit_watches or shim is None:
            return
        try:
            descriptor = os.pidfd_open(shim.pid)
        except ProcessLookupError:
            self.pod.wake.set()
            return
        if not shim.alive():  # the PID was reused after our shim exited
            os.close(descriptor)
            self.pod.wake.set()
            return
        loop = asyncio.get_running_loop()

        def exited() -> None:
            loop.remove_reader(descriptor)
            os.close(descriptor)
            self.exit_watches.pop(key, None)
            self.pod.wake.set()

        loop.add_reader(descriptor, exited)
        self.exit_watches[key] = descriptor

    def unwatch_exits(self) -> None:
        loop = asyncio.get_running_loop()
        for descriptor in self.exit_watches.values():
            loop.remove_reader(descriptor)
            os.close(descriptor)
        self.exit_watches.clear()

    # --- postStart
    async def post_start(self, container: Manifest, attempt: Attempt, hook: Manifest) -> None:
        """Run a postStart hook; the container counts as started (and is probed) once it succeeded, and is
        killed if it failed, as the kubelet does. Runs as a task: the pod can be deleted meanwhile."""
        name = container["name"]
        try:
            target = self.pod.target(container, attempt.number)
            ok, message = await run_hook(hook, target, self.pod.node.http)
            if ok:
                if not self.pod.runs_to_completion(name):
                    self.probes.start(container, attempt)
                return
            await self.failed_post_start(
                name, attempt.number, failure_message(hook, name, self.pod.pod_ref(), message)
            )
        finally:
            if self.post_start_running(name, attempt.number):
                del self.post_starts[name]
            self.pod.wake.set()

    async def failed_post_start(self, name: str, number: int, detail: str) -> None:
        log.info("pod %s: %s", self.pod.name, detail)
        self.pod.waiting[name] = ("PostStartHookError", detail)  # shown while the container waits to restart
        await self.pod.event("Warning", "FailedPostStartHook", f"PostStartHook failed for container {name}")
        await self.pod.event("Normal", "Killing", "FailedPostStartHook")
        await self.stop_container(name, number, self.pod.grace_seconds())

    def post_start_running(self, name: str, number: int) -> bool:
        return self.post_starts.get(name, (-1,))[0] == number

    def any_post_start_running(self) -> bool:
        return bool(self.post_starts)

    async def cancel_post_starts(self) -> None:
        tasks = [task for _, task in self.post_starts.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- stopping
    async def pre_stop(self, name: str, number: int, grace: float) -> float | None:
        """Run the preStop hook of a running attempt, once, for at most `grace` seconds (a hook still
        running then is given up, as the kubelet gives it up); the seconds it took, None if none ran."""
        container = self.pod.container(name)
        hook = lifecycle_handler(container, "preStop")
        if container is None or hook is None or grace <= 0 or (name, number) in self.pre_stopped:
            return None
        if not runtime.read_attempt(self.pod.layout, name, number).running:
            return None
        self.pre_stopped.add((name, number))
        started = time.monotonic()
        target = self.pod.target(container, number)
        try:
            ok, message = await asyncio.wait_for(run_hook(hook, target, self.pod.node.http), grace)
        except TimeoutError:
            log.info("pod %s: the preStop hook of %s did not end within %gs", self.pod.name, name, grace)
        else:
            if not ok:
                log.info(
                    "pod %s: %s", self.pod.name, failure_message(hook, name, self.pod.pod_ref(), message)
                )
                await self.pod.event(
                    "Warning", "FailedPreStopHook", f"PreStopHook failed for container {name}"
                )
        return time.monotonic() - started

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
        """The image's stop signal (STOPSIGNAL, else SIGTERM) to the main process, SIGKILL after `grace`."""
        image = self.pod.images.get(name)
        stop_signal = image.stop_signal if image else signal.SIGTERM
        layout = self.pod.layout
        await asyncio.to_thread(runtime.signal_container, layout, name, number, stop_signal)
        if await self.until_ended(name, number, grace):
            return
        await asyncio.to_thread(runtime.signal_container, layout, name, number, signal.SIGKILL)
        await self.until_ended(name, number, KILL_WAIT_SECONDS)

    async def until_ended(self, name: str, number: int, seconds: float) -> bool:
        """Whether the attempt ended within `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not runtime.read_attempt(self.pod.layout, name, number).running:
                return True
            await asyncio.sleep(POLL_SECONDS)
        return False

    async def terminate(self, grace: int, reason: str = "") -> None:
        """Stop every container gracefully (preStop hook, SIGTERM, then SIGKILL after `grace`), then the
        sandbox."""
        self.probes.stop_all()
        await self.cancel_post_starts()
        running = []
        for container in self.pod.all_containers():
            latest, _ = self.pod.attempts(container["name"])
            if latest is not None and latest.running:
                running.append((container["name"], latest.number))
                await self.pod.event(
                    "Normal",
                    "Killing",
                    f"Stopping container {container['name']}" + (f": {reason}" if reason else ""),
                )
        await self.stop_in_order(running, grace)
        await self.stop_everything()

    async def stop_in_order(self, running: Sequence[tuple[str, int]], grace: float) -> None:
        """Stop running attempts in the kubelet's order: every preStop hook starts at once; a sidecar gets
        SIGTERM only once the main containers and the sidecars after it stopped; one grace period for all."""
        order = termination_order(self.pod.spec, [name for name, _ in running])
        stopped = {name: asyncio.Event() for name, _ in running}

        async def stop(name: str, number: int) -> None:
            began = time.monotonic()
            term_grace = float(grace)
            try:
                if order[name] and grace > 0:
                    await self.pre_stop(name, number, grace)  # beside the others' hooks; it runs only once
                    with contextlib.suppress(TimeoutError):
                        turn = asyncio.gather(*(stopped[other].wait() for other in order[name]))
                        await asyncio.wait_for(turn, max(0.0, grace - (time.monotonic() - began)))
                    term_grace = signal_grace(grace, time.monotonic() - began)
                await self.stop_container(name, number, term_grace)
            finally:
                stopped[name].set()

        await asyncio.gather(*(stop(name, number) for name, number in running))

    def drop_sidecar_backoffs(self) -> None:
        """The pod is ending: no sidecar is to restart, so none shows a back-off."""
        for name in sidecar_names(self.pod.spec):
            self.pod.waiting.pop(name, None)

    async def stop_sidecars(self) -> None:
        """Stop the running sidecars of a pod whose main containers ended for good (or whose init sequence
        failed), as the kubelet does: in reverse order, each with its preStop hook and SIGTERM, within the
        grace period. They do not run again."""
        self.drop_sidecar_backoffs()
        running = []
        for name in sidecar_names(self.pod.spec):
            latest, _ = self.pod.attempts(name)
            if latest is not None and latest.running:
                self.probes.stop(name)
                running.append((name, latest.number))
                await self.pod.event("Normal", "Killing", f"Stopping container {name}")
        await self.stop_in_order(running, self.pod.grace_seconds())

    async def stop_everything(self) -> None:
        """Kill whatever of the pod still runs, and its sandbox (no grace: the callers gave it already)."""
        await self.cancel_post_starts()
        if runtime.read_sandbox(self.pod.layout) is not None or self.probes.runners:
            self.probes.stop_all()
            await asyncio.to_thread(runtime.kill_pod, self.pod.layout, self.pod.node.layout)
