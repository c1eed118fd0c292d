"""The container shim's log writer: a stream becomes CRI log lines, and a line longer than MAX_LINE
becomes partial pieces and a final full one, however it arrives; the termination message it records as
the kubelet computes it; which mounts a read-only root makes read-only; where runc finds the cgroups."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mlplatform.local.node.logs import format_line, read_lines
from mlplatform.local.node.shim import (
    MAX_LINE,
    MAX_TERMINATION_MESSAGE,
    WRITABLE_UNDER_READ_ONLY_ROOT,
    CgroupMount,
    ContainerSpec,
    Identity,
    LogWriter,
    cgroup_mounts,
    create_termination_log,
    read_only_paths,
    termination_message,
    with_termination_message,
)


def writer_output(tmp_path: Path, chunks: list[tuple[str, bytes]]) -> list[tuple[str, bool, bytes]]:
    out = tmp_path / "logs" / "main" / "0.log"
    writer = LogWriter(out)
    for stream, data in chunks:
        writer.feed(stream, data)
    writer.close()
    return [(line.stream, line.partial, line.content) for line in read_lines(out)]


def test_log_writer_splits_streams_into_lines_and_flushes_the_rest_on_close(tmp_path: Path) -> None:
    lines = writer_output(
        tmp_path,
        [("stdout", b"one\ntw"), ("stderr", b"err\n"), ("stdout", b"o\nthree"), ("stderr", b"tail")],
    )
    assert lines == [
        ("stdout", False, b"one"),
        ("stderr", False, b"err"),
        ("stdout", False, b"two"),
        ("stdout", False, b"three"),
        ("stderr", False, b"tail"),
    ]


def test_log_writer_splits_a_long_line_into_partial_pieces(tmp_path: Path) -> None:
    """A line longer than MAX_LINE becomes partial pieces and a final full one, however it arrives."""
    long = bytes(ord("a") + n % 26 for n in range(2 * MAX_LINE + 100))
    expected = [
        ("stdout", True, long[:MAX_LINE]),
        ("stdout", True, long[MAX_LINE : 2 * MAX_LINE]),
        ("stdout", False, long[2 * MAX_LINE :]),
        ("stdout", False, b"next"),
    ]
    assert writer_output(tmp_path / "one-chunk", [("stdout", long + b"\nnext\n")]) == expected
    in_pieces = [("stdout", long[i : i + 5000]) for i in range(0, len(long), 5000)]
    assert writer_output(tmp_path / "many-chunks", [*in_pieces, ("stdout", b"\nnext\n")]) == expected
    rejoined = b"".join(c for _, partial, c in expected[:3])
    assert rejoined == long


def test_log_writer_keeps_a_line_of_exactly_max_line_whole(tmp_path: Path) -> None:
    exact = b"x" * MAX_LINE
    assert writer_output(tmp_path, [("stdout", exact + b"\n")]) == [("stdout", False, exact)]


def spec_with(tmp_path: Path, termination_log: str = "", fallback: bool = False) -> ContainerSpec:
    return ContainerSpec(
        name="main",
        argv=["true"],
        env={},
        working_dir="/",
        sandbox_pid=1,
        mounts=[],
        identity=Identity(),
        cgroup="mlplatform/test",
        container_id="test-main-0",
        runtime_dir=str(tmp_path / "runtime"),
        memory_bytes=None,
        cpu_millicores=None,
        log_file=str(tmp_path / "0.log"),
        state_file=str(tmp_path / "state.json"),
        exit_file=str(tmp_path / "exit.json"),
        termination_log=termination_log,
        fallback_to_logs=fallback,
    )


def failed(code: int = 1, reason: str = "Error", message: str | None = None) -> dict[str, object]:
    outcome: dict[str, object] = {"exitCode": code, "reason": reason}
    return {**outcome, "message": message} if message else outcome


def test_a_termination_log_is_created_empty_and_writable_by_anyone(tmp_path: Path) -> None:
    path = tmp_path / "volumes" / ".termination-logs" / "main" / "0"
    old = os.umask(0o077)
    try:
        create_termination_log(str(path))
    finally:
        os.umask(old)
    assert path.read_bytes() == b""
    assert stat.S_IMODE(path.stat().st_mode) == 0o666
    create_termination_log("")  # no terminationMessagePath: nothing to create


def test_the_termination_message_is_the_last_4096_bytes_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    path.write_bytes(b"a" * 5000 + b"END")
    message = termination_message(spec_with(tmp_path, str(path)), failed())
    assert len(message) == MAX_TERMINATION_MESSAGE and message.endswith("aEND")
    assert termination_message(spec_with(tmp_path, str(tmp_path / "missing")), failed()) == ""


def test_fallback_to_logs_only_when_the_file_is_empty_and_the_container_failed(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    path.write_bytes(b"")
    with (tmp_path / "0.log").open("wb") as handle:
        handle.write(format_line("stderr", b"Traceback: boom"))
    fallback = spec_with(tmp_path, str(path), fallback=True)
    assert termination_message(fallback, failed()) == "Traceback: boom\n"
    assert termination_message(fallback, {"exitCode": 0, "reason": "Completed"}) == ""
    assert termination_message(fallback, failed(128, "StartError")) == ""  # it never ran: no log of its own
    assert termination_message(spec_with(tmp_path, str(path)), failed()) == ""  # policy File
    path.write_bytes(b"from the file")
    assert termination_message(fallback, failed()) == "from the file"


def test_the_termination_message_follows_the_runtimes_own_message(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    path.write_bytes(b"why")
    spec = spec_with(tmp_path, str(path))
    assert with_termination_message(spec, failed())["message"] == "why"
    assert with_termination_message(spec, failed(message="oom"))["message"] == "oom: why"
    path.write_bytes(b"")
    assert "message" not in with_termination_message(spec, failed())


# The pod's root as the sandbox's /proc/<pid>/mountinfo lists it: the root, its overlays, /tmp and /etc
# files, /proc, /sys and /dev, a volume at /data with a mount under it, and a read-only code mount.
MOUNTINFO = """\
1 0 0:30 / / rw,relatime - tmpfs tmpfs rw,mode=755
2 1 0:31 / /usr rw,relatime - overlay overlay rw,lowerdir=/usr
3 1 0:32 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
4 1 0:33 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
5 1 0:34 / /dev rw,nosuid - tmpfs tmpfs rw
6 5 0:35 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw
7 1 8:1 /pod/tmp /tmp rw,relatime - ext4 /dev/sda1 rw
8 1 8:1 /pod/etc/hosts /etc/hosts rw,relatime - ext4 /dev/sda1 rw
9 1 8:1 /pod/volumes/data /data rw,relatime - ext4 /dev/sda1 rw
10 9 0:36 / /data/cache rw - tmpfs tmpfs rw
11 1 8:1 /src /app ro,relatime - ext4 /dev/sda1 rw
12 1 8:1 /pod/x /my\\040dir rw,nosuid,noexec - ext4 /dev/sda1 rw
13 1 8:1 /pod/y /database rw,noatime - ext4 /dev/sda1 rw
"""


def test_a_read_only_root_makes_the_overlays_read_only_but_not_volumes_or_the_runtimes_mounts() -> None:
    assert read_only_paths(MOUNTINFO, [*WRITABLE_UNDER_READ_ONLY_ROOT, "/data"]) == [
        "/usr",
        "/tmp",  # as under a runtime: /tmp is the root's unless a volume is mounted there
        "/my dir",
        "/database",  # not under /data: a path, not a string prefix
    ]  # not "/" itself: runc makes the root read-only


def test_a_volume_mounted_at_tmp_keeps_tmp_writable() -> None:
    assert "/tmp" not in read_only_paths(MOUNTINFO, [*WRITABLE_UNDER_READ_ONLY_ROOT, "/data", "/tmp"])


HOST_MOUNTINFO = """\
25 1 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""


def test_runc_finds_the_hosts_cgroup_hierarchies_with_their_own_options() -> None:
    assert cgroup_mounts(HOST_MOUNTINFO) == [
        CgroupMount("/sys/fs/cgroup/cpu", "cgroup", "cpu"),
        CgroupMount("/sys/fs/cgroup/memory", "cgroup", "memory"),
        CgroupMount("/sys/fs/cgroup/systemd", "cgroup", "xattr,name=systemd"),
        CgroupMount("/sys/fs/cgroup/unified", "cgroup2", "nsdelegate"),
    ]
