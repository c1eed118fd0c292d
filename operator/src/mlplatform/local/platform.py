"""Parts of the local platform and the services they run, brought up in order and taken down in reverse.

A *part* (host network, control plane, MLflow stack, node) prepares what its services need, starts them
stage by stage, waits until each stage is ready and may then finish with cluster objects. `down` stops
the services of every part in reverse order and lets each part tear down what it made.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil

from mlplatform.local.config import LocalConfig, StateLayout
from mlplatform.local.errors import LocalError
from mlplatform.local.processes import Check, ProcessSpec, ProcessTable

Log = Callable[[str], None]


@dataclass
class Context:
    """What a part needs while it comes up or goes down."""

    config: LocalConfig
    layout: StateLayout
    processes: ProcessTable
    log: Log
    binaries: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Service:
    """One long-running process: how to start it, where it listens and how it says it is ready."""

    name: str
    spec: Callable[[Context], ProcessSpec]
    ready: Callable[[Context], Check]
    listens: Callable[[LocalConfig], Sequence[tuple[str, int]]] = lambda _: ()
    timeout: float = 90.0


class Part(Protocol):
    """A part of the local platform."""

    name: str

    def binaries(self, config: LocalConfig) -> Sequence[str]:
        """The Go binaries (names in gobuild.BINARIES) its services run."""
        ...

    def stages(self, config: LocalConfig) -> Sequence[Sequence[Service]]:
        """Its services, in stages: all of a stage start together and must be ready before the next."""
        ...

    def prepare(self, ctx: Context) -> None:
        """Make what its services need (certificates, directories, networks); idempotent."""
        ...

    def finish(self, ctx: Context) -> None:
        """Runs once its services are ready (for example, create cluster objects); idempotent."""
        ...

    def teardown(self, ctx: Context) -> None:
        """Runs after its services stopped: remove what `prepare` made outside the state directory."""
        ...


def services_of(part: Part, config: LocalConfig) -> list[Service]:
    return [service for stage in part.stages(config) for service in stage]


def _listeners(port: int) -> list[tuple[str, int | None]]:
    try:
        connections = psutil.net_connections(kind="inet")
    except psutil.Error:
        return []
    return [
        (c.laddr.ip, c.pid)
        for c in connections
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
    ]


def _holder(pid: int | None) -> str:
    if pid is None:
        return "another process"
    try:
        return f"{psutil.Process(pid).name()} (pid {pid})"
    except psutil.Error:
        return f"pid {pid}"


def check_port_free(address: str, port: int, needed_by: str) -> None:
    """Fail with a clear message if `address:port` cannot be ours."""
    for ip, pid in _listeners(port):
        if ip in (address, "0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
            raise LocalError(
                f"port {port} on {address} is already in use by {_holder(pid)}; "
                f"{needed_by} needs it (stop that process, or use --port-offset)"
            )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no conflict
        try:
            probe.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LocalError(
                    f"port {port} on {address} is already in use; {needed_by} needs it "
                    "(stop what holds it, or use --port-offset)"
                ) from exc
            if (
                exc.errno != errno.EADDRNOTAVAIL
            ):  # the node's host address appears only once its bridge exists
                raise LocalError(
                    f"cannot listen on {address}:{port} for {needed_by}: {exc.strerror}"
                ) from exc


def is_root() -> bool:
    return os.geteuid() == 0
