"""The probes of a pod's containers, without a cluster: real tcpSocket probes against a port on this host
that listens or does not; events go to a small fake of the Kubernetes API (nodefakes.py). A failed liveness
probe is handed back to the worker (once) and stops its runners; readiness is false until its probe passed;
a startup probe already reported passed is not run again."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import aiohttp

from mlplatform.local.node.podcontext import PodContext
from mlplatform.local.node.podprobes import PodProbes
from mlplatform.local.node.status import Attempt
from nodefakes import FakeNodeApi, pod_context, pod_manifest

RUNNING = Attempt(0, "mlplatform://01234567-app-0", "2026-01-01T00:00:00Z")


def closed_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port: int = probe_socket.getsockname()[1]
        return port  # nothing listens there once the socket closes


def tcp_probe(port: int, **settings: Any) -> dict[str, Any]:
    return {"tcpSocket": {"host": "127.0.0.1", "port": port}, "periodSeconds": 1, **settings}


async def until(condition: Any, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_failed_liveness_probe_is_handed_back_once_and_stops_the_probes(tmp_path: Path) -> None:
    api = FakeNodeApi()
    failures: list[tuple[str, int, str]] = []
    container = {"name": "app", "livenessProbe": tcp_probe(closed_port(), failureThreshold=1)}

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            context = pod_context(tmp_path, api, http, pod_manifest(container))

            async def on_failure(name: str, number: int, kind: str) -> None:
                failures.append((name, number, kind))

            probes = PodProbes(context, on_failure)
            probes.start(container, RUNNING)
            assert probes.probing("app")
            await until(lambda: failures)
            assert not probes.probing("app")
            assert probes.results[("app", "liveness")] is False
            assert context.wake.is_set()

    asyncio.run(scenario())
    assert failures == [("app", 0, "liveness")]
    [(kind, reason, message)] = api.events
    assert (kind, reason) == ("Warning", "Unhealthy") and message.startswith("Liveness probe failed:")


def test_readiness_is_false_until_its_probe_passed_and_true_without_one(tmp_path: Path) -> None:
    async def never_fails(name: str, number: int, kind: str) -> None:
        raise AssertionError("nothing fails here")

    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        container = {"name": "app", "readinessProbe": tcp_probe(port)}
        async with server, aiohttp.ClientSession() as http:
            manifest = pod_manifest(container, {"name": "plain"})
            probes = PodProbes(pod_context(tmp_path, FakeNodeApi(), http, manifest), never_fails)
            probes.start(container, RUNNING)
            assert probes.ready("app") is False
            assert probes.ready("plain") and probes.started("plain")
            await until(lambda: probes.ready("app"))
            probes.stop_all()
            assert not probes.probing("app")

    asyncio.run(scenario())


def test_a_startup_probe_reported_passed_for_this_attempt_does_not_run_again(tmp_path: Path) -> None:
    container = {"name": "app", "image": "app:1", "startupProbe": tcp_probe(closed_port())}
    manifest = pod_manifest(container)
    reported = {"name": "app", "containerID": RUNNING.container_id, "started": True}
    manifest["status"] = {"containerStatuses": [reported]}

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            context: PodContext = pod_context(tmp_path, FakeNodeApi(), http, manifest)
            probes = PodProbes(context, lambda *_: asyncio.sleep(0))
            probes.start(container, RUNNING)
            assert probes.started("app")
            assert probes.runners["app"] == {}
            later = Attempt(1, "mlplatform://01234567-app-1", "2026-01-01T00:00:09Z")
            probes.start(container, later)  # a new attempt starts anew
            assert not probes.started("app") and list(probes.runners["app"]) == ["startup"]
            probes.stop_all()

    asyncio.run(scenario())
