"""The probes of a pod's running container attempts, as the kubelet's prober manager runs them: one runner per
probe of each attempt, liveness and readiness held back until the startup probe passed, and what each last
said (started, ready). A liveness or startup failure is handed back to the worker, which restarts the
container: probes decide nothing about a container's life themselves."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from mlplatform.local.node.podcontext import PodContext
from mlplatform.local.node.probes import ProbeRunner
from mlplatform.local.node.status import Attempt

Manifest = dict[str, Any]
OnFailure = Callable[[str, int, str], Coroutine[Any, Any, None]]  # (container, attempt number, probe kind)
PROBE_KINDS = ("startup", "liveness", "readiness")


class PodProbes:
    def __init__(self, pod: PodContext, on_failure: OnFailure) -> None:
        self.pod = pod
        self.on_failure = on_failure
        self.runners: dict[str, dict[str, ProbeRunner]] = {}  # by container, then probe kind
        self.results: dict[tuple[str, str], bool] = {}  # (container, kind): what the probe last said
        self.background: set[asyncio.Task[None]] = set()

    def start(self, container: Manifest, attempt: Attempt) -> None:
        """Probe an attempt that runs: its earlier attempt's probes stop; a startup probe that passed already
        (before an agent restart) does not run again."""
        name, number = container["name"], attempt.number
        self.stop(name)
        target = self.pod.target(container, number)
        has_startup = "startupProbe" in container and not self.reported_started(name, attempt)
        self.results[(name, "startup")] = not has_startup
        self.results[(name, "readiness")] = "readinessProbe" not in container

        def started() -> bool:  # liveness and readiness wait for the startup probe
            return self.results[(name, "startup")]

        async def report(kind: str, ok: bool, message: str) -> None:
            await self.on_result(name, number, kind, ok, message)

        runners = {}
        for kind in PROBE_KINDS if has_startup else PROBE_KINDS[1:]:
            if probe := container.get(f"{kind}Probe"):
                gate = (lambda: True) if kind == "startup" else started
                runners[kind] = ProbeRunner(
                    kind, probe=probe, target=target, http=self.pod.node.http, on_result=report, gate=gate
                )
        self.runners[name] = runners
        for runner in runners.values():
            runner.start()

    def reported_started(self, name: str, attempt: Attempt) -> bool:
        """Whether this attempt's startup probe already succeeded (reported before an agent restart): the
        kubelet probes a container's start once, never again while that container runs."""
        status = self.pod.manifest.get("status") or {}
        statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        return any(
            s.get("name") == name and s.get("containerID") == attempt.container_id and s.get("started")
            for s in statuses
        )

    def probing(self, name: str) -> bool:
        return name in self.runners

    def stop(self, name: str) -> None:
        for runner in self.runners.pop(name, {}).values():
            runner.stop()

    def stop_all(self) -> None:
        for name in list(self.runners):
            self.stop(name)

    def started(self, name: str) -> bool:
        """Whether the container's startup probe passed (True without one)."""
        return self.results.get((name, "startup"), True)

    def ready(self, name: str) -> bool:
        """Whether the container's readiness probe last passed (True without one)."""
        return self.results.get((name, "readiness"), True)

    async def on_result(self, name: str, number: int, kind: str, ok: bool, message: str) -> None:
        self.results[(name, kind)] = ok
        if not ok:
            await self.pod.event("Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {message}")
        if kind in ("liveness", "startup") and not ok:
            # This runs inside the probe's own task, which stop() cancels: hand it on in a task of its own.
            self.stop(name)
            task = asyncio.create_task(self.on_failure(name, number, kind))
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        self.pod.wake.set()
