"""Container logs in the CRI format: lines written, parsed back and selected as `kubectl logs` asks
(--tail, --since, partial lines), and the shim's writer splitting long lines into partial pieces."""

from __future__ import annotations

import datetime
from pathlib import Path

from mlplatform.local.node.logs import format_line, parse_line, parse_time, read_lines, select, timestamp
from mlplatform.local.node.shim import MAX_LINE, LogWriter

MOMENT = datetime.datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=datetime.UTC)


def test_format_line_is_cri_with_nanosecond_time() -> None:
    assert format_line("stdout", b"hello world", when=MOMENT) == (
        b"2026-03-01T12:30:45.123456000Z stdout F hello world\n"
    )
    assert format_line("stderr", b"part", partial=True, when=MOMENT).split(b" ")[1:3] == [b"stderr", b"P"]
    assert timestamp(MOMENT) == "2026-03-01T12:30:45.123456000Z"


def test_parse_line_reads_back_what_format_line_wrote() -> None:
    line = parse_line(format_line("stderr", b"a  b  c ", when=MOMENT))
    assert line is not None
    assert (line.time, line.stream, line.partial, line.content) == (
        "2026-03-01T12:30:45.123456000Z",
        "stderr",
        False,
        b"a  b  c ",
    )
    empty = parse_line(format_line("stdout", b"", when=MOMENT))
    assert empty is not None and empty.content == b""
    assert parse_line(b"garbage\n") is None
    assert parse_time(line.time) == MOMENT
    assert parse_time("2026-03-01T12:30:45Z") == MOMENT.replace(microsecond=0)


def test_render_joins_partial_lines_and_adds_timestamps_on_request() -> None:
    pieces = [
        parse_line(format_line("stdout", b"first half ", partial=True, when=MOMENT)),
        parse_line(format_line("stdout", b"second half", when=MOMENT)),
    ]
    assert b"".join(p.render(False) for p in pieces if p) == b"first half second half\n"
    full = pieces[1]
    assert full is not None
    assert full.render(True) == b"2026-03-01T12:30:45.123456000Z second half\n"


def test_select_tail_and_since(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    with log.open("wb") as handle:
        for second in range(5):
            handle.write(format_line("stdout", f"line {second}".encode(), when=MOMENT.replace(second=second)))
    lines = list(read_lines(log))
    assert [line.content for line in lines] == [f"line {n}".encode() for n in range(5)]
    assert [line.content for line in select(lines, 2, None)] == [b"line 3", b"line 4"]
    assert select(lines, 0, None) == []
    assert select(lines, 10, None) == lines
    since = MOMENT.replace(second=3, microsecond=0)
    assert [line.content for line in select(lines, None, since)] == [b"line 3", b"line 4"]
    assert [line.content for line in select(lines, 1, MOMENT.replace(second=1))] == [b"line 4"]
    assert list(read_lines(tmp_path / "missing.log")) == []


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
