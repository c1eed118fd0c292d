"""The node's pressure conditions: computed from the machine's figures by the kubelet's default eviction
thresholds, in the kubelet's words, keeping their transition times while unchanged."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mlplatform.local.node.agent import MachineFigures, machine_figures, node_conditions, pressures

GIB = 1024**3
HEALTHY = MachineFigures(
    memory_available=4 * GIB,
    disk_available=50 * GIB,
    disk_total=100 * GIB,
    inodes_free=900_000,
    inodes_total=1_000_000,
    pids_in_use=500,
    pids_max=4_194_304,
)
NO_PRESSURE = {"MemoryPressure": False, "DiskPressure": False, "PIDPressure": False}


def test_a_machine_with_room_is_under_no_pressure() -> None:
    assert pressures(HEALTHY) == NO_PRESSURE


def test_memory_pressure_below_100_mebibytes_available() -> None:
    assert pressures(dataclasses.replace(HEALTHY, memory_available=101 * 1024**2))["MemoryPressure"] is False
    assert pressures(dataclasses.replace(HEALTHY, memory_available=99 * 1024**2))["MemoryPressure"] is True


def test_disk_pressure_below_10_percent_space_or_5_percent_inodes_free() -> None:
    assert pressures(dataclasses.replace(HEALTHY, disk_available=11 * GIB))["DiskPressure"] is False
    assert pressures(dataclasses.replace(HEALTHY, disk_available=9 * GIB))["DiskPressure"] is True
    assert pressures(dataclasses.replace(HEALTHY, inodes_free=49_000))["DiskPressure"] is True
    # A filesystem without a fixed inode count reports none: that is no pressure.
    assert pressures(dataclasses.replace(HEALTHY, inodes_free=0, inodes_total=0))["DiskPressure"] is False


def test_pid_pressure_when_under_5_percent_of_the_pids_are_left() -> None:
    assert pressures(dataclasses.replace(HEALTHY, pids_in_use=900, pids_max=1000))["PIDPressure"] is False
    assert pressures(dataclasses.replace(HEALTHY, pids_in_use=960, pids_max=1000))["PIDPressure"] is True


def test_conditions_use_the_kubelet_reasons_and_messages() -> None:
    conditions = {c["type"]: c for c in node_conditions(NO_PRESSURE, [], "2030-01-01T00:00:00Z")}
    assert {kind: (c["status"], c["reason"]) for kind, c in conditions.items()} == {
        "MemoryPressure": ("False", "KubeletHasSufficientMemory"),
        "DiskPressure": ("False", "KubeletHasNoDiskPressure"),
        "PIDPressure": ("False", "KubeletHasSufficientPID"),
        "Ready": ("True", "KubeletReady"),
    }
    assert conditions["MemoryPressure"]["message"] == "kubelet has sufficient memory available"
    pressed = {c["type"]: c for c in node_conditions(dict.fromkeys(NO_PRESSURE, True), [], "t")}
    assert [pressed[k]["reason"] for k in NO_PRESSURE] == [
        "KubeletHasInsufficientMemory",
        "KubeletHasDiskPressure",
        "KubeletHasInsufficientPID",
    ]
    assert pressed["DiskPressure"]["message"] == "kubelet has disk pressure"


def test_a_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    first = node_conditions(NO_PRESSURE, [], "2030-01-01T00:00:00Z")
    again = {c["type"]: c for c in node_conditions(NO_PRESSURE, first, "2030-01-01T00:01:00Z")}
    assert again["DiskPressure"]["lastTransitionTime"] == "2030-01-01T00:00:00Z"
    assert again["DiskPressure"]["lastHeartbeatTime"] == "2030-01-01T00:01:00Z"
    full = {**NO_PRESSURE, "DiskPressure": True}
    changed = {c["type"]: c for c in node_conditions(full, list(again.values()), "2030-01-01T00:02:00Z")}
    assert changed["DiskPressure"]["lastTransitionTime"] == "2030-01-01T00:02:00Z"
    assert changed["MemoryPressure"]["lastTransitionTime"] == "2030-01-01T00:00:00Z"


def test_the_figures_are_read_from_this_machine(tmp_path: Path) -> None:
    figures = machine_figures(tmp_path)
    assert figures.memory_available > 0
    assert 0 < figures.disk_available <= figures.disk_total
    assert 0 < figures.pids_in_use < figures.pids_max
