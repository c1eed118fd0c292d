"""The node's conditions come from the machine's figures, in the kubelet's words, and its heartbeat
keeps them current."""

from __future__ import annotations

import pytest
from kubernetes import client

from kube import eventually
from mlplatform.local.config import LocalConfig
from mlplatform.local.node.agent import LEASE_RENEW_SECONDS, STATUS_SECONDS, machine_figures, pressures

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_node")]
REASONS = {
    ("MemoryPressure", False): "KubeletHasSufficientMemory",
    ("MemoryPressure", True): "KubeletHasInsufficientMemory",
    ("DiskPressure", False): "KubeletHasNoDiskPressure",
    ("DiskPressure", True): "KubeletHasDiskPressure",
    ("PIDPressure", False): "KubeletHasSufficientPID",
    ("PIDPressure", True): "KubeletHasInsufficientPID",
}


def conditions(core: client.CoreV1Api, node: str) -> dict[str, client.V1NodeCondition]:
    return {c.type: c for c in core.read_node(node).status.conditions}


def test_pressure_conditions_match_the_machine_and_the_heartbeat_refreshes_them(
    api_client: client.ApiClient, local_cluster: LocalConfig
) -> None:
    core = client.CoreV1Api(api_client)
    before = conditions(core, local_cluster.node_name)
    expected = pressures(machine_figures(local_cluster.state_dir))  # far from a threshold on a test machine
    for kind, pressure in expected.items():
        assert (before[kind].status, before[kind].reason) == (str(pressure), REASONS[(kind, pressure)])
    assert before["MemoryPressure"].message == "kubelet has sufficient memory available"
    assert (before["Ready"].status, before["Ready"].reason) == ("True", "KubeletReady")

    def refreshed() -> dict[str, client.V1NodeCondition] | None:
        now = conditions(core, local_cluster.node_name)
        moved = all(now[k].last_heartbeat_time > before[k].last_heartbeat_time for k in now)
        return now if moved else None

    after = eventually(
        refreshed, timeout=STATUS_SECONDS + 3 * LEASE_RENEW_SECONDS, interval=2, what="a heartbeat"
    )
    for kind, condition in after.items():
        assert condition.last_transition_time == before[kind].last_transition_time  # nothing changed
