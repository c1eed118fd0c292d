"""Lifecycle hooks as the kubelet runs them: the handlers probes use (exec in the container, httpGet to the
pod) plus sleep; an httpGet hook succeeds on any answer; tcpSocket is no hook handler; the time a preStop
hook takes comes out of the grace period, with the kubelet's two-second minimum left for SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from typing import Any

import aiohttp
import psutil
import pytest
from aiohttp import web

from mlplatform.local.node.hooks import MINIMUM_GRACE_SECONDS, failure_message, run_hook, signal_grace
from mlplatform.local.node.probes import ProbeTarget, probe_once

NOT_RUNNING = ProbeTarget("127.0.0.1", lambda: None, {}, {})


def run(handler: dict[str, Any], target: ProbeTarget = NOT_RUNNING) -> tuple[bool, str]:
    async def scenario() -> tuple[bool, str]:
        async with aiohttp.ClientSession() as http:
            return await run_hook(handler, target, http)

    return asyncio.run(scenario())


def test_a_sleep_hook_sleeps_its_seconds() -> None:
    started = time.monotonic()
    assert run({"sleep": {"seconds": 1}}) == (True, "")
    assert 1 <= time.monotonic() - started < 2


def test_a_tcp_socket_hook_fails_as_the_kubelet_fails_it() -> None:
    ok, message = run({"tcpSocket": {"port": 80}})
    assert not ok
    assert "tcpSocket" in message


def test_an_exec_hook_fails_when_the_container_does_not_run() -> None:
    assert run({"exec": {"command": ["true"]}}) == (False, "the container is not running")


def with_marker(marker: str) -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["cmdline", "status"])
        if marker in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE
    ]


def test_an_exec_hook_runs_with_the_container_env_and_a_cancelled_one_leaves_no_process() -> None:
    """Here the "container" is this process (nsenter into its own namespaces needs root)."""
    if os.geteuid() != 0:
        pytest.skip("nsenter needs root")
    marker = f"hook-{uuid.uuid4().hex}"
    target = ProbeTarget("127.0.0.1", os.getpid, {}, {"PATH": os.environ["PATH"], "MARK": marker})
    assert run({"exec": {"command": ["sh", "-c", f'test "$MARK" = {marker}']}}, target) == (True, "")
    failed = run({"exec": {"command": ["sh", "-c", "echo broken; exit 3"]}}, target)
    assert failed == (False, "command exited with 3, message: 'broken'")
    script = f"{sys.executable} -c 'import time; time.sleep(30)' {marker}; true"

    async def given_up() -> None:
        async with aiohttp.ClientSession() as http:
            hook = run_hook({"exec": {"command": ["sh", "-c", script]}}, target, http)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hook, 1)

    started = time.monotonic()
    asyncio.run(given_up())
    assert time.monotonic() - started < 5, "the hook's process outlived it"
    deadline = time.monotonic() + 2
    while with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not with_marker(marker)


async def serve(status: int, seen: list[web.Request]) -> tuple[web.AppRunner, int]:
    async def handle(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(status=status)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, int(port)


def against_server(status: int, action: dict[str, Any], kind: str) -> tuple[tuple[bool, str], list[Any]]:
    """Run a hook (or probe) with `action` against a local server answering `status`: result, requests."""
    seen: list[web.Request] = []

    async def scenario() -> tuple[bool, str]:
        runner, port = await serve(status, seen)
        target = ProbeTarget("127.0.0.1", lambda: None, {"http": port}, {})
        try:
            async with aiohttp.ClientSession() as http:
                if kind == "hook":
                    return await run_hook({"httpGet": action}, target, http)
                return await probe_once({"httpGet": action}, target, http)
        finally:
            await runner.cleanup()

    result = asyncio.run(scenario())
    return result, [(r.path, r.headers.get("User-Agent"), r.headers.get("X-Hook")) for r in seen]


HTTP_ACTION = {"path": "/drain", "port": "http", "httpHeaders": [{"name": "X-Hook", "value": "pre-stop"}]}


def test_an_http_get_hook_reaches_the_pod_ip_on_a_named_port_with_its_headers() -> None:
    result, seen = against_server(200, HTTP_ACTION, "hook")
    assert result == (True, "")
    assert seen == [("/drain", "kube-lifecycle/1.35", "pre-stop")]


def test_an_http_get_hook_succeeds_on_any_answer_but_a_probe_does_not() -> None:
    """The kubelet's hook only fails without an answer; a probe fails on a status of 400 or more."""
    assert against_server(500, HTTP_ACTION, "hook")[0] == (True, "")
    (ok, message), seen = against_server(500, HTTP_ACTION, "probe")
    assert (ok, message) == (False, "HTTP probe failed with statuscode: 500")
    assert seen[0][1] == "kube-probe/1.35"


def test_an_http_get_hook_fails_without_an_answer() -> None:
    ok, message = run({"httpGet": {"port": 1, "path": "/"}})
    assert not ok
    assert message


def test_an_unknown_named_port_fails_the_hook() -> None:
    assert run({"httpGet": {"port": "nope"}}) == (False, "unknown named port 'nope'")


@pytest.mark.parametrize(
    ("grace", "hook_seconds", "expected"),
    [
        (30, None, 30),  # no hook: the whole grace period
        (30, 3.5, 26.5),  # the hook's time comes out of it
        (5, 5.0, MINIMUM_GRACE_SECONDS),  # a hook that spent it all: the kubelet's minimal window
        (5, 4.0, MINIMUM_GRACE_SECONDS),
        (0, None, 0),
    ],
)
def test_the_grace_left_for_sigterm(grace: float, hook_seconds: float | None, expected: float) -> None:
    assert signal_grace(grace, hook_seconds) == pytest.approx(expected)
    assert MINIMUM_GRACE_SECONDS == 2


def test_failure_messages_are_worded_as_the_kubelet_words_them() -> None:
    pod = "web_team(1234)"
    exec_hook = {"exec": {"command": ["sh", "-c", "exit 3"]}}
    assert failure_message(exec_hook, "main", pod, "command exited 3") == (
        'Exec lifecycle hook ([sh -c exit 3]) for Container "main" in Pod "web_team(1234)" failed - '
        "error: command exited 3"
    )
    assert failure_message({"httpGet": {"path": "/x", "port": 80}}, "main", pod, "refused") == (
        'HTTP lifecycle hook (/x) for Container "main" in Pod "web_team(1234)" failed - error: refused'
    )
    assert failure_message({"tcpSocket": {"port": 80}}, "main", pod, "invalid").startswith(
        "Cannot run handler: "
    )
