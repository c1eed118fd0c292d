"""Startup, liveness and readiness probes, run by the node against a container as the kubelet runs them.

httpGet and tcpSocket probes connect from the node to the pod's IP; exec probes run the command in
the container's own namespaces. The httpGet and exec handlers serve lifecycle hooks too (hooks.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

Manifest = dict[str, Any]
log = logging.getLogger(__name__)
KUBE_MINOR = "1.35"  # the Kubernetes version the local platform runs, as kubelets name it in User-Agent
PROBE_AGENT = f"kube-probe/{KUBE_MINOR}"


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


HANDLER_ERRORS = (OSError, aiohttp.ClientError, ValueError)  # TimeoutError is an OSError


def failure_text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def probe_once(probe: Manifest, target: ProbeTarget, http: aiohttp.ClientSession) -> tuple[bool, str]:
    """Run a probe once: (success, what went wrong)."""
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        return await _probe(probe, target, http, timeout)
    except TimeoutError:
        return False, f"timeout after {timeout:g}s"
    except HANDLER_ERRORS as exc:
        return False, failure_text(exc)


async def _probe(
    probe: Manifest, target: ProbeTarget, http: aiohttp.ClientSession, timeout: float
) -> tuple[bool, str]:
    if action := probe.get("httpGet"):
        status = await http_get(action, target, http, timeout, PROBE_AGENT)
        if 200 <= status < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {status}"
    if action := probe.get("tcpSocket"):
        host = action.get("host") or target.pod_ip
        port = _port(action["port"], target.ports)
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True, ""
    if action := probe.get("exec"):
        code, output = await exec_in_container(action["command"], target, timeout)
        return code == 0, "" if code == 0 else output[-300:] or f"command exited {code}"
    if "grpc" in probe:
        return False, "grpc probes are not supported by the local node"
    return False, "the probe has no action"


async def http_get(
    action: Manifest, target: ProbeTarget, http: aiohttp.ClientSession, timeout: float | None, agent: str
) -> int:
    """GET an httpGet action's URL from the node (host: the pod's IP unless given); its status code.
    Raises (OSError, aiohttp.ClientError, TimeoutError) when no answer comes."""
    scheme = str(action.get("scheme", "HTTP")).lower()
    host = action.get("host") or target.pod_ip
    url = f"{scheme}://{host}:{_port(action['port'], target.ports)}{action.get('path', '/')}"
    headers = {"User-Agent": agent, **{h["name"]: h["value"] for h in action.get("httpHeaders") or []}}
    async with http.get(
        url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout), ssl=False, allow_redirects=False
    ) as response:
        return response.status


async def exec_in_container(
    command: list[str], target: ProbeTarget, timeout: float | None
) -> tuple[int, str]:
    """Run `command` in the container's namespaces with its environment: (exit code, its output). The
    command's whole process group is killed if it outlives `timeout` or its caller is cancelled."""
    pid = target.pid()
    if pid is None:
        raise ProcessLookupError("the container is not running")
    process = await asyncio.create_subprocess_exec(
        "nsenter",
        f"--target={pid}",
        "--mount",
        "--net",
        "--uts",
        "--pid",  # in the container's own PID namespace, as `kubectl exec` and exec probes are
        "--",
        *command,
        env=dict(target.env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.shield(process.wait())
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace").strip()


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
