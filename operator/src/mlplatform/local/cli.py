"""`mlplatform local`: the command-line face of the local platform."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mlplatform.local import cluster
from mlplatform.local.config import LocalConfig, Ports, default_cache_dir, default_state_dir, load_config
from mlplatform.local.errors import LocalError
from mlplatform.local.stack import endpoints

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the cluster keeps its state (default: $MLPLATFORM_STATE_DIR or ~/.cache/mlplatform/local).",
)


def _state_dir(value: Path | None) -> Path:
    return value.expanduser().resolve() if value else default_state_dir()


def _saved(state_dir: Path) -> LocalConfig:
    config = load_config(state_dir)
    if config is None:
        raise LocalError(f"no local cluster in {state_dir}; start one with `mlplatform local up`")
    return config


def _progress(message: str) -> None:
    click.echo(message, err=True)


@click.group("local")
def local() -> None:
    """A real Kubernetes control plane (and, as root, a node) on this machine."""


@local.command()
@state_dir_option
@click.option("--no-node", is_flag=True, help="Start the control plane alone, on 127.0.0.1 (no root needed).")
@click.option(
    "--no-stack", is_flag=True, help="Leave out the MLflow stack (PostgreSQL, MinIO, MLflow tracking server)."
)
@click.option(
    "--port-offset",
    type=click.IntRange(0, 40000),
    default=0,
    show_default=True,
    help="Move every port of the platform by this many, to run beside something that uses them.",
)
def up(state_dir: Path | None, no_node: bool, no_stack: bool, port_offset: int) -> None:
    """Start the local cluster (idempotent: a running cluster is reported, a partial one completed)."""
    config = LocalConfig(
        state_dir=_state_dir(state_dir),
        cache_dir=default_cache_dir(),
        node=not no_node,
        stack=not no_stack,
        ports=Ports().shifted(port_offset),
    )
    config = cluster.up(config, log=_progress)
    _print_status(config)
    click.echo(f'\nUse it:  eval "$(mlplatform local env{_flag(state_dir)})"  &&  kubectl get nodes')


def _flag(state_dir: Path | None) -> str:
    return f" --state-dir {state_dir}" if state_dir else ""


@local.command()
@state_dir_option
@click.option("--keep-state", is_flag=True, help="Keep the state directory (etcd data, certificates, logs).")
def down(state_dir: Path | None, keep_state: bool) -> None:
    """Stop every process of the local cluster and remove its state."""
    cluster.down(
        LocalConfig(state_dir=_state_dir(state_dir), cache_dir=default_cache_dir()),
        keep_state=keep_state,
        log=_progress,
    )


def _print_status(config: LocalConfig) -> None:
    click.echo(f"cluster    {config.state_dir}")
    click.echo(f"apiserver  {config.apiserver_url}")
    if config.stack:
        click.echo(f"mlflow     {endpoints(config).tracking_uri}")
    for service in cluster.status(config):
        state = f"running (pid {service.pid})" if service.pid else "stopped"
        click.echo(f"  {service.name:<26} {state}")


@local.command()
@state_dir_option
def status(state_dir: Path | None) -> None:
    """Show which processes of the local cluster run; exit 1 if any is stopped."""
    config = _saved(_state_dir(state_dir))
    _print_status(config)
    if any(s.pid is None for s in cluster.status(config)):
        sys.exit(1)


@local.command()
@state_dir_option
def env(state_dir: Path | None) -> None:
    """Print `export` lines for a shell: eval "$(mlplatform local env)"."""
    for line in cluster.env_lines(_saved(_state_dir(state_dir))):
        click.echo(line)


@local.command()
@click.option("--no-node", is_flag=True, help="Only what the control plane alone needs.")
def build(no_node: bool) -> None:
    """Build every Go binary the local platform needs into the cache (done by `up` when needed)."""
    config = LocalConfig(state_dir=default_state_dir(), cache_dir=default_cache_dir(), node=not no_node)
    cluster.build(config, log=_progress)
