"""The host side of the node's network, made before the control plane and removed after everything.

- a bridge carrying the node's host address, where every host-side service listens, so host processes
  and pods reach them alike;
- a route that keeps Service IPs on the bridge, so a connection kube-proxy has not (yet) translated
  never leaves the machine;
- the kernel settings a node needs (forwarding, bridged traffic through iptables), restored on teardown;
- firewall chains: pods reach each other and, on the host, only the platform's documented ports;
  nothing is forwarded between pods and the machine's other networks.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import psutil

from mlplatform.local.config import LocalConfig, StateLayout
from mlplatform.local.errors import LocalError
from mlplatform.local.platform import Context, Log, Service

FORWARD_CHAIN = "MLPLATFORM-FORWARD"
INPUT_CHAIN = "MLPLATFORM-INPUT"
COMMENT = "mlplatform local node"
SYSCTLS = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1"}


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["ip", *args], check)


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise LocalError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def link_exists(name: str) -> bool:
    return run_ip("link", "show", "dev", name, check=False).returncode == 0


def host_ports(config: LocalConfig) -> list[int]:
    """The host ports pods may reach at the host address: the platform's own services."""
    ports = config.ports
    return sorted({ports.apiserver, ports.node, ports.dns, ports.postgres, ports.minio, ports.mlflow})


def firewall_rules(config: LocalConfig) -> dict[str, list[list[str]]]:
    """The rules of our chains, as iptables arguments (pure).

    Written the way `iptables -S` lists them, so `ensure_firewall` recognises rules already in place.
    """
    bridge = config.network.bridge
    reject = ["-j", "REJECT", "--reject-with", "icmp-net-prohibited"]
    tcp_ports = ",".join(str(p) for p in host_ports(config))
    return {
        FORWARD_CHAIN: [
            ["-i", bridge, "-o", bridge, "-j", "ACCEPT"],
            ["-i", bridge, *reject],
            ["-o", bridge, *reject],
        ],
        INPUT_CHAIN: [
            ["-i", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
            ["-i", bridge, "-p", "tcp", "-m", "multiport", "--dports", tcp_ports, "-j", "ACCEPT"],
            ["-i", bridge, "-p", "udp", "-m", "udp", "--dport", str(config.ports.dns), "-j", "ACCEPT"],
            ["-i", bridge, *reject],
        ],
    }


def _jump(chain: str) -> list[str]:
    return ["-m", "comment", "--comment", COMMENT, "-j", chain]


def ensure_firewall(config: LocalConfig) -> None:
    """Create our chains with exactly their rules, and jump to them first; no-op when already so."""
    for chain, rules in firewall_rules(config).items():
        parent = chain.split("-")[1]  # FORWARD or INPUT
        wanted = [f"-A {chain} {' '.join(rule)}" for rule in rules]
        listing = _run(["iptables", "-S", chain], check=False)
        if listing.returncode != 0:
            _run(["iptables", "-N", chain])
        if _normalised(listing.stdout.splitlines()[1:]) != _normalised(wanted):
            _run(["iptables", "-F", chain])
            for rule in rules:
                _run(["iptables", "-A", chain, *rule])
        if _run(["iptables", "-C", parent, *_jump(chain)], check=False).returncode != 0:
            _run(["iptables", "-I", parent, "1", *_jump(chain)])


def _normalised(rules: list[str]) -> list[str]:
    return [" ".join(rule.replace('"', "").split()) for rule in rules]


def remove_firewall() -> None:
    for chain in (FORWARD_CHAIN, INPUT_CHAIN):
        parent = chain.split("-")[1]
        while _run(["iptables", "-D", parent, *_jump(chain)], check=False).returncode == 0:
            pass
        _run(["iptables", "-F", chain], check=False)
        _run(["iptables", "-X", chain], check=False)


def kube_chain_cleanup(saved_rules: str, prefix: str = "KUBE-") -> str:
    """An iptables-restore script that removes every chain starting with `prefix` and every jump to one."""
    script: list[str] = []
    table = ""
    chains: list[str] = []
    deletions: list[str] = []

    def close() -> None:
        if table and (chains or deletions):
            script.extend(
                [
                    f"*{table}",
                    *deletions,
                    *(f"-F {c}" for c in chains),
                    *(f"-X {c}" for c in chains),
                    "COMMIT",
                ]
            )

    for line in saved_rules.splitlines():
        if line.startswith("*"):
            close()
            table, chains, deletions = line[1:], [], []
        elif line.startswith(":") and line[1:].startswith(prefix):
            chains.append(line[1:].split()[0])
        elif line.startswith("-A ") and f"-j {prefix}" in line and not line.split()[1].startswith(prefix):
            deletions.append("-D " + line[3:])
    close()
    return "\n".join(script) + "\n" if script else ""


def remove_kube_chains() -> None:
    """Remove what kube-proxy's own cleanup leaves behind (its canaries and firewall chains)."""
    script = kube_chain_cleanup(_run(["iptables-save"]).stdout)
    if script:
        result = subprocess.run(
            ["iptables-restore", "--noflush"], input=script, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise LocalError(f"removing kube-proxy's iptables chains failed: {result.stderr.strip()}")


def _kube_proxy_running() -> bool:
    return any(proc.info["name"] == "kube-proxy" for proc in psutil.process_iter(["name"]))


def clear_stale_kube_chains(layout: StateLayout, log: Log) -> None:
    """kube-proxy's chains are global to the machine: share them with no other kube-proxy, and remove the
    ones a cluster left when it was killed rather than taken down (its kube-proxy is gone)."""
    if saved_sysctls(layout).exists():
        return  # this cluster's own, from an earlier `up`
    if ":KUBE-SERVICES" not in _run(["iptables-save", "-t", "nat"]).stdout:
        return
    if _kube_proxy_running():
        raise LocalError(
            "this machine already runs a kube-proxy (iptables has KUBE-SERVICES): the local node cannot "
            "share it; stop that cluster (`mlplatform local down` for a local one) or use --no-node"
        )
    log("removing the iptables rules of an earlier cluster's kube-proxy, which no longer runs")
    remove_kube_chains()


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key


def set_sysctls(saved: Path) -> None:
    """Set what a node needs, remembering the machine's values (once) to restore them later."""
    if not saved.exists():
        saved.write_text(
            json.dumps({k: _sysctl_path(k).read_text().strip() for k in SYSCTLS if _sysctl_path(k).exists()})
        )
    for key, value in SYSCTLS.items():
        if not _sysctl_path(key).exists():
            raise LocalError(f"/proc/sys/{key} is missing: the kernel lacks {key.split('/')[1]} support")
        _sysctl_path(key).write_text(value)


def restore_sysctls(saved: Path) -> None:
    if not saved.exists():
        return
    for key, value in json.loads(saved.read_text()).items():
        _sysctl_path(key).write_text(value)
    saved.unlink()


def ensure_bridge(config: LocalConfig) -> None:
    network = config.network
    prefix = network.pod_cidr.split("/")[1]
    if not link_exists(network.bridge):
        run_ip("link", "add", "name", network.bridge, "type", "bridge")
    addresses = run_ip("-o", "-4", "addr", "show", "dev", network.bridge).stdout
    if f" {network.host_address}/{prefix} " not in addresses:
        run_ip("addr", "add", f"{network.host_address}/{prefix}", "dev", network.bridge)
    run_ip("link", "set", network.bridge, "up")
    run_ip("route", "replace", network.service_cidr, "dev", network.bridge)


def remove_bridge(config: LocalConfig) -> None:
    if link_exists(config.network.bridge):
        run_ip("link", "delete", config.network.bridge)  # its routes and addresses go with it


def saved_sysctls(layout: StateLayout) -> Path:
    return layout.run / "sysctl.json"


class HostNetwork:
    """The node bridge, the host address on it, its route, kernel settings and firewall chains."""

    name = "host network"

    def binaries(self, config: LocalConfig) -> Sequence[str]:
        return []

    def stages(self, config: LocalConfig) -> Sequence[Sequence[Service]]:
        return []

    def prepare(self, ctx: Context) -> None:
        clear_stale_kube_chains(ctx.layout, ctx.log)
        ensure_bridge(ctx.config)
        set_sysctls(saved_sysctls(ctx.layout))
        ensure_firewall(ctx.config)

    def finish(self, ctx: Context) -> None:
        """Nothing to add once the bridge is up."""

    def teardown(self, ctx: Context) -> None:
        remove_firewall()
        remove_bridge(ctx.config)
        restore_sysctls(saved_sysctls(ctx.layout))
