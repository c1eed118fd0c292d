"""The node survives its own crash, and `mlplatform local down` leaves nothing of ours behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import psutil
import pytest
from kubernetes import client

from kube import apply, container_state, eventually, is_ready, pod, processes_with, python_pod
from mlplatform.local import cluster
from mlplatform.local.config import LocalConfig, StateLayout
from mlplatform.local.processes import ProcessTable

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_node")]


SERVER = (
    "import http.server; http.server.ThreadingHTTPServer(('', 8080), http.server.SimpleHTTPRequestHandler)"
    ".serve_forever()"
)


def server_pod(name: str, marker: str) -> dict[str, object]:
    """A small HTTP server whose command line carries `marker`, to find its process."""
    probe = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    return python_pod(
        name,
        SERVER,
        marker,
        container={"ports": [{"containerPort": 8080}], "readinessProbe": probe},
        restartPolicy="Always",
    )


def with_marker(marker: str) -> list[int]:
    return [p.pid for p in processes_with(marker)]


def kill_agent(config: LocalConfig) -> None:
    table = ProcessTable(StateLayout(config.state_dir).run, StateLayout(config.state_dir).logs)
    agent = table.alive("node-agent")
    assert agent is not None
    agent.send_signal(signal.SIGKILL)
    agent.wait(10)


def test_agent_crash_loses_no_pod_and_duplicates_none(
    local_cluster: LocalConfig,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
) -> None:
    core = client.CoreV1Api(api_client)
    marker, brief_marker = f"marker-{uuid.uuid4().hex}", f"marker-{uuid.uuid4().hex}"
    apply(kubectl_bin, kubeconfig, namespace, python_pod("brief", "import time; time.sleep(8)", brief_marker))
    eventually(lambda: pod(core, namespace, "brief").status.phase == "Running", what="brief running")
    apply(kubectl_bin, kubeconfig, namespace, server_pod("steady", marker))
    steady = eventually(
        lambda: (p := pod(core, namespace, "steady")) and is_ready(p) and p, what="steady Ready"
    )
    [pid] = with_marker(marker)

    kill_agent(local_cluster)
    # Created while the node agent is down:
    apply(kubectl_bin, kubeconfig, namespace, python_pod("latecomer", "print('late')"))
    # "brief" ends while no agent watches it: its shim alone records the exit.
    eventually(lambda: not with_marker(brief_marker), timeout=20, what="brief's process exits")
    assert pod(core, namespace, "brief").status.phase == "Running"  # nobody reported it yet
    cluster.up(local_cluster)

    eventually(
        lambda: pod(core, namespace, "brief").status.phase == "Succeeded", what="brief's exit reported"
    )
    assert container_state(pod(core, namespace, "brief")).terminated.exit_code == 0
    eventually(lambda: pod(core, namespace, "latecomer").status.phase == "Succeeded", what="latecomer ran")
    after = pod(core, namespace, "steady")
    assert is_ready(after)
    assert after.status.container_statuses[0].restart_count == 0
    assert after.status.pod_ip == steady.status.pod_ip
    assert with_marker(marker) == [pid]  # the same process, not a second one


def network_namespace(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:  # gone, or not ours to look at
        return None


def ours(config: LocalConfig) -> list[str]:
    """Processes of this local cluster: every daemon, agent, shim and sandbox names its state directory;
    every container process sits in the node's cgroups."""
    found = []
    state = str(config.state_dir)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        cgroup = Path(f"/proc/{proc.info['pid']}/cgroup")
        in_cgroup = cgroup.exists() and "/mlplatform/" in cgroup.read_text()
        if state in cmdline or in_cgroup:
            found.append(f"{proc.info['pid']} {cmdline[:120]}")
    return found


def test_down_leaves_no_process_namespace_bridge_or_rule_and_up_restores(
    local_cluster: LocalConfig,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
) -> None:
    core = client.CoreV1Api(api_client)
    marker = f"marker-{uuid.uuid4().hex}"
    apply(kubectl_bin, kubeconfig, namespace, server_pod("survivor", marker))
    eventually(lambda: (p := pod(core, namespace, "survivor")) and is_ready(p), what="pod Ready")
    saved = json.loads((StateLayout(local_cluster.state_dir).run / "sysctl.json").read_text())
    namespaces_before = {network_namespace(p) for p in with_marker(marker)}
    assert namespaces_before and network_namespace(os.getpid()) not in namespaces_before

    cluster.down(local_cluster, keep_state=True)
    try:
        assert ours(local_cluster) == []
        assert with_marker(marker) == []
        live_namespaces = {network_namespace(p.pid) for p in psutil.process_iter()}
        assert not namespaces_before & (live_namespaces - {None})
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert local_cluster.network.bridge not in links and " mlp" not in links
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
        assert [line for line in rules.splitlines() if "KUBE-" in line or "MLPLATFORM" in line] == []
        assert not list(Path("/sys/fs/cgroup").glob("*/mlplatform"))
        for key, value in saved.items():
            assert Path("/proc/sys", key).read_text().strip() == value
    finally:
        cluster.up(local_cluster)
    eventually(lambda: client.CoreV1Api(api_client).read_node(local_cluster.node_name), what="node back")
