"""The container shim's log writer: a stream becomes CRI log lines, and a line longer than MAX_LINE
becomes partial pieces and a final full one, however it arrives; the termination message it records as
the kubelet computes it; which mounts a read-only root remounts; the capabilities a drop list names."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mlplatform.local.node import linux
from mlplatform.local.node.logs import format_line, read_lines
from mlplatform.local.node.shim import (
    MAX_LINE,
    MAX_TERMINATION_MESSAGE,
    WRITABLE_UNDER_READ_ONLY_ROOT,
    ContainerSpec,
    Identity,
    LogWriter,
    capability_numbers,
    create_termination_log,
    read_only_remounts,
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


# A container's mounts as /proc/self/mountinfo lists them: the pod's root, its overlays, /tmp and /etc files,
# the runtime's /proc, /sys and /dev, a volume at /data with a mount under it, and a read-only code mount.
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
READ_ONLY = linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY


def test_a_read_only_root_remounts_the_root_and_overlays_but_not_volumes_or_the_runtimes_mounts() -> None:
    remounts = read_only_remounts(MOUNTINFO, [*WRITABLE_UNDER_READ_ONLY_ROOT, "/data"])
    assert remounts == [
        ("/", READ_ONLY | linux.MS_RELATIME),
        ("/usr", READ_ONLY | linux.MS_RELATIME),
        ("/tmp", READ_ONLY | linux.MS_RELATIME),  # as under a runtime: /tmp is the root's unless a volume
        ("/my dir", READ_ONLY | linux.MS_NOSUID | linux.MS_NOEXEC),  # its own flags kept
        ("/database", READ_ONLY | linux.MS_NOATIME),  # not under /data: a path, not a string prefix
    ]


def test_a_volume_mounted_at_tmp_keeps_tmp_writable() -> None:
    remounts = read_only_remounts(MOUNTINFO, [*WRITABLE_UNDER_READ_ONLY_ROOT, "/data", "/tmp"])
    assert "/tmp" not in [point for point, _ in remounts]


def test_capabilities_are_named_as_a_security_context_names_them() -> None:
    assert capability_numbers([]) == []
    assert capability_numbers(["CHOWN", "net_raw", "CAP_SYS_ADMIN"]) == [0, 13, 21]
    assert capability_numbers(["NET_RAW", "ALL"]) == list(range(linux.LAST_CAPABILITY + 1))
    with pytest.raises(ValueError, match="unknown capability 'NOPE'"):
        capability_numbers(["CHOWN", "NOPE"])
