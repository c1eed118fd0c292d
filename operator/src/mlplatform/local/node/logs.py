"""Container logs in the CRI format the kubelet uses: `<RFC3339Nano time> <stream> <P|F> <content>`.

Standard library only: the shim writes these lines and the node's log endpoint reads them.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FULL = "F"
PARTIAL = "P"
MAX_RAW_LINE = 16 * 1024 + 64  # the longest line the shim writes: a 16 KiB piece and its CRI header


def timestamp(when: datetime.datetime | None = None) -> str:
    moment = when or datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def format_line(
    stream: str, content: bytes, partial: bool = False, when: datetime.datetime | None = None
) -> bytes:
    return f"{timestamp(when)} {stream} {PARTIAL if partial else FULL} ".encode() + content + b"\n"


@dataclass(frozen=True)
class LogLine:
    time: str
    stream: str
    partial: bool
    content: bytes

    def render(self, timestamps: bool) -> bytes:
        text = self.content if self.partial else self.content + b"\n"
        return f"{self.time} ".encode() + text if timestamps else text

    def at_or_after(self, since: datetime.datetime) -> bool:
        return parse_time(self.time) >= since


def parse_time(value: str) -> datetime.datetime:
    # Python parses microseconds: drop the nanosecond digits the format carries.
    base, _, rest = value.rstrip("Z").partition(".")
    return datetime.datetime.fromisoformat(f"{base}.{rest[:6].ljust(6, '0')}+00:00")


def parse_line(raw: bytes) -> LogLine | None:
    parts = raw.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    content = parts[3] if len(parts) == 4 else b""
    return LogLine(parts[0].decode(), parts[1].decode(), parts[2] == PARTIAL.encode(), content)


def read_lines(path: Path) -> Iterator[LogLine]:
    if not path.exists():
        return
    with path.open("rb") as handle:
        for raw in handle:
            if line := parse_line(raw):
                yield line


def select(lines: list[LogLine], tail: int | None, since: datetime.datetime | None) -> list[LogLine]:
    """Lines after `since`, the last `tail` of them (as `kubectl logs --since/--tail`)."""
    chosen = [line for line in lines if since is None or line.at_or_after(since)]
    if tail is not None:
        chosen = chosen[-tail:] if tail > 0 else []
    return chosen


def tail_content(path: Path, lines: int, limit: int) -> bytes:
    """The output of the last `lines` log lines, at most its last `limit` bytes: what the kubelet keeps
    of a container's log as its termination message (FallbackToLogsOnError). Reads only the file's end."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            start = max(0, size - lines * MAX_RAW_LINE)
            handle.seek(start)
            raw = handle.read().split(b"\n")
    except OSError:
        return b""
    if start > 0:
        raw = raw[1:]  # the first piece may be the end of a line that began before `start`
    parsed = [line for piece in raw if piece and (line := parse_line(piece)) is not None]
    content = b"".join(line.render(timestamps=False) for line in (parsed[-lines:] if lines > 0 else []))
    return content[-limit:] if limit > 0 else b""
