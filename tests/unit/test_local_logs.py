"""Container logs in the CRI format: lines written, parsed back and selected as `kubectl logs` asks
(--tail, --since, partial lines)."""

from __future__ import annotations

import datetime
from pathlib import Path

from mlplatform.local.node.logs import (
    format_line,
    parse_line,
    parse_time,
    read_lines,
    select,
    tail_content,
    timestamp,
)

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


def test_tail_content_is_the_output_of_the_last_lines_within_a_byte_limit(tmp_path: Path) -> None:
    """What FallbackToLogsOnError keeps (the kubelet: 80 lines, 2048 bytes); partial lines rejoin."""
    log = tmp_path / "0.log"
    with log.open("wb") as handle:
        for n in range(100):
            handle.write(format_line("stderr" if n % 2 else "stdout", f"line {n}".encode()))
        handle.write(format_line("stdout", b"half ", partial=True))
        handle.write(format_line("stdout", b"and half"))
    expected = "".join(f"line {n}\n" for n in range(22, 100)) + "half and half\n"
    assert tail_content(log, 80, 2048) == expected.encode()
    assert tail_content(log, 80, 9) == b"and half\n"
    assert tail_content(log, 0, 2048) == b""
    assert tail_content(tmp_path / "missing.log", 80, 2048) == b""


def test_tail_content_reads_only_the_end_of_a_big_log(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    with log.open("wb") as handle:
        for n in range(3000):
            handle.write(format_line("stdout", f"{n:05d}".encode() * 200))
    assert tail_content(log, 2, 1 << 20) == b"".join(f"{n:05d}".encode() * 200 + b"\n" for n in (2998, 2999))
