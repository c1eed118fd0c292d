"""The node runtime's pure parts: a pod's /etc/hosts and resolv.conf for every DNS policy, and IP
leases in the node's pod range (lowest free first, stable per pod, a clear error when exhausted). And, as
root, its killing on real processes: a PID recorded for a process that ended and was then reused by an
unrelated one is never signalled, reading a container's state kills nothing, and killing a cgroup kills
its processes and those of the cgroups under it, and nothing else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from mlplatform.local.config import Network
from mlplatform.local.node import cgroups
from mlplatform.local.node.layout import NodeLayout
from mlplatform.local.node.runtime import (
    ProcessRef,
    SandboxError,
    allocate_ip,
    hosts_file,
    mac_for,
    read_attempt,
    release_ip,
    resolv_conf,
    signal_container,
)

NETWORK = Network()
HOST_RESOLV = "# from the host\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n"


def pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web-1", "namespace": "team-a"}, "spec": spec}


def test_hosts_file_names_the_pod_and_its_subdomain_and_host_aliases() -> None:
    text = hosts_file(
        pod(
            hostname="web",
            subdomain="peers",
            hostAliases=[{"ip": "192.0.2.10", "hostnames": ["db.local", "cache.local"]}],
        ),
        "10.244.0.7",
        "cluster.local",
    )
    lines = text.splitlines()
    assert lines[0] == "# Kubernetes-managed hosts file."
    assert "127.0.0.1\tlocalhost" in lines
    assert "10.244.0.7\tweb.peers.team-a.svc.cluster.local\tweb" in lines
    assert lines[-2:] == ["# Entries added by HostAliases.", "192.0.2.10\tdb.local\tcache.local"]
    assert text.endswith("\n")


def test_hosts_file_uses_the_pod_name_without_hostname_or_subdomain() -> None:
    lines = hosts_file(pod(), "10.244.0.8", "cluster.local").splitlines()
    assert "10.244.0.8\tweb-1" in lines
    assert not any("HostAliases" in line for line in lines)


def test_resolv_conf_cluster_first_points_at_cluster_dns_with_search_domains() -> None:
    assert resolv_conf(pod(), NETWORK, HOST_RESOLV) == (
        "nameserver 10.96.0.10\n"
        "search team-a.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5\n"
    )


def test_resolv_conf_default_and_host_network_use_the_hosts_settings() -> None:
    assert resolv_conf(pod(dnsPolicy="Default"), NETWORK, HOST_RESOLV) == HOST_RESOLV
    assert resolv_conf(pod(hostNetwork=True), NETWORK, HOST_RESOLV) == HOST_RESOLV
    with_host_net = resolv_conf(
        pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"), NETWORK, HOST_RESOLV
    )
    assert with_host_net.startswith("nameserver 10.96.0.10\n")


def test_resolv_conf_none_takes_only_dns_config() -> None:
    spec = pod(
        dnsPolicy="None",
        dnsConfig={
            "nameservers": ["192.0.2.1", "192.0.2.2"],
            "searches": ["a.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
        },
    )
    assert resolv_conf(spec, NETWORK, HOST_RESOLV) == (
        "nameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch a.example\noptions ndots:2 edns0\n"
    )


def test_resolv_conf_dns_config_adds_to_cluster_first_and_to_default() -> None:
    extra = {"nameservers": ["192.0.2.9"], "searches": ["extra.example"], "options": [{"name": "rotate"}]}
    cluster_first = resolv_conf(pod(dnsConfig=extra), NETWORK, HOST_RESOLV).splitlines()
    assert cluster_first == [
        "nameserver 10.96.0.10",
        "nameserver 192.0.2.9",
        "search team-a.svc.cluster.local svc.cluster.local cluster.local extra.example",
        "options ndots:5 rotate",
    ]
    default = resolv_conf(pod(dnsPolicy="Default", dnsConfig=extra), NETWORK, HOST_RESOLV).splitlines()
    assert default == [
        "nameserver 192.0.2.53",
        "nameserver 192.0.2.9",
        "search corp.example extra.example",
        "options edns0 rotate",
    ]


def test_ip_leases_take_the_lowest_free_address_and_are_stable_per_pod(tmp_path: Path) -> None:
    node = NodeLayout(tmp_path)
    first = allocate_ip(node, NETWORK, "uid-a")
    second = allocate_ip(node, NETWORK, "uid-b")
    assert (first, second) == ("10.244.0.2", "10.244.0.3")  # .1 is the host address on the bridge
    assert allocate_ip(node, NETWORK, "uid-a") == first  # the same pod keeps its lease
    release_ip(node, "uid-a")
    assert not (node.ip_leases / first).exists()
    assert allocate_ip(node, NETWORK, "uid-c") == first  # the lowest free one again
    assert allocate_ip(node, NETWORK, "uid-d") == "10.244.0.4"
    release_ip(node, "uid-unknown")  # releasing what was never leased changes nothing
    assert sorted(p.name for p in node.ip_leases.iterdir()) == ["10.244.0.2", "10.244.0.3", "10.244.0.4"]


def test_ip_leases_exhausted_is_a_clear_error(tmp_path: Path) -> None:
    tiny = Network(pod_cidr="10.244.0.0/29")  # hosts .1-.6; .1 is the host address
    node = NodeLayout(tmp_path)
    leased = [allocate_ip(node, tiny, f"uid-{n}") for n in range(5)]
    assert leased == [f"10.244.0.{n}" for n in range(2, 7)]
    with pytest.raises(
        SandboxError, match=r"no free IP address left in the node's pod range 10\.244\.0\.0/29"
    ):
        allocate_ip(node, tiny, "uid-late")
    release_ip(node, "uid-2")
    assert allocate_ip(node, tiny, "uid-late") == "10.244.0.4"


def test_release_ip_without_any_lease_folder_is_harmless(tmp_path: Path) -> None:
    release_ip(NodeLayout(tmp_path / "never-made"), "uid")
    assert not (tmp_path / "never-made").exists()


def test_a_pods_mac_follows_its_ip_so_a_reused_address_keeps_its_neighbours_right() -> None:
    assert mac_for("10.244.0.5") == "0a:58:0a:f4:00:05"
    assert mac_for("10.244.1.254") == "0a:58:0a:f4:01:fe"
    assert mac_for("10.244.0.5") != mac_for("10.244.0.6")


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="PIDs and cgroups are set up as root")
NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"])


@pytest.fixture
def reused_pid() -> Iterator[tuple[ProcessRef, subprocess.Popen[bytes]]]:
    """A recorded process that ended, and an unrelated process that then got its PID: the kernel hands out
    the PID after ns_last_pid next, so it is set just below the freed one (other forks may race: retry)."""
    for _ in range(50):
        ended = sleeper()
        recorded = ProcessRef.of(ended.pid)
        ended.kill()
        ended.wait()
        time.sleep(0.05)  # past the start time's resolution (a tick), as any real reuse is
        NS_LAST_PID.write_text(str(recorded.pid - 1))
        stranger = sleeper()
        if stranger.pid == recorded.pid:
            break
        stranger.kill()
        stranger.wait()
    else:
        pytest.skip("the freed PID was taken by another process each time")
    try:
        yield recorded, stranger
    finally:
        stranger.kill()
        stranger.wait()


@needs_root
def test_a_reused_pid_is_never_signalled(reused_pid: tuple[ProcessRef, subprocess.Popen[bytes]]) -> None:
    recorded, stranger = reused_pid
    assert not recorded.alive()
    assert recorded.signal(signal.SIGKILL) is False
    time.sleep(0.1)
    assert stranger.poll() is None
    assert ProcessRef.of(stranger.pid).signal(signal.SIGTERM) is True
    assert stranger.wait(timeout=5) == -signal.SIGTERM


@needs_root
def test_a_container_whose_pid_was_reused_gets_no_signal_and_reading_it_kills_nothing(
    tmp_path: Path, reused_pid: tuple[ProcessRef, subprocess.Popen[bytes]]
) -> None:
    recorded, stranger = reused_pid
    layout = NodeLayout(tmp_path).pod("uid-1")
    attempt = layout.container("main", 0)
    attempt.root.mkdir(parents=True)
    state = {"pid": recorded.pid, "start_ticks": recorded.start_ticks, "startedAt": "2024-01-01T00:00:00Z"}
    attempt.state_file.write_text(json.dumps(state))
    signal_container(layout, "main", 0, signal.SIGTERM)
    # The shim is gone and left no exit record: the attempt's fate is unknown, and reading it kills nothing.
    assert read_attempt(layout, "main", 0).reason == "ContainerStatusUnknown"
    time.sleep(0.1)
    assert stranger.poll() is None


@needs_root
def test_killing_a_cgroup_kills_its_processes_and_those_below_it_and_nothing_else() -> None:
    pod = f"mlplatform-test-{uuid.uuid4().hex[:8]}"
    cgroups.create(f"{pod}/main-0", cgroups.Limits())
    member, nested, outsider = sleeper(), sleeper(), sleeper()
    try:
        cgroups.join(pod, member.pid)
        cgroups.join(f"{pod}/main-0", nested.pid)
        cgroups.kill_all(pod)
        assert member.wait(timeout=5) == -signal.SIGKILL
        assert nested.wait(timeout=5) == -signal.SIGKILL
        assert outsider.poll() is None
    finally:
        for process in (member, nested, outsider):
            process.kill()
            process.wait()
        cgroups.remove(pod)
    assert not any(folder.exists() for folder in cgroups.directories(pod))


def test_a_process_record_of_an_earlier_agent_still_names_its_process() -> None:
    """Earlier agents recorded psutil's create_time (the wall clock at boot plus the start ticks)."""
    me = psutil.Process()
    assert ProcessRef.load({"pid": me.pid, "create_time": me.create_time()}) == ProcessRef.of(me.pid)
    assert ProcessRef.load({"pid": me.pid, "start_ticks": 7}) == ProcessRef(me.pid, 7)
    assert ProcessRef.load({"pid": me.pid, "shimPid": 1}) is None  # a state file without its process
