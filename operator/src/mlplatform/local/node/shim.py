"""The container shim: one process per container attempt, the parent of the container's process, as
containerd's runc shim is.

It has runc create the container from an OCI config (oci.py) inside the pod sandbox's network, UTS and
IPC namespaces, on the pod's root: runc gives it its own PID namespace (its main process is PID 1) and
mount namespace, its mounts, identity, capabilities, seccomp profile and a read-only root if asked; the
shim sets the cgroup limits, starts the container, writes its output to the log file in the CRI format,
and records how it ended (exit code, signal, OOM kill) in `exit.json`. The shim is a subreaper: once
`runc create` returns, the container's process is its child, so it waits for it as containerd's shim
does. Because the shim, not the node agent, waits for the container, an agent restart loses nothing.
Standard library only, so a container starts quickly.

runc runs in a mount namespace made from the sandbox's, in which the pod's root is bound into the
container's bundle (runc's root must be a folder in its own mount namespace) and the host's cgroup
hierarchies are mounted where runc looks for them; the bundle and runc's state live beside the pod's
volumes, which the host and the pod's root share.

Run as: python -m mlplatform.local.node.shim SPEC_FILE
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from mlplatform.local.files import write_if_changed
from mlplatform.local.node import cgroups, linux, oci
from mlplatform.local.node.layout import RUNTIME
from mlplatform.local.node.logs import format_line, tail_content, timestamp
from mlplatform.local.node.sandbox import POD_PRIVATE, VOLUMES_IN_POD

RUNC = "runc"
RUNC_LOG = "runc.log"
PID_FILE = "pid"
RUNTIME_IN_POD = f"{VOLUMES_IN_POD}/{RUNTIME}"
MAX_LINE = 16 * 1024
EXIT_START_ERROR = 128
DRAIN_SECONDS = 2.0
# The kubelet's limits: the termination-log file's last 4 KiB; from the log, its last 80 lines, 2 KiB.
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
# What a read-only root leaves writable besides the container's own mounts, as a runtime mounts them.
WRITABLE_UNDER_READ_ONLY_ROOT = ("/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")


@dataclass(frozen=True)
class Mount:
    source: str  # a path in the pod's view (volumes are under VOLUMES_IN_POD)
    target: str
    readonly: bool = False


@dataclass(frozen=True)
class Identity:
    uid: int | None = None
    gid: int | None = None
    groups: list[int] = field(default_factory=list)
    no_new_privs: bool = False
    drop_capabilities: list[str] = field(default_factory=list)  # securityContext names; "ALL": every one


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    working_dir: str
    sandbox_pid: int
    mounts: list[Mount]
    identity: Identity
    cgroup: str
    container_id: str  # runc's name for this attempt
    runtime_dir: str  # the pod's runtime folder (PodLayout.runtime), as the host sees it
    memory_bytes: int | None
    cpu_millicores: int | None
    log_file: str
    state_file: str
    exit_file: str
    termination_log: str = ""  # host path of this attempt's file at terminationMessagePath ("": none)
    fallback_to_logs: bool = False  # terminationMessagePolicy: FallbackToLogsOnError
    read_only_root: bool = False  # securityContext.readOnlyRootFilesystem
    seccomp: str | None = None  # the effective seccompProfile: "RuntimeDefault", or None for unconfined

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> ContainerSpec:
        data = json.loads(text)
        data["mounts"] = [Mount(**m) for m in data["mounts"]]
        data["identity"] = Identity(**data["identity"])
        return cls(**data)


def _namespace_fds(pid: int) -> list[tuple[int, int]]:
    kinds = (
        ("net", linux.CLONE_NEWNET),
        ("uts", linux.CLONE_NEWUTS),
        ("ipc", linux.CLONE_NEWIPC),
        ("mnt", linux.CLONE_NEWNS),
    )
    return [(os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY), kind) for name, kind in kinds]


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), text)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


@dataclass(frozen=True)
class MountEntry:
    """One line of a /proc/<pid>/mountinfo."""

    point: str  # relative to the process's root
    options: list[str]  # the mount's own (ro, nosuid …)
    fstype: str
    super_options: list[str]  # the filesystem's (for a cgroup hierarchy: its controllers or name)


def mount_entries(mountinfo: str) -> list[MountEntry]:
    entries = []
    for line in mountinfo.splitlines():
        mount, _, filesystem = line.partition(" - ")
        fields = mount.split()
        fstype, _, super_options = filesystem.split(" ", 2)
        point = _unescape(fields[4])
        entries.append(MountEntry(point, fields[5].split(","), fstype, super_options.split(",")))
    return entries


def read_only_paths(mountinfo: str, writable: Iterable[str]) -> list[str]:
    """The mounts a read-only root makes read-only besides the root itself: every writable mount point in
    the pod root's `mountinfo` (the sandbox's) but those at or under a `writable` path."""
    kept = list(writable)
    return [
        entry.point
        for entry in mount_entries(mountinfo)
        if entry.point != "/"
        and "ro" not in entry.options
        and not any(_under(entry.point, folder) for folder in kept)
    ]


@dataclass(frozen=True)
class CgroupMount:
    point: str
    fstype: str  # cgroup or cgroup2
    options: str  # the hierarchy's own (super block) options: which controllers, or which name


def cgroup_mounts(mountinfo: str) -> list[CgroupMount]:
    """The host's cgroup hierarchies, from its `mountinfo`, to mount again where runc looks for them."""
    return [
        CgroupMount(
            entry.point, entry.fstype, ",".join(o for o in entry.super_options if o not in ("rw", "ro"))
        )
        for entry in mount_entries(mountinfo)
        if entry.fstype in ("cgroup", "cgroup2")
    ]


def _mount_cgroups(mounts: list[CgroupMount]) -> None:
    hidden = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    if all(m.point != str(cgroups.CGROUP_FS) for m in mounts):  # hybrid: a tmpfs holds the hierarchies
        linux.mount("tmpfs", str(cgroups.CGROUP_FS), "tmpfs", hidden, "mode=755")
    for mount in mounts:
        os.makedirs(mount.point, exist_ok=True)
        linux.mount(mount.fstype, mount.point, mount.fstype, hidden, mount.options or None)


@dataclass(frozen=True)
class Bundle:
    """The OCI bundle of one attempt and runc's state folder, each as the host sees it and as runc, in the
    pod's root, sees it."""

    runtime_dir: str
    container_id: str

    def host(self, name: str = "") -> str:
        return os.path.join(self.runtime_dir, self.container_id, name).rstrip("/")

    def in_pod(self, name: str = "") -> str:
        return os.path.join(RUNTIME_IN_POD, self.container_id, name).rstrip("/")

    def runc(self, *arguments: str, in_pod: bool = False) -> list[str]:
        """A runc command on this bundle's state folder, run on the host or in the pod's root."""
        state = f"{RUNTIME_IN_POD}/state" if in_pod else os.path.join(self.runtime_dir, "state")
        return [RUNC, "--root", state, *arguments]


def _enter(
    spec: ContainerSpec,
    namespaces: list[tuple[int, int]],
    hierarchies: list[CgroupMount],
    rootfs: str,
    error_fd: int,
) -> None:
    """Runs in the forked child before it executes `runc create`: default signals, the cgroup to kill the
    container by, the sandbox's namespaces, then a mount namespace of its own made of the pod's, where the
    pod's root is bound at the bundle's rootfs and the cgroup hierarchies are mounted."""
    try:
        _default_signals()
        cgroups.join_killable(spec.cgroup)
        for fd, kind in namespaces:
            linux.setns(fd, kind)
        linux.unshare(linux.CLONE_NEWNS)
        linux.make_private("/")
        os.makedirs(spec.working_dir, exist_ok=True)  # the kubelet creates a missing working directory
        os.makedirs(rootfs, exist_ok=True)
        linux.bind("/", rootfs, recursive=True)
        _mount_cgroups(hierarchies)
    except OSError as exc:
        os.write(error_fd, str(exc).encode())
        raise


def _default_signals() -> None:
    """A container starts as runc starts it: every signal at its default action, none blocked. An ignored
    disposition survives exec (the shim ignores SIGTERM), and a shell cannot trap a signal it was
    started with ignored."""
    for number in signal.valid_signals():
        if number not in (signal.SIGKILL, signal.SIGSTOP):
            with contextlib.suppress(OSError, ValueError):
                signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


class LogWriter:
    """Splits a stream into CRI log lines; a line longer than MAX_LINE is written in partial pieces."""

    def __init__(self, out: Path) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        self.handle = out.open("ab", buffering=0)
        self.pending: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def feed(self, stream: str, data: bytes) -> None:
        buffer = self.pending[stream] + data
        *lines, rest = buffer.split(b"\n")
        for line in lines:
            while len(line) > MAX_LINE:  # a long line that arrived whole is split like one still arriving
                self.handle.write(format_line(stream, line[:MAX_LINE], partial=True))
                line = line[MAX_LINE:]  # noqa: PLW2901
            self.handle.write(format_line(stream, line))
        while len(rest) > MAX_LINE:
            self.handle.write(format_line(stream, rest[:MAX_LINE], partial=True))
            rest = rest[MAX_LINE:]
        self.pending[stream] = rest

    def close(self) -> None:
        for stream, rest in self.pending.items():
            if rest:
                self.handle.write(format_line(stream, rest))
        self.handle.close()


def _reap_orphans() -> None:
    """When the container's PID 1 ends, the kernel kills the rest of its namespace and hands them to the
    shim, a subreaper; collect them so none stays a zombie."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _pump(pid: int, streams: dict[str, IO[bytes]], writer: LogWriter, cgroup: str) -> int:
    """Copy the container's output to the log until its process `pid`, the shim's child, exits and the
    pipes drain; return how it ended, as Popen.returncode does (-N: killed by signal N)."""
    selector = selectors.DefaultSelector()
    for name, stream in streams.items():
        selector.register(stream, selectors.EVENT_READ, name)
    pidfd = os.pidfd_open(pid)
    selector.register(pidfd, selectors.EVENT_READ, "exit")
    status: int | None = None
    drain_until: float | None = None
    while selector.get_map():
        timeout = None if drain_until is None else drain_until - time.monotonic()
        if timeout is not None and timeout <= 0:
            break
        for key, _ in selector.select(timeout):
            if key.data == "exit":
                selector.unregister(pidfd)
                os.close(pidfd)
                status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                cgroups.kill_all(cgroup)  # like a runtime: when the main process ends, the container ends
                drain_until = time.monotonic() + DRAIN_SECONDS
                continue
            data = os.read(key.fd, 65536)
            if data:
                writer.feed(key.data, data)
            else:
                selector.unregister(key.fileobj)
    if status is None:  # the pipes closed first: wait for the exit itself
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return status


def create_termination_log(path: str) -> None:
    """An empty file for this attempt alone, writable by whatever user the container runs as."""
    if not path:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
    try:
        os.fchmod(descriptor, 0o666)  # not narrowed by the umask
    finally:
        os.close(descriptor)


def _read_end(path: str, limit: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, 2) - limit))
            return handle.read(limit)
    except OSError:
        return b""


def termination_message(spec: ContainerSpec, outcome: dict[str, object]) -> str:
    """The kubelet's termination message: the end of the termination-log file; with
    FallbackToLogsOnError, when that is empty and the container failed, the end of its log instead."""
    data = _read_end(spec.termination_log, MAX_TERMINATION_MESSAGE) if spec.termination_log else b""
    # A container that never ran has no log of its own (the kubelet skips ContainerCannotRun alike).
    failed = outcome.get("exitCode") != 0 and outcome.get("reason") != "StartError"
    if not data and spec.fallback_to_logs and failed:
        data = tail_content(Path(spec.log_file), FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES)
    return data.decode(errors="replace")


def with_termination_message(spec: ContainerSpec, outcome: dict[str, object]) -> dict[str, object]:
    """The outcome with the termination message added to the runtime's own message, as the kubelet does."""
    message = termination_message(spec, outcome)
    if not message:
        return outcome
    runtime_message = str(outcome.get("message") or "")
    return {**outcome, "message": f"{runtime_message}: {message}" if runtime_message else message}


class StartError(Exception):
    """The container could not be created or started; the message says why, as runc says it."""


def _runc_error(bundle: Bundle, fallback: str) -> str:
    """runc's last error from its JSON log, else `fallback`."""
    message = fallback
    with contextlib.suppress(OSError):
        for line in Path(bundle.host(RUNC_LOG)).read_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("level") in ("error", "fatal"):
                    message = str(entry.get("msg") or message)
    return message


def _write_config(spec: ContainerSpec, bundle: Bundle) -> None:
    os.makedirs(bundle.host(), exist_ok=True)
    read_only: list[str] = []
    if spec.read_only_root:  # only then is the pod's mount table needed
        pod_mounts = Path(f"/proc/{spec.sandbox_pid}/mountinfo").read_text()
        writable = [*WRITABLE_UNDER_READ_ONLY_ROOT, POD_PRIVATE, *(m.target for m in spec.mounts)]
        read_only = read_only_paths(pod_mounts, writable)
    config = oci.config(
        spec, rootfs=bundle.in_pod("rootfs"), read_only_paths=read_only, cgroup_path="/" + spec.cgroup
    )
    Path(bundle.host("config.json")).write_text(json.dumps(config))


def _create(spec: ContainerSpec, bundle: Bundle) -> tuple[int, dict[str, IO[bytes]]]:
    """`runc create` in the sandbox; the container's process (waiting to be started) and its output."""
    error_read, error_write = os.pipe()
    namespaces = _namespace_fds(spec.sandbox_pid)
    hierarchies = cgroup_mounts(Path("/proc/self/mountinfo").read_text())
    rootfs = bundle.in_pod("rootfs")
    command = bundle.runc(
        *("--log", bundle.in_pod(RUNC_LOG), "--log-format", "json", "create"),
        *("--bundle", bundle.in_pod(), "--pid-file", bundle.in_pod(PID_FILE), bundle.container_id),
        in_pod=True,
    )
    try:
        create = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # The shim is single-threaded, so preexec_fn is safe; it is how the child enters the sandbox.
            preexec_fn=lambda: _enter(spec, namespaces, hierarchies, rootfs, error_write),  # noqa: PLW1509
            start_new_session=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        os.close(error_write)
        raise StartError(os.read(error_read, 4096).decode(errors="replace") or str(exc)) from exc
    finally:
        for fd, _ in namespaces:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.close(error_write)
        os.close(error_read)
    assert create.stdout is not None and create.stderr is not None
    if create.wait() != 0:  # the container's process is gone: nothing holds the pipes but this shim
        stderr = create.stderr.read().decode(errors="replace").strip()
        raise StartError(_runc_error(bundle, stderr or f"runc create exited with {create.returncode}"))
    return int(Path(bundle.host(PID_FILE)).read_text()), {"stdout": create.stdout, "stderr": create.stderr}


def _start(bundle: Bundle) -> None:
    started = subprocess.run(bundle.runc("start", bundle.container_id), capture_output=True, check=False)
    if started.returncode != 0:
        raise StartError(started.stderr.decode(errors="replace").strip() or "runc start failed")


def _delete(bundle: Bundle) -> None:
    """runc forgets the container: its state and its cgroups (it has ended: nothing is left to kill)."""
    subprocess.run(bundle.runc("delete", "--force", bundle.container_id), capture_output=True, check=False)
    shutil.rmtree(bundle.host(), ignore_errors=True)


def run(spec: ContainerSpec) -> dict[str, object]:
    """Create and start the container, wait for it, and describe how it ended."""
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    create_termination_log(spec.termination_log)
    cgroups.create(spec.cgroup, cgroups.Limits(spec.memory_bytes, spec.cpu_millicores))
    writer = LogWriter(Path(spec.log_file))
    bundle = Bundle(spec.runtime_dir, spec.container_id)
    started_at = timestamp()
    try:
        _write_config(spec, bundle)
        pid, streams = _create(spec, bundle)
        # The process is the shim's child now and cannot be reaped unseen: its start time is its own.
        state = {"pid": pid, "start_ticks": linux.start_ticks(pid), "shimPid": os.getpid()}
        write_if_changed(Path(spec.state_file), json.dumps({**state, "startedAt": started_at}))
        _start(bundle)
    except (OSError, ValueError, StartError) as exc:
        writer.feed("stderr", f"failed to start container {spec.name!r}: {exc}\n".encode())
        writer.close()
        cgroups.kill_all(spec.cgroup)
        _delete(bundle)
        return {
            "exitCode": EXIT_START_ERROR,
            "reason": "StartError",
            "message": str(exc),
            "startedAt": started_at,
            "finishedAt": timestamp(),
        }
    status = _pump(pid, streams, writer, spec.cgroup)
    _reap_orphans()
    writer.close()
    outcome = _outcome(status, spec.cgroup, started_at)  # before runc deletes the cgroup and its OOM count
    _delete(bundle)
    return outcome


def _outcome(status: int, cgroup: str, started_at: str) -> dict[str, object]:
    signal_number = -status if status < 0 else 0
    exit_code = 128 + signal_number if signal_number else status
    reason = "OOMKilled" if cgroups.oom_killed(cgroup) else "Completed" if exit_code == 0 else "Error"
    result: dict[str, object] = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": started_at,
        "finishedAt": timestamp(),
    }
    if signal_number:
        result["signal"] = signal_number
    return result


def main(spec_path: str) -> None:
    spec = ContainerSpec.from_json(Path(spec_path).read_text())
    # The node agent stops a container by signalling the container itself; the shim must outlive it.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        outcome = run(spec)
    except Exception as exc:
        outcome = {
            "exitCode": EXIT_START_ERROR,
            "reason": "StartError",
            "message": f"shim: {exc}",
            "startedAt": timestamp(),
            "finishedAt": timestamp(),
        }
    write_if_changed(Path(spec.exit_file), json.dumps(with_termination_message(spec, outcome)))
    with contextlib.suppress(OSError):
        cgroups.kill_all(spec.cgroup)
        time.sleep(0.05)
        cgroups.remove(spec.cgroup)


if __name__ == "__main__":
    main(sys.argv[1])
