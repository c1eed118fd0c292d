"""The node's container runtime, host side: sandboxes, their network, container shims, and cleanup.

Everything here is recorded on disk in the pod's folder (sandbox.json, shim.json, state.json,
exit.json), so a restarted node agent finds every running sandbox and container again.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from mlplatform.local.config import Network
from mlplatform.local.node import cgroups, linux
from mlplatform.local.node.layout import CGROUP_ROOT, NodeLayout, PodLayout
from mlplatform.local.node.sandbox import SandboxSpec, host_entries, plan_rootfs
from mlplatform.local.node.shim import ContainerSpec
from mlplatform.local.node.status import CONTAINER_ID_SCHEME, Attempt

Manifest = dict[str, Any]
SANDBOX_START_SECONDS = 15.0


class SandboxError(Exception):
    """A sandbox or container could not be created."""


@dataclass(frozen=True)
class ProcessRef:
    """A process as recorded: its PID and start time (clock ticks since boot), so a reused PID is never
    taken for it. Recorded as {"pid", "start_ticks"}: in the shim's and sandbox's records, and by the shim
    in its container's state."""

    pid: int
    start_ticks: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        return cls(pid, linux.start_ticks(pid))

    @classmethod
    def load(cls, record: dict[str, Any]) -> ProcessRef | None:
        if "start_ticks" in record:
            return cls(int(record["pid"]), int(record["start_ticks"]))
        if "create_time" in record:  # written by an earlier node agent, from the wall clock at boot
            seconds = float(record["create_time"]) - psutil.boot_time()
            return cls(int(record["pid"]), round(seconds * os.sysconf("SC_CLK_TCK")))
        return None

    def alive(self) -> bool:
        return linux.is_same(self.pid, self.start_ticks)

    def signal(self, sig: int) -> bool:
        return linux.signal_if_same(self.pid, self.start_ticks, sig)


@dataclass(frozen=True)
class SandboxRecord:
    holder: ProcessRef
    ip: str | None
    veth: str | None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SandboxRecord:
        data = json.loads(text)
        holder = ProcessRef.load(data["holder"])
        if holder is None:
            raise ValueError("no sandbox holder recorded")
        return cls(holder, data["ip"], data["veth"])


def pod_cgroup(uid: str) -> str:
    return f"{CGROUP_ROOT}/{uid}"


def sandbox_cgroup(uid: str) -> str:
    """The sandbox holder's own cgroup in the pod's (a leaf: v2 lets no process sit beside child cgroups)."""
    return f"{pod_cgroup(uid)}/sandbox"


def container_cgroup(uid: str, name: str, number: int) -> str:
    return f"{pod_cgroup(uid)}/{name}-{number}"


# --- files a pod sees at /etc -------------------------------------------------------------------------


def pod_hostname(pod: Manifest) -> str:
    return str(pod["spec"].get("hostname") or pod["metadata"]["name"])[:63]


def hosts_file(pod: Manifest, ip: str | None, domain: str) -> str:
    hostname = pod_hostname(pod)
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
    ]
    if ip:
        subdomain = pod["spec"].get("subdomain")
        fqdn = f"{hostname}.{subdomain}.{pod['metadata']['namespace']}.svc.{domain}" if subdomain else ""
        lines.append(f"{ip}\t{fqdn + chr(9) if fqdn else ''}{hostname}")
    aliases = pod["spec"].get("hostAliases") or []
    if aliases:
        lines.append("# Entries added by HostAliases.")
        lines += [f"{a['ip']}\t{chr(9).join(a.get('hostnames') or [])}" for a in aliases]
    return "\n".join(lines) + "\n"


def resolv_conf(pod: Manifest, network: Network, host_resolv: str) -> str:
    spec = pod["spec"]
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        domain = network.cluster_domain
        nameservers = [network.dns_service_ip]
        searches = [f"{pod['metadata']['namespace']}.svc.{domain}", f"svc.{domain}", domain]
        options = ["ndots:5"]
    elif policy == "Default":
        if not spec.get("dnsConfig"):
            return host_resolv
        # dnsConfig works with every policy: with Default it is merged into the host's settings.
        for line in host_resolv.splitlines():
            keyword, *values = line.split("#", 1)[0].split() or [""]
            if keyword == "nameserver":
                nameservers += values[:1]
            elif keyword in ("search", "domain"):
                searches = values
            elif keyword == "options":
                options += values
    extra = spec.get("dnsConfig") or {}
    nameservers += extra.get("nameservers") or []
    searches += extra.get("searches") or []
    options += [
        f"{o['name']}:{o['value']}" if o.get("value") else o["name"] for o in extra.get("options") or []
    ]
    lines = [f"nameserver {n}" for n in nameservers]
    if searches:
        lines.append("search " + " ".join(searches))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


# --- IP addresses -------------------------------------------------------------------------------------


def allocate_ip(node: NodeLayout, network: Network, uid: str) -> str:
    """The pod's IP: its existing lease, or the lowest free address of the node's pod range."""
    node.ip_leases.mkdir(parents=True, exist_ok=True)
    for lease in node.ip_leases.iterdir():
        if lease.read_text() == uid:
            return lease.name
    hosts = ipaddress.ip_network(network.pod_cidr).hosts()
    for address in hosts:
        if str(address) == network.host_address:
            continue
        try:
            descriptor = os.open(node.ip_leases / str(address), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(uid)
        return str(address)
    raise SandboxError(f"no free IP address left in the node's pod range {network.pod_cidr}")


def release_ip(node: NodeLayout, uid: str) -> None:
    if not node.ip_leases.exists():
        return
    for lease in node.ip_leases.iterdir():
        with contextlib.suppress(OSError):
            if lease.read_text() == uid:
                lease.unlink()


def veth_name(uid: str) -> str:
    return "mlp" + hashlib.sha256(uid.encode()).hexdigest()[:8]


def _ip_batch(commands: list[str], namespace_pid: int | None = None) -> None:
    argv = ["ip", "-batch", "-"]
    if namespace_pid is not None:
        argv = ["nsenter", f"--net=/proc/{namespace_pid}/ns/net", *argv]
    result = subprocess.run(
        argv, input="\n".join(commands) + "\n", capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SandboxError(f"network setup failed: {result.stderr.strip()}")


def mac_for(ip: str) -> str:
    """The pod's MAC address, derived from its IP as CNI's bridge plugin does (0a:58:<the IPv4 bytes>): a
    pod that reuses an address also reuses its MAC, so the neighbour caches of other pods and of the node
    stay right (with a fresh MAC, replies went to the previous pod's until the stale entry expired)."""
    return "0a:58:" + ":".join(f"{byte:02x}" for byte in ipaddress.IPv4Address(ip).packed)


def wire_network(pid: int, ip: str, veth: str, network: Network) -> None:
    """Give the sandbox an eth0 with `ip`, its other end on the node bridge, and a default route."""
    prefix = network.pod_cidr.split("/")[1]
    _ip_batch(
        [
            f"link add {veth} type veth peer name eth0 address {mac_for(ip)} netns {pid}",
            f"link set {veth} master {network.bridge}",
            f"link set dev {veth} type bridge_slave hairpin on",
            f"link set {veth} up",
        ]
    )
    _ip_batch(
        [
            "link set lo up",
            f"addr add {ip}/{prefix} dev eth0",
            "link set eth0 up",
            f"route add default via {network.host_address}",
        ],
        namespace_pid=pid,
    )


# --- sandboxes ----------------------------------------------------------------------------------------


def read_sandbox(layout: PodLayout) -> SandboxRecord | None:
    try:
        return SandboxRecord.from_json(layout.sandbox_file.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def create_sandbox(
    pod: Manifest,
    layout: PodLayout,
    node: NodeLayout,
    network: Network,
    *,
    visible_paths: list[str],
    hidden_paths: list[str],
) -> SandboxRecord:
    """Start the pod's sandbox: namespaces, root filesystem, network; return its record."""
    host_network = bool(pod["spec"].get("hostNetwork"))
    ip = None if host_network else allocate_ip(node, network, layout.uid)
    for folder in (layout.etc, layout.volumes, layout.tmp):
        folder.mkdir(parents=True, exist_ok=True)
    layout.tmp.chmod(0o1777)
    (layout.etc / "hosts").write_text(hosts_file(pod, ip or network.host_address, network.cluster_domain))
    (layout.etc / "resolv.conf").write_text(resolv_conf(pod, network, Path("/etc/resolv.conf").read_text()))
    (layout.etc / "hostname").write_text(pod_hostname(pod) + "\n")
    host_paths = {
        v["name"]: v["hostPath"]["path"] for v in pod["spec"].get("volumes") or [] if "hostPath" in v
    }
    steps = plan_rootfs(
        host_entries(Path("/")),
        layout.etc,
        layout.tmp,
        layout.volumes,
        visible_paths=visible_paths,
        hidden_paths=hidden_paths,
        host_paths=host_paths,
    )
    spec = SandboxSpec(pod_hostname(pod), str(layout.rootfs), str(layout.upper), steps, host_network)
    spec_file = layout.sandbox_spec
    spec_file.write_text(spec.to_json())
    holder = subprocess.Popen(
        [sys.executable, "-m", "mlplatform.local.node.sandbox", str(spec_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    cgroups.create(sandbox_cgroup(layout.uid), cgroups.Limits())
    cgroups.join(sandbox_cgroup(layout.uid), holder.pid)  # killed with the pod's cgroup, never by PID
    assert holder.stdout is not None
    reply = holder.stdout.readline().decode(errors="replace").strip()
    holder.stdout.close()
    if reply != "ready":
        holder.kill()
        holder.wait()
        if ip:
            release_ip(node, layout.uid)
        raise SandboxError(f"the pod sandbox did not start: {reply or 'no reply'}")
    record = SandboxRecord(ProcessRef.of(holder.pid), ip, None if host_network else veth_name(layout.uid))
    try:
        if ip and record.veth:
            wire_network(holder.pid, ip, record.veth, network)
    except SandboxError:
        holder.kill()
        holder.wait()
        release_ip(node, layout.uid)
        raise
    layout.sandbox_file.write_text(record.to_json())
    _REAPABLE[holder.pid] = holder
    return record


def destroy_sandbox(layout: PodLayout, node: NodeLayout) -> None:
    """Stop the sandbox: its namespaces, and with them the pod's network interface, go too."""
    record = read_sandbox(layout)
    cgroups.kill_all(sandbox_cgroup(layout.uid))
    if record:
        record.holder.signal(signal.SIGKILL)  # a holder an earlier node agent did not put in the cgroup
        _wait_gone(record.holder, 5)
    if record and record.veth:
        subprocess.run(["ip", "link", "delete", record.veth], capture_output=True, check=False)
    release_ip(node, layout.uid)
    layout.sandbox_file.unlink(missing_ok=True)
    _reap()


# --- containers -----------------------------------------------------------------------------------------

_REAPABLE: dict[int, subprocess.Popen[bytes]] = {}


def _reap() -> None:
    """Collect exited shims and sandboxes this agent started, so none stays a zombie."""
    for pid, popen in list(_REAPABLE.items()):
        if popen.poll() is not None:
            del _REAPABLE[pid]


def runc_id(uid: str, name: str, number: int) -> str:
    """runc's name for an attempt of a container: unique on the node."""
    return f"{uid}-{name}-{number}"


def container_id(uid: str, name: str, number: int) -> str:
    """The containerID a pod's status shows."""
    return f"{CONTAINER_ID_SCHEME}://{runc_id(uid, name, number)}"


def start_container(layout: PodLayout, spec: ContainerSpec, number: int) -> None:
    """Start the shim that runs one attempt of a container, once nothing of the attempt before is left: a
    container outlives a shim that vanished (as under containerd), so its cgroup is killed first."""
    if number > 0:
        previous = container_cgroup(layout.uid, spec.name, number - 1)
        cgroups.kill_all(previous)
        cgroups.remove(previous)
    attempt = layout.container(spec.name, number)
    attempt.root.mkdir(parents=True, exist_ok=True)
    attempt.spec_file.write_text(spec.to_json())
    shim = subprocess.Popen(
        [sys.executable, "-m", "mlplatform.local.node.shim", str(attempt.spec_file)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ref = ProcessRef.of(shim.pid)
    attempt.shim_file.write_text(json.dumps(asdict(ref)))
    _REAPABLE[shim.pid] = shim


def attempt_numbers(layout: PodLayout, name: str) -> list[int]:
    folder = layout.containers_of(name)
    if not folder.exists():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return None


def read_attempt(layout: PodLayout, name: str, number: int) -> Attempt:
    """What the shim recorded of one attempt; an attempt whose shim vanished is reported as such. Reading
    kills nothing: what such an attempt left is killed before the next one starts, or with the pod."""
    attempt = layout.container(name, number)
    cid = container_id(layout.uid, name, number)
    exit_record = _json(attempt.exit_file)
    state = _json(attempt.state_file) or {}
    if exit_record:
        return Attempt(
            number,
            cid,
            exit_record.get("startedAt"),
            exit_record.get("finishedAt"),
            exit_record.get("exitCode"),
            exit_record.get("reason"),
            exit_record.get("message"),
            exit_record.get("signal"),
        )
    shim = shim_ref(layout, name, number)
    if shim and shim.alive():
        return Attempt(number, cid, state.get("startedAt"))
    stamp = state.get("startedAt") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return Attempt(
        number,
        cid,
        stamp,
        stamp,
        137,
        "ContainerStatusUnknown",
        "The container could not be located when the pod was terminated",
    )


def _process_in(path: Path) -> ProcessRef | None:
    record = _json(path)
    return ProcessRef.load(record) if record else None


def shim_ref(layout: PodLayout, name: str, number: int) -> ProcessRef | None:
    return _process_in(layout.container(name, number).shim_file)


def container_pid(layout: PodLayout, name: str, number: int) -> int | None:
    """The PID of the container's main process while it is that process (checked by its start time)."""
    process = container_process(layout, name, number)
    return process.pid if process is not None and process.alive() else None


def container_process(layout: PodLayout, name: str, number: int) -> ProcessRef | None:
    """The container's main process (its PID 1), as its shim recorded it."""
    return _process_in(layout.container(name, number).state_file)


def signal_container(layout: PodLayout, name: str, number: int, sig: int) -> None:
    """SIGKILL ends every process of the container, through its cgroup; any other signal goes to its PID 1
    alone, as a runtime sends SIGTERM: the process decides what its children get (a shell's trap runs
    first). A PID 1 with no handler for the signal does not get it (the kernel protects a namespace's init),
    as under any container runtime."""
    if sig == signal.SIGKILL:
        cgroups.kill_all(container_cgroup(layout.uid, name, number))
    elif (process := container_process(layout, name, number)) is not None:
        process.signal(sig)


def _wait_gone(ref: ProcessRef, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while ref.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
        _reap()


def kill_pod(layout: PodLayout, node: NodeLayout) -> None:
    """Kill every process of a pod at once through its cgroup (its containers and its sandbox holder); once
    the shims have recorded how their containers ended, the sandbox's network; then cgroup and IP lease."""
    shims = [shim for attempt in layout.attempts() if (shim := _process_in(attempt.shim_file))]
    cgroups.kill_all(pod_cgroup(layout.uid))
    for shim in shims:
        _wait_gone(shim, 5)
    destroy_sandbox(layout, node)
    cgroups.remove(pod_cgroup(layout.uid))


def remove_pod_dir(layout: PodLayout) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(layout.root)


def known_pod_uids(node: NodeLayout) -> list[str]:
    if not node.pods.exists():
        return []
    return [p.name for p in node.pods.iterdir() if p.is_dir()]


def kill_everything(node: NodeLayout) -> None:
    """Stop every pod the node ever started (used by `mlplatform local down`)."""
    for uid in known_pod_uids(node):
        kill_pod(node.pod(uid), node)
    cgroups.kill_all(CGROUP_ROOT)
    cgroups.remove(CGROUP_ROOT)
