"""The container shim's log writer: a stream becomes CRI log lines, and a line longer than MAX_LINE
becomes partial pieces and a final full one, however it arrives."""

from __future__ import annotations

from pathlib import Path

from mlplatform.local.node.logs import read_lines
from mlplatform.local.node.shim import MAX_LINE, LogWriter


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
