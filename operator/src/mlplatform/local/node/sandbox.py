"""The pod sandbox: a small process that holds a pod's network, UTS, IPC and mount namespaces.

`plan_rootfs` (pure) decides the pod's root filesystem: a tmpfs root where every host directory
appears as an overlay (the host's files, read through; the pod's writes kept in a pod-private tmpfs),
fresh /proc, /sys, /dev, /run and /tmp, and the pod's own hosts, resolv.conf and hostname files. The
host's private folders (the user's home, the platform's cache and state) are empty instead, but for the
environments and image folders the pod runs, bound back read-only.
`python -m mlplatform.local.node.sandbox SPEC` enters new namespaces, carries the plan out, pivots into
the new root, reports "ready" on stdout and then waits, like a pause container, until it is killed.
Standard library only, so a pod starts quickly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mlplatform.local.node import linux

# Top-level host folders a pod does not see through: it gets its own instead.
REPLACED = frozenset({"proc", "sys", "dev", "run", "tmp", "lost+found"})
POD_PRIVATE = "/.mlplatform"  # the node's own folders in a pod's root, hidden from its containers
VOLUMES_IN_POD = f"{POD_PRIVATE}/volumes"
HOST_PATHS_IN_POD = f"{POD_PRIVATE}/host-paths"  # hostPath volumes: the real host folders, not the overlay
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


@dataclass(frozen=True)
class MountStep:
    """One step in building a pod's root: `target` is a path inside the new root."""

    op: str  # overlay | symlink | tmpfs | proc | sysfs | devpts | bind | file | traversable
    target: str
    source: str = ""
    readonly: bool = False
    mode: int = 0o755


def host_entries(host_root: Path) -> list[tuple[str, str | None]]:
    """The host's top-level folders and links a pod's root is made of (name, link target or None)."""
    entries: list[tuple[str, str | None]] = []
    for entry in sorted(host_root.iterdir()):
        if entry.name in REPLACED:
            continue
        if entry.is_symlink():
            entries.append((entry.name, os.readlink(entry)))
        elif entry.is_dir():
            entries.append((entry.name, None))
    return entries


def under_replaced(path: str) -> bool:
    parts = Path(path).parts
    return len(parts) > 1 and parts[1] in REPLACED


def is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def outermost(folders: Iterable[str]) -> list[str]:
    """The folders to cover, sorted, leaving out any inside another (covering a folder covers them too),
    the root, and those under a folder the pod gets its own of anyway."""
    kept: list[str] = []
    for folder in sorted(set(folders)):
        if folder != "/" and not under_replaced(folder) and not any(is_within(folder, k) for k in kept):
            kept.append(folder)
    return kept


def plan_rootfs(
    host_entries: Iterable[tuple[str, str | None]],
    pod_etc: Path,
    pod_tmp: Path,
    pod_volumes: Path,
    *,
    visible_paths: Sequence[str],
    hidden_paths: Sequence[str] = (),
    host_paths: Mapping[str, str] | None = None,
) -> list[MountStep]:
    """How to build a pod's root; `visible_paths` (environments, code) must appear at their host paths.

    `hidden_paths` are host folders the pod must not see (the user's home, the platform's state with its
    keys and credentials): each becomes an empty tmpfs, into which the visible paths it holds are bound
    back read-only, and nothing else."""
    hidden = outermost(hidden_paths)
    steps: list[MountStep] = []
    for name, link in host_entries:
        if link is not None:
            steps.append(MountStep("symlink", f"/{name}", source=link))
        elif f"/{name}" in hidden:
            steps.append(MountStep("tmpfs", f"/{name}"))
        else:
            steps.append(MountStep("overlay", f"/{name}", source=f"/{name}"))
    steps += [MountStep("tmpfs", folder) for folder in hidden if folder.count("/") > 1]  # over the overlays
    steps += [
        MountStep("proc", "/proc"),
        MountStep("sysfs", "/sys", readonly=True),
        MountStep("tmpfs", "/dev"),
        *(MountStep("file", f"/dev/{device}", source=f"/dev/{device}") for device in DEVICES),
        MountStep("tmpfs", "/dev/shm", mode=0o1777),
        MountStep("devpts", "/dev/pts"),
        MountStep("symlink", "/dev/ptmx", source="pts/ptmx"),
        MountStep("symlink", "/dev/fd", source="/proc/self/fd"),
        *(
            MountStep("symlink", f"/dev/{name}", source=f"/proc/self/fd/{fd}")
            for fd, name in enumerate(("stdin", "stdout", "stderr"))
        ),
        MountStep("tmpfs", "/run"),
        MountStep("bind", "/tmp", source=str(pod_tmp)),
        *(
            MountStep("file", f"/etc/{name}", source=str(pod_etc / name))
            for name in ("hosts", "resolv.conf", "hostname")
        ),
        MountStep("bind", VOLUMES_IN_POD, source=str(pod_volumes)),
        *(
            MountStep("bind", f"{HOST_PATHS_IN_POD}/{name}", source=path)
            for name, path in (host_paths or {}).items()
        ),
    ]
    for path in visible_paths:
        if under_replaced(path) or any(is_within(path, folder) for folder in hidden):
            steps.append(MountStep("bind", path, source=path, readonly=True))
        else:
            steps.append(MountStep("traversable", path))
    return steps


@dataclass(frozen=True)
class SandboxSpec:
    hostname: str
    rootfs: str
    upper: str
    steps: list[MountStep]
    host_network: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SandboxSpec:
        data = json.loads(text)
        data["steps"] = [MountStep(**step) for step in data["steps"]]
        return cls(**data)


def _mkdirs(path: str, mode: int = 0o755) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)


def _touch(path: str) -> None:
    _mkdirs(os.path.dirname(path))
    if not os.path.lexists(path):
        with open(path, "a"):
            pass


def _overlay(root: str, upper_root: str, step: MountStep) -> None:
    key = step.target.strip("/").replace("/", "_")
    upper, work = f"{upper_root}/{key}/upper", f"{upper_root}/{key}/work"
    _mkdirs(upper)
    _mkdirs(work)
    target = root + step.target
    _mkdirs(target)
    linux.mount("overlay", target, "overlay", 0, f"lowerdir={step.source},upperdir={upper},workdir={work}")


def _make_traversable(root: str, path: str) -> None:
    """Let a non-root container reach `path`: o+x on each folder above it, in the pod's own view only."""
    current = root
    for part in Path(path).parts[1:-1]:
        current = f"{current}/{part}"
        with contextlib.suppress(OSError):
            mode = os.stat(current).st_mode
            if not mode & 0o001:
                os.chmod(current, (mode & 0o7777) | 0o001)


def _carry_out(step: MountStep, root: str, upper_root: str) -> None:
    target = root + step.target
    match step.op:
        case "overlay":
            _overlay(root, upper_root, step)
        case "symlink":
            _mkdirs(os.path.dirname(target))
            if not os.path.lexists(target):
                os.symlink(step.source, target)
        case "tmpfs":
            _mkdirs(target)
            linux.mount("tmpfs", target, "tmpfs", linux.MS_NOSUID, f"mode={step.mode:o}")
        case "proc":
            _mkdirs(target)
            linux.mount("proc", target, "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
        case "sysfs":
            _mkdirs(target)
            linux.mount(
                "sysfs", target, "sysfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC | linux.MS_RDONLY
            )
        case "devpts":
            _mkdirs(target)
            linux.mount(
                "devpts",
                target,
                "devpts",
                linux.MS_NOSUID | linux.MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620",
            )
        case "bind":
            _mkdirs(target)
            linux.bind(step.source, target, readonly=step.readonly, recursive=True)
        case "file":
            _touch(target)
            linux.bind(step.source, target, readonly=step.readonly)
        case "traversable":
            _make_traversable(root, step.target)
        case _:
            raise ValueError(f"unknown mount step {step.op!r}")


def build_root(spec: SandboxSpec) -> None:
    """In a fresh mount namespace, build the pod's root from its plan and pivot into it."""
    linux.make_private("/")
    _mkdirs(spec.rootfs)
    _mkdirs(spec.upper)
    linux.mount("tmpfs", spec.rootfs, "tmpfs", 0, "mode=755")
    linux.mount("tmpfs", spec.upper, "tmpfs", 0, "mode=700")
    for step in spec.steps:
        _carry_out(step, spec.rootfs, spec.upper)
    os.chdir(spec.rootfs)
    linux.pivot_root_here()


def main(spec_path: str) -> None:
    spec = SandboxSpec.from_json(Path(spec_path).read_text())
    try:
        flags = (
            linux.CLONE_NEWNS
            | linux.CLONE_NEWUTS
            | linux.CLONE_NEWIPC
            | (0 if spec.host_network else linux.CLONE_NEWNET)
        )
        linux.unshare(flags)
        socket.sethostname(spec.hostname)
        build_root(spec)
    except OSError as exc:
        print(f"error: {exc}", flush=True)
        sys.exit(1)
    print("ready", flush=True)
    os.dup2(os.open("/dev/null", os.O_WRONLY), 1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    main(sys.argv[1])
