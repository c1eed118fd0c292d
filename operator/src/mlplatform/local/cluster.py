"""`mlplatform local up | down | status | env`: one local cluster, its parts in order."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from mlplatform.local.config import LocalConfig, StateLayout, claim_state_dir, load_config
from mlplatform.local.controlplane import ControlPlane
from mlplatform.local.errors import LocalError
from mlplatform.local.gobuild import BINARIES, cached_binary, ensure_binaries
from mlplatform.local.network import HostNetwork
from mlplatform.local.node.part import LocalNode
from mlplatform.local.platform import Context, Log, Part, Service, check_port_free, is_root, services_of
from mlplatform.local.processes import ProcessTable, wait_for
from mlplatform.local.stack import MlflowStack, endpoints


def platform_parts(config: LocalConfig) -> list[Part]:
    """The parts of the local platform, in the order they come up."""
    parts: list[Part] = []
    if config.node:
        parts.append(HostNetwork())
    parts.append(ControlPlane())
    if config.stack:
        parts.append(MlflowStack())
    if config.node:
        parts.append(LocalNode())
    return parts


def _context(config: LocalConfig, log: Log) -> Context:
    layout = StateLayout(config.state_dir)
    return Context(config, layout, ProcessTable(layout.run, layout.logs), log)


def _merged(requested: LocalConfig, saved: LocalConfig) -> LocalConfig:
    """The saved configuration, with the stack added if asked for now.

    Ports and addresses shaped the certificates and data already on disk, so changing them needs a new
    state; the stack can join a running cluster (and stays in the saved configuration, so `down` stops it).
    """
    merged = replace(saved, stack=saved.stack or requested.stack)
    if replace(requested, state_dir=saved.state_dir, cache_dir=saved.cache_dir, stack=merged.stack) != merged:
        raise LocalError(
            f"the cluster in {saved.state_dir} was created with other settings; "
            "run `mlplatform local down` first to change them"
        )
    return merged


def _start_stage(ctx: Context, stage: Sequence[Service]) -> None:
    started = {}
    for service in stage:
        if ctx.processes.alive(service.name) is None:
            started[service.name] = ctx.processes.start(service.spec(ctx))
    for service in stage:
        wait_for(
            service.ready(ctx),
            service.timeout,
            service.name,
            log_file=ctx.processes.log_path(service.name),
            proc=started.get(service.name),
        )


def bring_up(ctx: Context, part: Part) -> None:
    """Prepare a part, start its services stage by stage (those not running yet), wait, then finish it."""
    part.prepare(ctx)
    for stage in part.stages(ctx.config):
        _start_stage(ctx, stage)
    part.finish(ctx)


def up(config: LocalConfig, log: Log = print) -> LocalConfig:
    """Bring the local cluster up, or complete it if some of it runs already; return its configuration."""
    saved = load_config(config.state_dir)
    if saved is not None:
        config = _merged(config, saved)
    if config.node and not is_root():
        raise LocalError(
            "the local node needs root (it makes network namespaces and a bridge); "
            "run as root, or pass --no-node for the control plane alone"
        )
    ctx = _context(config, log)
    parts = platform_parts(config)
    missing = [s for part in parts for s in services_of(part, config) if ctx.processes.alive(s.name) is None]
    for service in missing:
        for address, port in service.listens(config):
            check_port_free(address, port, service.name)
    started = time.monotonic()
    claim_state_dir(config)
    names = list(dict.fromkeys(name for part in parts for name in part.binaries(config)))
    ctx.binaries = ensure_binaries(names, config.cache_dir, log)
    # Every pass is complete and idempotent: a half-finished `up` is completed by the next one.
    for part in parts:
        bring_up(ctx, part)
    if missing:
        log(f"local cluster ready in {time.monotonic() - started:.1f}s (state in {config.state_dir})")
    else:
        log(f"local cluster already running (state in {config.state_dir})")
    return config


def down(state_dir_config: LocalConfig, keep_state: bool = False, log: Log = print) -> None:
    """Stop every process of the cluster, remove what it made, and its state unless asked to keep it."""
    config = load_config(state_dir_config.state_dir)
    layout = StateLayout(state_dir_config.state_dir)
    if config is None:
        log(f"no local cluster in {layout.root}")
        return
    ctx = _context(config, log)
    ctx.binaries = _cached_binaries(config)
    failures = []
    for part in reversed(platform_parts(config)):
        for service in reversed(services_of(part, config)):
            if ctx.processes.stop(service.name):
                log(f"stopped {service.name}")
        try:
            part.teardown(ctx)
        except LocalError as exc:
            failures.append(exc.message)
    if failures:
        raise LocalError("; ".join(failures))
    if not keep_state and layout.marker.exists():
        shutil.rmtree(layout.root)
        log(f"removed {layout.root}")


def _cached_binaries(config: LocalConfig) -> dict[str, Path]:
    """The binaries a teardown may need (kube-proxy cleans its rules), without building anything."""
    names = {name for part in platform_parts(config) for name in part.binaries(config)}
    return {
        name: path for name in names if (path := cached_binary(BINARIES[name], config.cache_dir)[0]).exists()
    }


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None


def status(config: LocalConfig) -> list[ServiceStatus]:
    ctx = _context(config, print)
    result = []
    for part in platform_parts(config):
        for service in services_of(part, config):
            proc = ctx.processes.alive(service.name)
            result.append(ServiceStatus(service.name, proc.pid if proc else None))
    return result


def env_lines(config: LocalConfig) -> list[str]:
    """Shell lines that point kubectl, helm and the tests at this cluster."""
    layout = StateLayout(config.state_dir)
    return [
        f"export KUBECONFIG={layout.admin_kubeconfig}",
        f'export PATH="{layout.bin}:$PATH"',
        f"export MLPLATFORM_STATE_DIR={config.state_dir}",
        *([f"export MLFLOW_TRACKING_URI={endpoints(config).tracking_uri}"] if config.stack else []),
    ]


def build(config: LocalConfig, log: Log = print) -> None:
    """Build (or verify) every binary the platform needs, without starting anything."""
    names = list(dict.fromkeys(n for part in platform_parts(config) for n in part.binaries(config)))
    ensure_binaries(names, config.cache_dir, log)
    for name in names:
        path, problem = cached_binary(BINARIES[name], config.cache_dir)
        if problem:
            raise LocalError(f"{name} is not usable after the build: {problem}")
        log(f"{name:<24} {BINARIES[name].version:<40} {path}")
