"""Processes of the local platform are found and stopped by PID, including what a crashed one left."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from mlplatform.local.processes import ProcessSpec, ProcessTable


def test_stop_kills_the_children_a_dead_leader_left_in_its_group(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path / "run", tmp_path / "logs")
    # The leader starts a long child in its own process group, then dies: the child is an orphan.
    record = table.start(
        ProcessSpec("leaver", ["sh", "-c", "sleep 300 & echo $! > child.pid; exit 0"], cwd=tmp_path)
    )
    deadline = time.monotonic() + 10
    while record.process() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int((tmp_path / "child.pid").read_text())
    assert record.process() is None
    assert [p.pid for p in record.orphans()] == [child]

    table.stop("leaver")
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    assert table.record("leaver") is None


def test_a_live_process_has_no_orphans_and_a_recycled_record_is_not_alive(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path / "run", tmp_path / "logs")
    record = table.start(ProcessSpec("sleeper", ["sleep", "300"]))
    try:
        assert record.process() is not None
        assert record.orphans() == []
        stale = type(record)(record.name, record.pid, record.start_ticks - 100)  # same PID, other process
        assert stale.process() is None
    finally:
        table.stop("sleeper")
    assert record.process() is None
