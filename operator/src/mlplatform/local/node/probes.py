"""Startup, liveness and readiness probes, run by the node against a container as the kubelet runs them.

httpGet and tcpSocket probes connect from the node to the pod's IP; exec probes run the command in
the container's own namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

Manifest = dict[str, Any]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeTarget:
    """Where a container can be reached: its pod's IP, its process (for exec), its named ports and env."""

    pod_ip: str
    pid: Callable[[], int | None]  # read at each probe: the container may have (re)started meanwhile
    ports: Mapping[str, int]
    env: Mapping[str, str]


def _port(value: int | str, ports: Mapping[str, int]) -> int:
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    if value not in ports:
        raise ValueError(f"unknown named port {value!r}")
    return ports[value]


async def probe_once(probe: Manifest, target: ProbeTarget, http: aiohttp.ClientSession) -> tuple[bool, str]:
    """Run a probe once: (success, what went wrong)."""
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if action := probe.get("httpGet"):
            return await _http(action, target, http, timeout)
        if action := probe.get("tcpSocket"):
            host = action.get("host") or target.pod_ip
            port = _port(action["port"], target.ports)
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True, ""
        if action := probe.get("exec"):
            return await _exec(action["command"], target, timeout)
        if "grpc" in probe:
            return False, "grpc probes are not supported by the local node"
    except TimeoutError:
        return False, f"timeout after {timeout:g}s"
    except (OSError, aiohttp.ClientError, ValueError) as exc:
        return False, str(exc) or type(exc).__name__
    return False, "the probe has no action"


async def _http(
    action: Manifest, target: ProbeTarget, http: aiohttp.ClientSession, timeout: float
) -> tuple[bool, str]:
    scheme = str(action.get("scheme", "HTTP")).lower()
    host = action.get("host") or target.pod_ip
    url = f"{scheme}://{host}:{_port(action['port'], target.ports)}{action.get('path', '/')}"
    headers = {
        "User-Agent": "kube-probe/1.35",
        **{h["name"]: h["value"] for h in action.get("httpHeaders") or []},
    }
    async with http.get(
        url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout), ssl=False, allow_redirects=False
    ) as response:
        if 200 <= response.status < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {response.status}"


async def _exec(command: list[str], target: ProbeTarget, timeout: float) -> tuple[bool, str]:
    pid = target.pid()
    if pid is None:
        return False, "the container is not running"
    process = await asyncio.create_subprocess_exec(
        "nsenter",
        f"--target={pid}",
        "--mount",
        "--net",
        "--uts",
        "--",
        *command,
        env=dict(target.env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode == 0:
        return True, ""
    return False, output.decode(errors="replace").strip()[-300:] or f"command exited {process.returncode}"


class ProbeRunner:
    """Runs one probe of one container attempt on its schedule and reports each change of result."""

    def __init__(
        self,
        kind: str,
        *,
        probe: Manifest,
        target: ProbeTarget,
        http: aiohttp.ClientSession,
        on_result: Callable[[str, bool, str], Awaitable[None]],
        gate: Callable[[], bool] = lambda: True,
    ) -> None:
        self.kind = kind
        self.probe = probe
        self.target = target
        self.http = http
        self.on_result = on_result
        self.gate = gate  # liveness and readiness wait for the startup probe
        self.result: bool | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name=f"probe-{self.kind}")

    def stop(self) -> None:
        if self.task:
            self.task.cancel()

    async def _loop(self) -> None:
        probe = self.probe
        period = float(probe.get("periodSeconds", 10))
        success_needed = int(probe.get("successThreshold", 1))
        failure_allowed = int(probe.get("failureThreshold", 3))
        await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
        successes = failures = 0
        while True:
            if self.gate():
                ok, message = await probe_once(probe, self.target, self.http)
                successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
                if ok and successes >= success_needed and self.result is not True:
                    self.result = True
                    await self.on_result(self.kind, True, "")
                    if self.kind == "startup":
                        return  # as the kubelet's: a container that started stays started
                elif not ok and failures >= failure_allowed and self.result is not False:
                    self.result = False
                    await self.on_result(self.kind, False, message)
                elif not ok:
                    log.debug("%s probe failed (%d/%d): %s", self.kind, failures, failure_allowed, message)
            await asyncio.sleep(period)
