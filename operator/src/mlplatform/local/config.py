"""Configuration of one local cluster and the layout of its state directory.

The configuration is fixed when the cluster first comes up and saved in its state directory, so later
`down`, `status` and `env` calls (and the node agent) read the same ports and addresses.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlplatform.local.errors import LocalError
from mlplatform.local.files import write_if_changed

STATE_MARKER = ".mlplatform-local"
PLATFORM_NAMESPACE = "mlplatform-system"  # where the local platform names its services for pods
CONFIG_FILE = "config.json"


def default_cache_dir() -> Path:
    """Where built binaries and environments are cached: $MLPLATFORM_CACHE_DIR or the user's cache."""
    if explicit := os.environ.get("MLPLATFORM_CACHE_DIR"):
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser().resolve() / "mlplatform"


def default_state_dir() -> Path:
    """Where a running cluster keeps its state: $MLPLATFORM_STATE_DIR or <cache>/local."""
    if explicit := os.environ.get("MLPLATFORM_STATE_DIR"):
        return Path(explicit).expanduser().resolve()
    return default_cache_dir() / "local"


@dataclass(frozen=True)
class Ports:
    """TCP ports of the local platform. Defaults avoid the well-known ports of a real cluster."""

    etcd_client: int = 12379
    etcd_peer: int = 12380
    apiserver: int = 16443
    controller_manager: int = 20257
    scheduler: int = 20259
    node: int = 20250
    kube_proxy_healthz: int = 20256
    kube_proxy_metrics: int = 20249
    dns: int = 53
    dns_ready: int = 20281
    postgres: int = 15432
    minio: int = 19000
    minio_console: int = 19001
    mlflow: int = 15000

    def shifted(self, offset: int) -> Ports:
        """All ports moved by `offset`, except DNS, which pods always query on port 53."""
        values = {f.name: getattr(self, f.name) + offset for f in dataclasses.fields(self)}
        values["dns"] = self.dns
        return Ports(**values)


@dataclass(frozen=True)
class Network:
    """Addresses of the local cluster.

    The node's bridge carries the first address of the node's pod range: the *host address*. Every
    host-side service (apiserver, MLflow, MinIO, PostgreSQL, DNS) listens there, so host processes and
    pods reach them alike and nothing listens on the machine's other interfaces.
    """

    bridge: str = "mlp0"
    cluster_cidr: str = "10.244.0.0/16"
    pod_cidr: str = "10.244.0.0/24"
    service_cidr: str = "10.96.0.0/16"
    cluster_domain: str = "cluster.local"

    @property
    def host_address(self) -> str:
        return str(next(ipaddress.ip_network(self.pod_cidr).hosts()))

    @property
    def apiserver_service_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr)[1])

    @property
    def dns_service_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr)[10])


@dataclass(frozen=True)
class LocalConfig:
    """One local cluster: where it lives, which parts run, and its ports and addresses."""

    state_dir: Path
    cache_dir: Path
    node: bool = True
    stack: bool = True
    node_name: str = "mlplatform-local"
    ports: Ports = field(default_factory=Ports)
    network: Network = field(default_factory=Network)

    @property
    def bind_address(self) -> str:
        """The address host-side services listen on: the node's host address, or loopback without a node."""
        return self.network.host_address if self.node else "127.0.0.1"

    @property
    def apiserver_url(self) -> str:
        return f"https://{self.bind_address}:{self.ports.apiserver}"

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["cache_dir"] = str(self.cache_dir)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LocalConfig:
        data: dict[str, Any] = json.loads(text)
        return cls(
            state_dir=Path(data["state_dir"]),
            cache_dir=Path(data["cache_dir"]),
            node=bool(data["node"]),
            stack=bool(data["stack"]),
            node_name=str(data["node_name"]),
            ports=Ports(**data["ports"]),
            network=Network(**data["network"]),
        )


@dataclass(frozen=True)
class StateLayout:
    """Every path inside a cluster's state directory, named once."""

    root: Path

    @property
    def marker(self) -> Path:
        return self.root / STATE_MARKER

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def bin(self) -> Path:
        """Links to the client tools (kubectl, helm) that `mlplatform local env` puts on PATH."""
        return self.root / "bin"

    @property
    def node(self) -> Path:
        """The local node's pods, their logs and its IP leases."""
        return self.root / "node"

    @property
    def secrets(self) -> Path:
        """Credentials generated for this cluster's MLflow stack (files of mode 0600)."""
        return self.root / "secrets"

    @property
    def postgres(self) -> Path:
        return self.root / "postgres"

    @property
    def postgres_data(self) -> Path:
        return self.postgres / "data"

    @property
    def postgres_socket(self) -> Path:
        """PostgreSQL's unix socket directory (its own, not the system's /var/run/postgresql)."""
        return self.postgres / "socket"

    @property
    def minio(self) -> Path:
        return self.root / "minio"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    def kubeconfig(self, user: str) -> Path:
        return self.pki / f"{user}.kubeconfig"

    @property
    def encryption_config(self) -> Path:
        return self.pki / "encryption-config.yaml"


def load_config(state_dir: Path) -> LocalConfig | None:
    """The saved configuration of the cluster in `state_dir`, or None if none was ever brought up there.

    Without our marker the folder is not a cluster's, whatever files it holds (a user's config.json).
    """
    layout = StateLayout(state_dir)
    if not layout.marker.is_file() or not layout.config_file.is_file():
        return None
    try:
        return LocalConfig.from_json(layout.config_file.read_text())
    except (ValueError, KeyError, TypeError) as exc:
        raise LocalError(f"{layout.config_file} is not a valid local cluster configuration ({exc})") from exc


def claim_state_dir(config: LocalConfig) -> StateLayout:
    """Create the state directory, or adopt it if it is already ours; never take over a user's folder."""
    layout = StateLayout(config.state_dir)
    root = layout.root
    if root.exists() and any(root.iterdir()) and not layout.marker.exists():
        raise LocalError(
            f"state directory {root} already holds files that are not a local cluster's; "
            "choose a new or empty directory with --state-dir or MLPLATFORM_STATE_DIR"
        )
    for path in (root, layout.pki, layout.logs, layout.run, layout.bin):
        path.mkdir(parents=True, exist_ok=True)
    layout.pki.chmod(0o700)
    write_if_changed(layout.marker, "This directory holds the state of an `mlplatform local` cluster.\n")
    write_if_changed(layout.config_file, config.to_json())
    return layout
