"""`mlplatform local` on bad input: every failure is one clear line (never a traceback), nothing is left
running, and no user data outside the state directory is ever touched; and a control-plane-only cluster
comes up, reports itself, refuses a second start politely and leaves nothing behind on `down`.

Each test runs the real CLI with its own state directory and ports moved by OFFSET, so it never touches
the cluster in the default state directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mlplatform.local.config import Ports, default_cache_dir
from mlplatform.local.gobuild import BINARIES, MANIFEST, cache_entry, cached_binary

pytestmark = pytest.mark.cluster

MLPLATFORM = Path(sys.executable).parent / "mlplatform"
OFFSET = 3170  # away from the default ports and from the offsets other test sessions tend to pick
PORTS = Ports().shifted(OFFSET)
CONTROL_PLANE_PORTS = (
    PORTS.etcd_client,
    PORTS.etcd_peer,
    PORTS.apiserver,
    PORTS.controller_manager,
    PORTS.scheduler,
)
# What `mlplatform local build --no-node` needs: the control plane, its client tools and the stack's MinIO.
BUILD_NO_NODE = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "helm",
    "minio",
)


def mlplatform(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "MLPLATFORM_STATE_DIR"}
    return subprocess.run(
        [str(MLPLATFORM), *args],
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def up(state_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return mlplatform(
        "local", "up", "--no-node", "--no-stack", "--state-dir", str(state_dir),
        "--port-offset", str(OFFSET), env=env,
    )  # fmt: skip


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The error lines of a failed run; fails if it printed a traceback."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("mlplatform: error:")]


def processes_naming(path: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(str(path) in arg for arg in cmdline):
            found.append(f"{proc.info['pid']}: {' '.join(cmdline)}")
    return found


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def users_folder(folder: Path) -> dict[str, bytes]:
    """A folder of a user's own files (not a cluster's); returns what it holds."""
    (folder / "data").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "data" / "results.csv").write_text("run,rmse\n1,0.74\n")
    (folder / "config.json").write_text('{"mine": true}\n')  # a name our state also uses
    return snapshot(folder)


def path_without_go() -> str:
    return os.pathsep.join(
        d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "go").exists()
    )


@pytest.fixture
def free_ports() -> None:
    """The control plane's ports at OFFSET must be free on loopback for these tests."""
    for port in CONTROL_PLANE_PORTS:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                pytest.skip(f"port {port} (offset {OFFSET}) is in use by something else on this machine")


def test_unknown_subcommand_is_one_usage_error_line() -> None:
    result = mlplatform("local", "frobnicate")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mlplatform: error:")
    assert "frobnicate" in lines[0]
    assert error_lines(result) == lines


def test_port_already_taken_names_the_port_and_component_and_touches_nothing(
    tmp_path: Path, free_ports: None
) -> None:
    state = tmp_path / "state"
    before = users_folder(state)
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT left is no conflict
        holder.bind(("127.0.0.1", PORTS.apiserver))
        holder.listen()
        result = up(state)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert error_lines(result) == lines
    assert str(PORTS.apiserver) in lines[0] and "kube-apiserver" in lines[0]
    assert not processes_naming(state)
    assert snapshot(state) == before  # the user's files untouched, nothing of ours written


def test_missing_go_toolchain_with_an_empty_cache_is_one_line_naming_go(
    tmp_path: Path, free_ports: None
) -> None:
    state, cache = tmp_path / "state", tmp_path / "cache"
    env = {"MLPLATFORM_CACHE_DIR": str(cache), "PATH": path_without_go()}
    result = up(state, env)
    assert result.returncode == 1
    [error] = error_lines(result)
    assert error == result.stderr.strip().splitlines()[-1]
    assert "'go'" in error and "not on PATH" in error
    assert not processes_naming(state)
    assert not [p.name for p in (cache / "bin").iterdir() if "etcd" in p.name]  # nothing half-built left
    down = mlplatform("local", "down", "--state-dir", str(state), env=env)
    assert down.returncode == 0, down.stderr
    assert not state.exists()


def damaged_cache(tmp_path: Path) -> tuple[Path, Path]:
    """A cache whose sound entries are the real ones, and whose etcd is a damaged copy."""
    real = default_cache_dir()
    cache = tmp_path / "cache"
    (cache / "bin").mkdir(parents=True)
    for name in BUILD_NO_NODE:
        path, problem = cached_binary(BINARIES[name], real)
        if problem is not None:
            pytest.skip(
                f"the real cache in {real} has no sound {name} ({problem}); run `mlplatform local build`"
            )
        entry = cache / "bin" / path.parent.name
        if name == "etcd":
            shutil.copytree(path.parent, entry)
        else:
            entry.symlink_to(path.parent)  # read only: never rebuilt, so never written through
    damaged = cache_entry(BINARIES["etcd"], cache) / "etcd"
    with damaged.open("r+b") as handle:
        handle.seek(damaged.stat().st_size // 2)
        middle = handle.read(16)
        handle.seek(-len(middle), os.SEEK_CUR)
        handle.write(bytes(b ^ 0xFF for b in middle))
    assert cached_binary(BINARIES["etcd"], cache)[1] == "its checksum does not match"
    return cache, damaged


def test_damaged_cache_entry_is_rebuilt_with_go(tmp_path: Path) -> None:
    cache, damaged = damaged_cache(tmp_path)
    corrupted = hashlib.sha256(damaged.read_bytes()).hexdigest()
    started = time.monotonic()
    result = mlplatform("local", "build", "--no-node", env={"MLPLATFORM_CACHE_DIR": str(cache)})
    print(f"rebuilding the damaged etcd took {time.monotonic() - started:.1f}s")
    assert result.returncode == 0, result.stderr
    assert not error_lines(result)
    assert "etcd" in result.stderr and "damaged (its checksum does not match); rebuilding" in result.stderr
    path, problem = cached_binary(BINARIES["etcd"], cache)
    assert (path, problem) == (damaged, None)
    manifest = json.loads((path.parent / MANIFEST).read_text())
    rebuilt = hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["sha256"] == rebuilt != corrupted
    assert manifest["version"] == BINARIES["etcd"].version
    version = subprocess.run(
        [str(path), "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    assert version.returncode == 0 and BINARIES["etcd"].version.removeprefix("v") in version.stdout
    assert not [p for p in (cache / "bin").iterdir() if p.name.startswith(".etcd-")]  # no staging left


def test_damaged_cache_entry_without_go_is_one_clear_line(tmp_path: Path) -> None:
    cache, _ = damaged_cache(tmp_path)
    result = mlplatform(
        "local", "build", "--no-node", env={"MLPLATFORM_CACHE_DIR": str(cache), "PATH": path_without_go()}
    )
    assert result.returncode == 1
    [error] = error_lines(result)
    assert error == result.stderr.strip().splitlines()[-1]
    assert "'go'" in error
    assert "damaged" in result.stderr  # the user learns why a build was needed at all


def test_a_users_folder_is_refused_as_state_and_survives_up_and_down(
    tmp_path: Path, free_ports: None
) -> None:
    state = tmp_path / "thesis"
    before = users_folder(state)
    result = up(state)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert error_lines(result) == lines
    assert str(state) in lines[0] and "not a local cluster's" in lines[0]
    assert snapshot(state) == before
    assert not processes_naming(state)
    down = mlplatform("local", "down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr  # its config.json is the user's, not a cluster's
    assert f"no local cluster in {state}" in down.stderr
    assert snapshot(state) == before


def test_down_on_a_folder_that_never_was_a_cluster_deletes_nothing(tmp_path: Path) -> None:
    never = tmp_path / "never"
    result = mlplatform("local", "down", "--state-dir", str(never))
    assert result.returncode == 0, result.stderr
    assert f"no local cluster in {never}" in result.stderr
    assert not never.exists()  # not even created

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "keep.txt").write_text("keep me\n")
    result = mlplatform("local", "down", "--state-dir", str(plain))
    assert result.returncode == 0, result.stderr
    assert f"no local cluster in {plain}" in result.stderr
    assert (plain / "keep.txt").read_text() == "keep me\n"

    status = mlplatform("local", "status", "--state-dir", str(plain))
    assert status.returncode == 1
    assert error_lines(status) == status.stderr.strip().splitlines()
    assert "no local cluster" in status.stderr


@pytest.fixture
def lifecycle_state(tmp_path: Path, free_ports: None) -> Iterator[Path]:
    state = tmp_path / "cluster"
    try:
        yield state
    finally:
        if state.exists():
            mlplatform("local", "down", "--state-dir", str(state))


def readyz(state: Path) -> str:
    result = subprocess.run(
        [str(state / "bin" / "kubectl"), f"--kubeconfig={state / 'kubeconfig'}", "get", "--raw", "/readyz"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return result.stdout.strip() if result.returncode == 0 else result.stderr


def test_control_plane_lifecycle_up_status_up_again_down_and_a_warm_up(lifecycle_state: Path) -> None:
    state = lifecycle_state
    first = up(state)
    assert first.returncode == 0, first.stderr
    assert "local cluster ready in" in first.stderr
    assert readyz(state) == "ok"
    assert f"https://127.0.0.1:{PORTS.apiserver}" in first.stdout

    status = mlplatform("local", "status", "--state-dir", str(state))
    assert status.returncode == 0, status.stdout + status.stderr
    for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert any(line.split()[:2] == [component, "running"] for line in status.stdout.splitlines()), (
            component
        )

    started = time.monotonic()
    again = up(state)
    second_up = time.monotonic() - started
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert second_up < 30, f"a second `up` of a running cluster took {second_up:.1f}s"

    down = mlplatform("local", "down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    assert not state.exists()
    assert not processes_naming(state)

    started = time.monotonic()
    warm = up(state)
    warm_up = time.monotonic() - started
    print(f"warm `mlplatform local up --no-node --no-stack` after `down`: {warm_up:.1f}s wall time")
    assert warm.returncode == 0, warm.stderr
    assert "building" not in warm.stderr  # every binary came from the cache
    assert readyz(state) == "ok"
    final = mlplatform("local", "down", "--state-dir", str(state))
    assert final.returncode == 0, final.stderr
    assert not state.exists() and not processes_naming(state)
