"""The container shim: one process per container attempt, the parent of the container's process.

It joins the pod sandbox's network and UTS namespaces and gives the container its own PID namespace
(its main process is PID 1, with a /proc of its own) and its own mount namespace, a child of the pod's,
with its volume mounts (and a read-only root if asked); it applies the container's cgroup limits,
identity and capabilities, writes its output to the log file in the CRI format, and records how it ended
(exit code, signal, OOM kill) in `exit.json`. Because the shim, not the node agent, waits for the
container, an agent restart loses nothing; the container dies with its shim. Standard library only, but
for libseccomp (seccomp.py) when a container asks for the `RuntimeDefault` seccomp profile.

It does in a few system calls what runc would do from an OCI config: a PID namespace is unshared before
the fork, so the forked child is the namespace's PID 1, and the rest happens in that child before exec.

Run as: python -m mlplatform.local.node.shim SPEC_FILE
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlplatform.local.files import write_if_changed
from mlplatform.local.node import cgroups, linux, seccomp
from mlplatform.local.node.logs import format_line, tail_content, timestamp
from mlplatform.local.node.sandbox import HOST_PATHS_IN_POD, VOLUMES_IN_POD

MAX_LINE = 16 * 1024
EXIT_START_ERROR = 128
DRAIN_SECONDS = 2.0
# The kubelet's limits: the termination-log file's last 4 KiB; from the log, its last 80 lines, 2 KiB.
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
# What a read-only root leaves writable besides the container's own mounts, as a runtime mounts them.
WRITABLE_UNDER_READ_ONLY_ROOT = ("/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
MOUNT_OPTION_FLAGS = {
    "nosuid": linux.MS_NOSUID,
    "nodev": linux.MS_NODEV,
    "noexec": linux.MS_NOEXEC,
    "noatime": linux.MS_NOATIME,
    "nodiratime": linux.MS_NODIRATIME,
    "relatime": linux.MS_RELATIME,
    "strictatime": linux.MS_STRICTATIME,
}


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
    kinds = (("net", linux.CLONE_NEWNET), ("uts", linux.CLONE_NEWUTS), ("mnt", linux.CLONE_NEWNS))
    return [(os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY), kind) for name, kind in kinds]


def capability_numbers(names: Iterable[str]) -> list[int]:
    """The capabilities `names` (as a securityContext lists them, CAP_ prefix optional) stand for."""
    wanted = [name.upper().removeprefix("CAP_") for name in names]
    if "ALL" in wanted:
        return list(range(linux.LAST_CAPABILITY + 1))
    unknown = [name for name in wanted if name not in linux.CAPABILITIES]
    if unknown:
        raise ValueError(f"unknown capability {unknown[0]!r} in securityContext.capabilities.drop")
    return [linux.CAPABILITIES.index(name) for name in wanted]


def _drop_capabilities(numbers: list[int]) -> None:
    """Out of the bounding set: what root gets at exec is the bounding set, so root loses them too."""
    for capability in numbers:
        with contextlib.suppress(OSError):  # a number past this kernel's last capability
            linux.prctl(linux.PR_CAPBSET_DROP, capability)


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), text)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def read_only_remounts(mountinfo: str, writable: Iterable[str]) -> list[tuple[str, int]]:
    """The mounts (point, remount flags) that make up a container's root, to remount read-only: every
    writable mount in `mountinfo` (/proc/self/mountinfo) but those at or under a `writable` path, keeping
    each mount's own nosuid/nodev/noexec/atime flags."""
    kept = list(writable)
    remounts = []
    for line in mountinfo.splitlines():
        fields = line.split()
        point, options = _unescape(fields[4]), fields[5].split(",")
        if "ro" in options or any(_under(point, folder) for folder in kept):
            continue
        flags = linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY
        for option in options:
            flags |= MOUNT_OPTION_FLAGS.get(option, 0)
        remounts.append((point, flags))
    return remounts


def _make_root_read_only(mounts: list[Mount]) -> None:
    writable = [*WRITABLE_UNDER_READ_ONLY_ROOT, *(m.target for m in mounts)]
    for point, flags in read_only_remounts(Path("/proc/self/mountinfo").read_text(), writable):
        linux.mount("none", point, None, flags)


def _mount_proc() -> None:
    """A /proc of the container's PID namespace in place of the pod's, in the container's mounts only."""
    linux.umount("/proc")
    linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)


def _take_identity(identity: Identity, dropped: list[int]) -> None:
    _drop_capabilities(dropped)
    if identity.gid is not None or identity.uid is not None:
        os.setgroups(identity.groups)
    if identity.gid is not None:
        os.setgid(identity.gid)
    if identity.uid is not None:
        os.setuid(identity.uid)
    if identity.no_new_privs:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)


def _enter(
    spec: ContainerSpec,
    namespaces: list[tuple[int, int]],
    dropped: list[int],
    syscall_filter: seccomp.SyscallFilter | None,
    error_fd: int,
) -> None:
    """Runs in the forked child, PID 1 of its namespace, before exec: signals, cgroup, namespaces, mounts,
    working dir, identity, seccomp filter."""
    try:
        _default_signals()
        cgroups.join(spec.cgroup)
        for fd, kind in namespaces:
            linux.setns(fd, kind)
        linux.unshare(linux.CLONE_NEWNS)  # the container's own mounts, on top of the pod's root
        linux.make_private("/")
        _mount_proc()
        for mount in spec.mounts:
            _mount(mount)
        for hidden in (VOLUMES_IN_POD, HOST_PATHS_IN_POD):  # a container sees only the volumes it mounts
            with contextlib.suppress(OSError):
                linux.umount(hidden)
        os.makedirs(spec.working_dir, exist_ok=True)
        if spec.read_only_root:
            _make_root_read_only(spec.mounts)
        os.chdir(spec.working_dir)
        # As runc: without no_new_privs, loading a filter takes CAP_SYS_ADMIN, which a change of user takes
        # away, so it is loaded before; with no_new_privs, last, so the fewest syscalls run under it.
        if syscall_filter is not None and not spec.identity.no_new_privs:
            syscall_filter.load()
        _take_identity(spec.identity, dropped)
        # Last, as a change of credentials clears it: the container dies with its shim, never outlives it.
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        if syscall_filter is not None and spec.identity.no_new_privs:
            syscall_filter.load()
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


def _mount(mount: Mount) -> None:
    source_is_dir = os.path.isdir(mount.source)
    if source_is_dir:
        os.makedirs(mount.target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(mount.target), exist_ok=True)
        if not os.path.lexists(mount.target):
            with open(mount.target, "a"):
                pass
    linux.bind(mount.source, mount.target, readonly=mount.readonly, recursive=True)


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


def _pump(child: subprocess.Popen[bytes], writer: LogWriter, cgroup: str) -> int:
    """Copy the child's output to the log until it exits and its pipes drain; return its wait status."""
    assert child.stdout is not None and child.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(child.stdout, selectors.EVENT_READ, "stdout")
    selector.register(child.stderr, selectors.EVENT_READ, "stderr")
    pidfd = os.pidfd_open(child.pid)
    selector.register(pidfd, selectors.EVENT_READ, "exit")
    drain_until: float | None = None
    while selector.get_map():
        timeout = None if drain_until is None else drain_until - time.monotonic()
        if timeout is not None and timeout <= 0:
            break
        for key, _ in selector.select(timeout):
            if key.data == "exit":
                selector.unregister(pidfd)
                os.close(pidfd)
                child.wait()
                cgroups.kill_all(cgroup)  # like a runtime: when the main process ends, the container ends
                drain_until = time.monotonic() + DRAIN_SECONDS
                continue
            data = os.read(key.fd, 65536)
            if data:
                writer.feed(key.data, data)
            else:
                selector.unregister(key.fileobj)
    return child.wait()


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


def run(spec: ContainerSpec) -> dict[str, object]:
    """Start the container, wait for it, and describe how it ended."""
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    create_termination_log(spec.termination_log)
    cgroups.create(spec.cgroup, cgroups.Limits(spec.memory_bytes, spec.cpu_millicores))
    writer = LogWriter(Path(spec.log_file))
    error_read, error_write = os.pipe()
    namespaces = _namespace_fds(spec.sandbox_pid)
    started_at = timestamp()
    try:
        dropped = capability_numbers(spec.identity.drop_capabilities)
        syscall_filter = seccomp.filter_for(spec.seccomp)  # built here: the child only loads it
        linux.unshare(linux.CLONE_NEWPID)  # the shim stays outside; the child it forks next is PID 1
        child = subprocess.Popen(
            spec.argv,
            env=spec.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # The shim is single-threaded, so preexec_fn is safe; it is how a child enters the namespaces.
            preexec_fn=lambda: _enter(spec, namespaces, dropped, syscall_filter, error_write),  # noqa: PLW1509
            start_new_session=True,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        os.close(error_write)
        detail = os.read(error_read, 4096).decode(errors="replace") or str(exc)
        writer.feed("stderr", f"failed to start container {spec.name!r}: {detail}\n".encode())
        writer.close()
        return {
            "exitCode": EXIT_START_ERROR,
            "reason": "StartError",
            "message": detail,
            "startedAt": started_at,
            "finishedAt": timestamp(),
        }
    finally:
        for fd, _ in namespaces:
            os.close(fd)
    os.close(error_write)
    # The child cannot be reaped before the shim waits for it, so its start time is surely its own.
    state = {"pid": child.pid, "start_ticks": linux.start_ticks(child.pid), "shimPid": os.getpid()}
    write_if_changed(Path(spec.state_file), json.dumps({**state, "startedAt": started_at}))
    status = _pump(child, writer, spec.cgroup)
    _reap_orphans()
    writer.close()
    return _outcome(status, spec.cgroup, started_at)


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
