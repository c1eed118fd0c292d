"""The host side of the node's network: a bridge that carries the node's host address.

It comes up before the control plane, because every host-side service listens on the host address,
where host processes and pods alike reach it. Everything made here is removed by `teardown`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from mlplatform.local.config import LocalConfig
from mlplatform.local.errors import LocalError
from mlplatform.local.platform import Context, Service


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise LocalError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def link_exists(name: str) -> bool:
    return run_ip("link", "show", "dev", name, check=False).returncode == 0


def ensure_bridge(config: LocalConfig) -> None:
    network = config.network
    prefix = network.pod_cidr.split("/")[1]
    if not link_exists(network.bridge):
        run_ip("link", "add", "name", network.bridge, "type", "bridge")
    addresses = run_ip("-o", "-4", "addr", "show", "dev", network.bridge).stdout
    if f" {network.host_address}/{prefix} " not in addresses:
        run_ip("addr", "add", f"{network.host_address}/{prefix}", "dev", network.bridge)
    run_ip("link", "set", network.bridge, "up")


def remove_bridge(config: LocalConfig) -> None:
    if link_exists(config.network.bridge):
        run_ip("link", "delete", config.network.bridge)


class HostNetwork:
    """The node bridge and the host address on it."""

    name = "host network"

    def binaries(self, config: LocalConfig) -> Sequence[str]:
        return []

    def stages(self, config: LocalConfig) -> Sequence[Sequence[Service]]:
        return []

    def prepare(self, ctx: Context) -> None:
        ensure_bridge(ctx.config)

    def finish(self, ctx: Context) -> None:
        """Nothing to add once the bridge is up."""

    def teardown(self, ctx: Context) -> None:
        remove_bridge(ctx.config)
