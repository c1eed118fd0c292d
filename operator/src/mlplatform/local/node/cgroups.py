"""Control groups for containers: resource limits, OOM detection, and killing whatever a container left.

Works on the hybrid (v1) layout, with memory, cpu and pids controllers mounted separately, and on the
unified (v2) layout. On a hybrid layout a container is also placed in the v2 hierarchy mounted beside the
controllers (it has no controllers but has `cgroup.kill`), so killing a container is one atomic write
there as on a unified layout. Standard library only, for the shim.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
HYBRID_V2 = "unified"  # where a hybrid layout mounts the v2 hierarchy
CFS_PERIOD_US = 100_000
KILL_SECONDS = 5.0


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None = None
    cpu_millicores: int | None = None
    pids: int | None = None


def unified() -> bool:
    return (CGROUP_FS / "cgroup.controllers").exists()


def directories(path: str) -> list[Path]:
    """The folders of the cgroup `path` (relative, e.g. mlplatform/<pod>/<container>) in every hierarchy."""
    if unified():
        return [CGROUP_FS / path]
    return [
        CGROUP_FS / hierarchy / path
        for hierarchy in ("memory", "cpu", "pids", HYBRID_V2)
        if (CGROUP_FS / hierarchy).is_dir()
    ]


def every_hierarchy(path: str) -> list[Path]:
    """The folders of the cgroup `path` in every hierarchy there is, also those only a container runtime
    makes folders in (cpuset, devices, freezer …)."""
    if unified():
        return [CGROUP_FS / path]
    return [hierarchy / path for hierarchy in sorted(CGROUP_FS.iterdir()) if hierarchy.is_dir()]


def _write(path: Path, value: str) -> None:
    with contextlib.suppress(OSError):  # a controller this kernel lacks is a limit we cannot apply
        path.write_text(value)


def _enable_v2_controllers(path: str) -> None:
    parts = Path(path).parts
    for depth in range(len(parts)):
        parent = CGROUP_FS.joinpath(*parts[:depth])
        _write(parent / "cgroup.subtree_control", "+memory +cpu +pids")


def create(path: str, limits: Limits) -> list[Path]:
    if unified():
        _enable_v2_controllers(path)
    folders = directories(path)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    if unified():
        folder = folders[0]
        if limits.memory_bytes:
            _write(folder / "memory.max", str(limits.memory_bytes))
            _write(folder / "memory.swap.max", "0")
        if limits.cpu_millicores:
            _write(
                folder / "cpu.max",
                f"{max(1000, limits.cpu_millicores * CFS_PERIOD_US // 1000)} {CFS_PERIOD_US}",
            )
        if limits.pids:
            _write(folder / "pids.max", str(limits.pids))
        return folders
    for folder in folders:
        controller = folder.relative_to(CGROUP_FS).parts[0]  # the hybrid layout's v2 folder sets no limit
        if controller == "memory" and limits.memory_bytes:
            _write(folder / "memory.limit_in_bytes", str(limits.memory_bytes))
            _write(folder / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        if controller == "cpu" and limits.cpu_millicores:
            _write(folder / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            _write(folder / "cpu.cfs_quota_us", str(max(1000, limits.cpu_millicores * CFS_PERIOD_US // 1000)))
        if controller == "pids" and limits.pids:
            _write(folder / "pids.max", str(limits.pids))
    return folders


def join(path: str, pid: int = 0) -> None:
    """Move `pid` (0: the caller) into the cgroup in every hierarchy."""
    for folder in directories(path):
        (folder / "cgroup.procs").write_text(str(pid or os.getpid()))


def join_killable(path: str) -> None:
    """Move the caller into the hierarchy `kill_all` kills through, for a runtime to start the container
    from: on a hybrid layout the v2 hierarchy beside the controllers, where membership costs nothing and
    the runtime moves the container into the controllers' cgroups itself; on a unified layout, none."""
    if not unified() and (folder := CGROUP_FS / HYBRID_V2 / path).is_dir():
        (folder / "cgroup.procs").write_text(str(os.getpid()))


def pids(path: str) -> set[int]:
    found: set[int] = set()
    for folder in directories(path):
        for procs in [folder / "cgroup.procs", *folder.rglob("cgroup.procs")]:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(line) for line in procs.read_text().split())
    return found


def oom_killed(path: str) -> bool:
    """Whether the kernel's OOM killer killed a process in this cgroup."""
    for folder in directories(path):
        for name in ("memory.events", "memory.oom_control"):
            with contextlib.suppress(OSError):
                for line in (folder / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
    return False


def kill_all(path: str) -> None:
    """SIGKILL every process in the cgroup and the cgroups under it, and nothing else."""
    kill_files = [folder / "cgroup.kill" for folder in directories(path)]
    if kill_file := next((f for f in kill_files if f.exists()), None):
        with contextlib.suppress(FileNotFoundError):  # the cgroup is gone: nothing left to kill
            kill_file.write_text("1")
        return
    deadline = time.monotonic() + KILL_SECONDS  # no cgroup.kill (before Linux 5.14): member by member
    while (members := pids(path)) and time.monotonic() < deadline:
        for pid in members:
            _kill_member(pid, path)
        time.sleep(0.01)


def _kill_member(pid: int, path: str) -> None:
    """SIGKILL `pid` if it is still in the cgroup once pinned by a pidfd (its PID cannot be reused then)."""
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        if any(line.endswith(f":/{path}") or f":/{path}/" in line for line in lines):
            signal.pidfd_send_signal(descriptor, signal.SIGKILL)
    except (FileNotFoundError, ProcessLookupError):
        pass
    finally:
        os.close(descriptor)


def remove(path: str) -> None:
    """Remove the cgroup and every cgroup under it (they must hold no process), in every hierarchy."""
    for folder in every_hierarchy(path):
        if not folder.exists():
            continue
        for child in sorted(
            (p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                child.rmdir()
        with contextlib.suppress(OSError):
            folder.rmdir()
