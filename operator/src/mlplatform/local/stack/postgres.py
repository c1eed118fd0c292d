"""PostgreSQL for the MLflow stack: Debian's server, with its own data directory, port and socket directory.

PostgreSQL refuses to run as root. As root, we run it as an unprivileged system account: Debian's
`postgres` (made by the postgresql package), or else a `mlplatform` system account created on first use.
That account may not traverse a root-only home (/root is 0700) to reach the state directory, so the
server gets one capability, CAP_DAC_READ_SEARCH (read and traverse, never write), and nothing else; it
writes only to its own data and socket directories. As any other user it simply runs as that user.

The MLflow role's password never reaches the server in clear text: the role is created in single-user
mode, before the server ever listens, with a SCRAM verifier computed here.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlplatform.local.config import LocalConfig, StateLayout
from mlplatform.local.errors import LocalError
from mlplatform.local.platform import Log, is_root
from mlplatform.local.processes import Check, ProcessSpec

SERVICE = "postgres"
DATABASE = "mlflow"
DATABASE_USER = "mlflow"
SUPERUSER = "postgres"
SERVICE_ACCOUNTS = ("postgres", "mlplatform")  # Debian's account first, else our own
POSTGRES_ROOT = Path("/usr/lib/postgresql")


@dataclass(frozen=True)
class Account:
    """The system account PostgreSQL runs as when we are root."""

    name: str
    uid: int
    gid: int


def bindir(root: Path = POSTGRES_ROOT) -> Path:
    """The bin directory of the newest Debian PostgreSQL server installed."""
    candidates = [p.parent for p in root.glob("*/bin/postgres") if re.fullmatch(r"\d+", p.parent.parent.name)]
    if not candidates:
        raise LocalError(
            f"no PostgreSQL server in {root}/<version>/bin; install Debian's `postgresql` package "
            "(make deps does, as root)"
        )
    return max(candidates, key=lambda p: int(p.parent.name))


def find_account() -> Account | None:
    for name in SERVICE_ACCOUNTS:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return Account(name, entry.pw_uid, entry.pw_gid)
    return None


def useradd_argv(name: str) -> list[str]:
    return [
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        "--comment",
        "mlplatform local services",
        name,
    ]


def ensure_account(log: Log) -> Account | None:
    """The account PostgreSQL runs as: None when we are not root (it then runs as us)."""
    if not is_root():
        return None
    if (account := find_account()) is not None:
        return account
    name = SERVICE_ACCOUNTS[-1]
    result = subprocess.run(useradd_argv(name), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LocalError(
            f"cannot create the system account {name!r} PostgreSQL runs as: {result.stderr.strip()}"
        )
    log(f"created system account {name!r} to run PostgreSQL (it refuses to run as root)")
    account = find_account()
    if account is None:
        raise LocalError(f"the system account {name!r} was created but cannot be found")
    return account


def run_as(account: Account | None) -> list[str]:
    """The prefix that drops root for `account`: its uid and gid, no groups, one read-only capability."""
    if account is None:
        return []
    caps = "-all,+dac_read_search"
    return [
        "setpriv",
        f"--reuid={account.uid}",
        f"--regid={account.gid}",
        "--clear-groups",
        "--no-new-privs",
        f"--bounding-set={caps}",
        f"--inh-caps={caps}",
        f"--ambient-caps={caps}",
    ]


def initdb_argv(bin_dir: Path, data_dir: Path) -> list[str]:
    return [
        str(bin_dir / "initdb"),
        f"--pgdata={data_dir}",
        f"--username={SUPERUSER}",
        "--auth-local=trust",  # the socket directory is private to root and the server's account
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
        "--no-locale",
        "--no-instructions",
    ]


def bootstrap_sql(password_verifier: str) -> str:
    """The MLflow role and its database; `-j` single-user mode ends a statement with ';' and a blank line."""
    return (
        f"CREATE ROLE {DATABASE_USER} LOGIN PASSWORD '{password_verifier}';\n\n"
        f"CREATE DATABASE {DATABASE} OWNER {DATABASE_USER};\n\n"
    )


def single_user_argv(bin_dir: Path, data_dir: Path) -> list[str]:
    return [str(bin_dir / "postgres"), "--single", "-j", "-D", str(data_dir), "postgres"]


def hba_conf(config: LocalConfig) -> str:
    """Who may connect: root and the server's account over the socket; MLflow's role by password over TCP."""
    networks = ["127.0.0.1/32"]
    if config.node:  # host processes and pods reach the server on the node's host address
        networks.append(config.network.cluster_cidr)
    lines = [
        "# Written by mlplatform local; rewritten on every `up`.",
        "# TYPE  DATABASE  USER  ADDRESS  METHOD",
        "local   all       all            trust",
        *(f"host    all       all   {network}  scram-sha-256" for network in networks),
    ]
    return "\n".join(lines) + "\n"


def server_argv(bin_dir: Path, config: LocalConfig, layout: StateLayout) -> list[str]:
    return [
        str(bin_dir / "postgres"),
        "-D",
        str(layout.postgres_data),
        "-p",
        str(config.ports.postgres),
        "-c",
        f"listen_addresses={config.bind_address}",
        "-c",
        f"unix_socket_directories={layout.postgres_socket}",
        "-c",
        "unix_socket_permissions=0700",
        "-c",
        "password_encryption=scram-sha-256",
    ]


def process_spec(config: LocalConfig, layout: StateLayout) -> ProcessSpec:
    return ProcessSpec(
        SERVICE, [*run_as(find_account() if is_root() else None), *server_argv(bindir(), config, layout)]
    )


def readiness(config: LocalConfig) -> Check:
    """Ready when the server accepts connections on its TCP address (pg_isready)."""
    argv = [
        str(bindir() / "pg_isready"),
        f"--host={config.bind_address}",
        f"--port={config.ports.postgres}",
        f"--dbname={DATABASE}",
        "--timeout=2",
    ]

    def check() -> str | None:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
        return (
            None
            if result.returncode == 0
            else (result.stdout.strip() or f"pg_isready exit {result.returncode}")
        )

    return check


def _own(path: Path, account: Account | None) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    if account is not None:
        os.chown(path, account.uid, account.gid)


def _run(argv: Sequence[str], what: str, stdin: str | None = None) -> None:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False, timeout=300)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise LocalError(f"{what} failed (exit {result.returncode})", details=tail)


def initialize(layout: StateLayout, password_verifier: str, account: Account | None, log: Log) -> None:
    """Create the data directory with the MLflow role and database, atomically: all of it or nothing."""
    staging = layout.postgres / "data.init"
    shutil.rmtree(staging, ignore_errors=True)
    _own(staging, account)
    bin_dir = bindir()
    try:
        _run([*run_as(account), *initdb_argv(bin_dir, staging)], "initdb")
        _run(
            [*run_as(account), *single_user_argv(bin_dir, staging)],
            "creating the MLflow database",
            stdin=bootstrap_sql(password_verifier),
        )
        staging.rename(layout.postgres_data)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"initialized PostgreSQL data directory {layout.postgres_data}")


def prepare(config: LocalConfig, layout: StateLayout, password_verifier: str, log: Log) -> None:
    """Directories, account and data directory of the server; idempotent."""
    account = ensure_account(log)
    layout.postgres.mkdir(mode=0o755, parents=True, exist_ok=True)
    if not (layout.postgres_data / "PG_VERSION").exists():
        shutil.rmtree(layout.postgres_data, ignore_errors=True)
        initialize(layout, password_verifier, account, log)
    _own(layout.postgres_socket, account)
    hba = layout.postgres_data / "pg_hba.conf"
    hba.write_text(hba_conf(config))
    if account is not None:
        os.chown(hba, account.uid, account.gid)
