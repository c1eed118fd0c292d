"""Long-running processes of the local platform: started detached, tracked by PID file, stopped by PID.

A PID file records the PID and the process's start time, so a recycled PID is never mistaken for ours.
Each process leads its own session, and stopping it signals the whole process group, then any child
that left the group, so nothing it started is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from mlplatform.local.errors import LocalError
from mlplatform.local.node import linux

Check = Callable[[], str | None]
"""A readiness probe: returns None when ready, or a short reason why not."""


def http_check(
    url: str, *, context: ssl.SSLContext | None = None, verdict: Callable[[str], str | None] | None = None
) -> Check:
    """Ready when GET `url` answers 2xx and, if given, `verdict` finds nothing wrong with the body."""

    def check() -> str | None:
        try:
            with urllib.request.urlopen(url, context=context, timeout=2) as response:  # noqa: S310 - ours
                body = response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return f"{url} answered {exc.code}"
        except (OSError, ssl.SSLError) as exc:
            return f"{url}: {exc}"
        return verdict(body) if verdict else None

    return check


def body_contains(expected: str) -> Callable[[str], str | None]:
    return lambda body: None if expected in body else f"answered {body[:80]!r}"


@dataclass(frozen=True)
class ProcessSpec:
    """How to start one long-running process."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass(frozen=True)
class ProcessRecord:
    """A started process: its PID and start time in clock ticks since boot, which, unlike a time derived
    from the wall clock, stays put when the clock is stepped (so a live service never reads as stopped)."""

    name: str
    pid: int
    start_ticks: int

    def orphans(self) -> list[psutil.Process]:
        """What the process left running after it died: members of its process group started after it.

        Children keep their leader's group when it dies; a recycled PID that leads a new group is alive
        itself, so a dead leader's group is still ours."""
        if self.process() is not None:
            return []
        found = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if (
                    proc.pid != self.pid  # the leader itself, a zombie at most
                    and os.getpgid(proc.pid) == self.pid
                    and linux.start_ticks(proc.pid) >= self.start_ticks
                ):
                    found.append(proc)
            except (ProcessLookupError, psutil.Error):
                continue
        return found

    def process(self) -> psutil.Process | None:
        """The live process this record names, or None if it has exited (or its PID was reused)."""
        if not linux.is_same(self.pid, self.start_ticks):
            return None
        try:
            return psutil.Process(self.pid)
        except psutil.Error:
            return None


def log_tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return f"(no log at {path})"
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 64 * 1024))
        text = handle.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class ProcessTable:
    """The processes of one local cluster, recorded under its run directory."""

    def __init__(self, run_dir: Path, log_dir: Path) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid.json"

    def record(self, name: str) -> ProcessRecord | None:
        try:
            data = json.loads(self._pid_file(name).read_text())
            return ProcessRecord(name, int(data["pid"]), int(data["start_ticks"]))
        except (OSError, ValueError, KeyError):
            return None

    def alive(self, name: str) -> psutil.Process | None:
        record = self.record(name)
        return record.process() if record else None

    def start(self, spec: ProcessSpec) -> ProcessRecord:
        """Start `spec` detached from this process, its output appended to its log file."""
        if (previous := self.record(spec.name)) is not None:
            for orphan in previous.orphans():  # left by an earlier run that crashed: they hold its ports
                terminate_tree(orphan, grace_seconds=5)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path(spec.name).open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {spec.name}\n".encode())
            log.flush()
            try:
                popen = subprocess.Popen(
                    list(spec.argv),
                    env={**os.environ, **spec.env},
                    cwd=spec.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise LocalError(f"cannot start {spec.name}: {exc}") from exc
        record = ProcessRecord(spec.name, popen.pid, linux.start_ticks(popen.pid))
        self._pid_file(spec.name).write_text(
            json.dumps({"pid": record.pid, "start_ticks": record.start_ticks})
        )
        return record

    def stop(self, name: str, grace_seconds: float = 10.0) -> bool:
        """Stop `name` and everything it started: SIGTERM, then SIGKILL after the grace period."""
        record = self.record(name)
        proc = record.process() if record else None
        stopped = proc is not None
        if proc is not None:
            terminate_tree(proc, grace_seconds)
        for orphan in record.orphans() if record else []:
            terminate_tree(orphan, grace_seconds)
        self._pid_file(name).unlink(missing_ok=True)
        return stopped


def terminate_tree(proc: psutil.Process, grace_seconds: float) -> None:
    """SIGTERM a process, its process group and its descendants; SIGKILL what outlives the grace period."""
    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        family = [proc]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        for member in family:
            with contextlib.suppress(psutil.Error):
                member.send_signal(sig)
        _, alive = psutil.wait_procs(family, timeout=grace_seconds if sig == signal.SIGTERM else 5)
        if not alive:
            return
        family = alive
    names = ", ".join(str(p.pid) for p in family)
    raise LocalError(f"processes {names} did not exit after SIGKILL")


def wait_for(
    check: Check,
    timeout: float,
    what: str,
    *,
    log_file: Path | None = None,
    proc: ProcessRecord | None = None,
    interval: float = 0.2,
) -> None:
    """Poll `check` until it returns None (ready) or time runs out; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    reason = "not ready"
    while time.monotonic() < deadline:
        outcome = check()
        if outcome is None:
            return
        reason = outcome
        if proc is not None and proc.process() is None:
            raise LocalError(f"{what} exited during start-up", details=log_tail(log_file) if log_file else "")
        time.sleep(interval)
    raise LocalError(
        f"{what} was not ready after {timeout:.0f}s ({reason})",
        details=log_tail(log_file) if log_file else "",
    )
