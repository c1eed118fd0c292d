"""Starting and stopping a pod's containers. The kubelet's termination order (pure), and, without a cluster,
stopping real processes recorded as container attempts under a temporary directory (each process stands
for both its shim and its container; events go to a small fake of the Kubernetes API, nodefakes.py): the
preStop hook runs once, before SIGTERM, bounded by the grace period; a sidecar gets SIGTERM only after the
main container ended; a failed postStart hook kills the attempt and says why it waits."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mlplatform.local.images import ImageEnvironment
from mlplatform.local.node.containers import PodContainers, lifecycle_handler, termination_order
from mlplatform.local.node.podcontext import PodContext
from mlplatform.local.node.podprobes import PodProbes
from mlplatform.local.node.runtime import ProcessRef, read_attempt
from mlplatform.local.node.shim import ContainerSpec
from nodefakes import SIDECAR_SPEC, FakeNodeApi, pod_context, pod_manifest


def test_sidecars_stop_after_every_main_container_and_in_reverse_order() -> None:
    running = ["proxy", "setup", "logger", "main", "helper"]
    assert termination_order(SIDECAR_SPEC, running) == {
        "proxy": ["main", "helper", "logger"],
        "setup": [],
        "logger": ["main", "helper"],
        "main": [],
        "helper": [],
    }
    # Only running containers are waited for: once the main containers ended, the last sidecar goes first.
    assert termination_order(SIDECAR_SPEC, ["proxy", "logger"]) == {"proxy": ["logger"], "logger": []}


def test_a_lifecycle_handler_is_found_only_where_declared() -> None:
    hook = {"sleep": {"seconds": 1}}
    assert lifecycle_handler({"lifecycle": {"preStop": hook}}, "preStop") == hook
    assert lifecycle_handler({"lifecycle": {"preStop": hook}}, "postStart") is None
    assert lifecycle_handler(None, "preStop") is None


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The test's container processes. Started from a shell without job control (`cmd &` in a script),
    the tests inherit SIGINT ignored, and so would these shells, which then cannot trap it: SIGINT is
    given Python's own handler meanwhile, which a child process gets back as the default."""
    inherited = signal.getsignal(signal.SIGINT)
    if inherited == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()
    signal.signal(signal.SIGINT, inherited)


def on_term(marker: Path, then: str = "exit 0", signal_name: str = "TERM") -> str:
    """A shell that writes when it got the signal (SIGTERM) to `marker`, then runs `then`; it says it is
    ready first."""
    trap = f"trap 'date +%s.%N > {marker}; {then}' {signal_name}"
    return f"{trap}; touch {marker}.ready; while :; do sleep 0.05; done"


def run_attempt(
    context: PodContext, processes: list[subprocess.Popen[bytes]], name: str, script: str
) -> None:
    """A real process recorded as attempt 0 of container `name`, as a shim records one."""
    process = subprocess.Popen(["sh", "-c", script])
    processes.append(process)
    ref = ProcessRef.of(process.pid)
    attempt = context.layout.container(name, 0)
    attempt.root.mkdir(parents=True)
    record = {"pid": ref.pid, "start_ticks": ref.start_ticks}
    attempt.shim_file.write_text(json.dumps(record))
    attempt.state_file.write_text(json.dumps({**record, "startedAt": "2026-01-01T00:00:00Z"}))


async def ready(*markers: Path) -> None:
    for _ in range(200):
        if all(Path(f"{marker}.ready").exists() for marker in markers):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the processes did not start")


def with_containers(tmp_path: Path, manifest: dict[str, Any], scenario: Any) -> FakeNodeApi:
    api = FakeNodeApi()

    async def no_spec(container: dict[str, Any], number: int) -> ContainerSpec:
        raise AssertionError("nothing starts here")

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            context = pod_context(tmp_path, api, http, manifest)
            probes = PodProbes(context, lambda *_: asyncio.sleep(0))
            await scenario(context, PodContainers(context, probes, no_spec))

    asyncio.run(run())
    return api


def test_the_pre_stop_hook_runs_once_before_sigterm(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    marker = tmp_path / "term"
    app = {"name": "app", "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}

    async def scenario(context: PodContext, containers: PodContainers) -> None:
        run_attempt(context, processes, "app", on_term(marker))
        await ready(marker)
        began = time.time()
        await containers.stop_container("app", 0, grace=10)
        assert float(marker.read_text()) - began >= 1.0  # SIGTERM came after the hook's second
        assert read_attempt(context.layout, "app", 0).finished
        assert await containers.pre_stop("app", 0, grace=10) is None  # it ran already

    with_containers(tmp_path, pod_manifest(app), scenario)


def test_a_pre_stop_hook_longer_than_the_grace_period_is_given_up(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    marker = tmp_path / "term"
    app = {"name": "app", "lifecycle": {"preStop": {"sleep": {"seconds": 30}}}}

    async def scenario(context: PodContext, containers: PodContainers) -> None:
        run_attempt(context, processes, "app", on_term(marker))
        await ready(marker)
        began = time.monotonic()
        await containers.stop_container("app", 0, grace=1)
        assert time.monotonic() - began < 5
        assert marker.read_text().strip()  # SIGTERM came, after the hook was given up

    with_containers(tmp_path, pod_manifest(app), scenario)


def test_a_sidecar_gets_sigterm_only_once_the_main_container_ended(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    main_term, sidecar_term, main_exit = tmp_path / "main", tmp_path / "sidecar", tmp_path / "main-exit"
    manifest = pod_manifest({"name": "main"}, initContainers=[{"name": "proxy", "restartPolicy": "Always"}])

    async def scenario(context: PodContext, containers: PodContainers) -> None:
        run_attempt(
            context, processes, "main", on_term(main_term, f"sleep 0.5; date +%s.%N > {main_exit}; exit 0")
        )
        run_attempt(context, processes, "proxy", on_term(sidecar_term))
        await ready(main_term, sidecar_term)
        await containers.terminate(grace=10)
        assert float(sidecar_term.read_text()) >= float(main_exit.read_text())

    api = with_containers(tmp_path, manifest, scenario)
    assert api.reasons() == ["Killing", "Killing"]


def test_a_failed_post_start_hook_kills_the_attempt_and_says_why_it_waits(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    hook = {"httpGet": {"host": "127.0.0.1", "port": port, "path": "/"}}  # nothing answers there
    app = {"name": "app", "lifecycle": {"postStart": hook}}
    marker = tmp_path / "term"

    async def scenario(context: PodContext, containers: PodContainers) -> None:
        run_attempt(context, processes, "app", on_term(marker))
        await ready(marker)
        attempt = read_attempt(context.layout, "app", 0)
        await containers.post_start(app, attempt, hook)
        assert context.waiting["app"][0] == "PostStartHookError"
        assert read_attempt(context.layout, "app", 0).finished
        assert not containers.probes.probing("app")

    api = with_containers(tmp_path, pod_manifest(app), scenario)
    assert api.reasons() == ["FailedPostStartHook", "Killing"]


def test_stopping_sends_the_images_stop_signal(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    marker = tmp_path / "int"

    async def scenario(context: PodContext, containers: PodContainers) -> None:
        context.images["app"] = ImageEnvironment("app", tmp_path, stop_signal=signal.SIGINT)
        run_attempt(context, processes, "app", on_term(marker, signal_name="INT"))
        await ready(marker)
        await containers.stop_container("app", 0, grace=10)
        assert marker.read_text().strip()

    with_containers(tmp_path, pod_manifest({"name": "app"}), scenario)
