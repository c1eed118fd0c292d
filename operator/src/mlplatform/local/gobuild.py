"""Build the platform's Go components from their pinned modules, once, into a cache keyed by version.

Each wrapper module under `gomod/` pins one upstream release in its go.mod and go.sum: that file is the
single place a version is set. A binary is cached under `<cache>/bin/<name>-<version>-<hash>/`, with a
manifest holding its checksum, so a later run reuses it in milliseconds and a damaged one is rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mlplatform.local.errors import LocalError

GOMOD_ROOT = Path(__file__).parent / "gomod"
MANIFEST = "manifest.json"
Log = Callable[[str], None]


@dataclass(frozen=True)
class GoBinary:
    """One binary built from a wrapper module."""

    name: str
    wrapper: str  # folder under gomod/
    package: str  # the Go package of its main
    pinned_module: str  # the upstream module whose version the wrapper pins

    @property
    def wrapper_dir(self) -> Path:
        return GOMOD_ROOT / self.wrapper

    @property
    def version(self) -> str:
        return pinned_version(self.wrapper_dir / "go.mod", self.pinned_module)


def pinned_version(go_mod: Path, module: str) -> str:
    """The version that `go_mod` requires of `module`."""
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod.read_text(), re.MULTILINE)
    if not match:
        raise LocalError(f"{go_mod} does not pin {module}")
    return match.group(1)


def _kubernetes_ldflags(version: str) -> list[str]:
    major, minor = version.removeprefix("v").split(".")[:2]
    flags = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return flags


def _minio_ldflags(version: str) -> list[str]:
    # A pseudo-version v0.0.0-YYYYMMDDhhmmss-commit carries the commit time MinIO stamps as its version.
    _, stamp, commit = version.split("-")
    when = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}:{stamp[10:12]}:{stamp[12:14]}Z"
    return [
        f"-X github.com/minio/minio/cmd.Version={when}",
        f"-X github.com/minio/minio/cmd.ReleaseTag=DEVELOPMENT.{when.replace(':', '-')}",
        f"-X github.com/minio/minio/cmd.CommitID={commit}",
        f"-X github.com/minio/minio/cmd.ShortCommitID={commit[:12]}",
    ]


def ldflags(binary: GoBinary) -> list[str]:
    """Linker flags that stamp the pinned version into the binary, as the upstream release build does."""
    version = binary.version
    stamps: dict[str, Callable[[str], list[str]]] = {
        "kubernetes": _kubernetes_ldflags,
        "helm": lambda v: [f"-X helm.sh/helm/v3/internal/version.version={v}"],
        "minio": _minio_ldflags,
        "coredns": lambda v: [f"-X github.com/coredns/coredns/coremain.GitCommit={v}"],
        "local-path-provisioner": lambda v: [f"-X main.VERSION={v}"],
    }
    stamp = stamps.get(binary.wrapper)
    return ["-s", "-w", *(stamp(version) if stamp else [])]


KUBERNETES_COMPONENTS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubectl",
)
BINARIES: dict[str, GoBinary] = {
    **{
        name: GoBinary(name, "kubernetes", f"k8s.io/kubernetes/cmd/{name}", "k8s.io/kubernetes")
        for name in KUBERNETES_COMPONENTS
    },
    "etcd": GoBinary("etcd", "etcd", "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3"),
    "helm": GoBinary("helm", "helm", "helm.sh/helm/v3/cmd/helm", "helm.sh/helm/v3"),
    "coredns": GoBinary("coredns", "coredns", "github.com/coredns/coredns", "github.com/coredns/coredns"),
    "minio": GoBinary("minio", "minio", "github.com/minio/minio", "github.com/minio/minio"),
    "local-path-provisioner": GoBinary(
        "local-path-provisioner",
        "local-path-provisioner",
        "github.com/rancher/local-path-provisioner",
        "github.com/rancher/local-path-provisioner",
    ),
}


def cache_entry(binary: GoBinary, cache_dir: Path) -> Path:
    """The cache folder of `binary`: its version, and a hash of everything that shapes the build."""
    digest = hashlib.sha256()
    for part in ("go.mod", "go.sum"):
        digest.update((binary.wrapper_dir / part).read_bytes())
    digest.update(" ".join(ldflags(binary)).encode())
    return cache_dir / "bin" / f"{binary.name}-{binary.version}-{digest.hexdigest()[:10]}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_binary(binary: GoBinary, cache_dir: Path) -> tuple[Path, str | None]:
    """The binary's cache path, and why it cannot be used as it is (None when it is sound)."""
    entry = cache_entry(binary, cache_dir)
    path = entry / binary.name
    if not path.exists():
        return path, "not built yet"
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return path, "its manifest is missing or unreadable"
    if manifest.get("sha256") != _sha256(path):
        return path, "its checksum does not match"
    if not os.access(path, os.X_OK):
        return path, "it is not executable"
    return path, None


@contextlib.contextmanager
def _cache_lock(cache_dir: Path) -> Iterator[None]:
    """One build at a time per cache, so two concurrent `up`s do not build the same binary twice."""
    (cache_dir / "bin").mkdir(parents=True, exist_ok=True)
    with (cache_dir / "bin" / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def go_toolchain() -> str:
    go = shutil.which("go")
    if go is None:
        raise LocalError(
            "the Go toolchain ('go') is not on PATH; it builds the Kubernetes, etcd, helm, CoreDNS, "
            "MinIO and local-path-provisioner binaries once on first use (install Go 1.25 or newer)"
        )
    return go


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@contextlib.contextmanager
def building(name: str, log: Log, every: float = 60) -> Iterator[Callable[[], float]]:
    """While the block runs, say every minute that `name` is still building; yields the elapsed time."""
    started = time.monotonic()
    done = threading.Event()

    def elapsed() -> float:
        return time.monotonic() - started

    def beat() -> None:
        while not done.wait(every):
            log(f"  … still building {name} ({format_seconds(elapsed())})")

    threading.Thread(target=beat, daemon=True).start()
    try:
        yield elapsed
    finally:
        done.set()


def _go_build(binary: GoBinary, output: Path, log: Log) -> None:
    go = go_toolchain()
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}
    argv = [
        go,
        "build",
        "-trimpath",
        "-ldflags",
        " ".join(ldflags(binary)),
        "-o",
        str(output),
        binary.package,
    ]
    with building(binary.name, log) as elapsed:
        result = subprocess.run(
            argv, cwd=binary.wrapper_dir, env=env, capture_output=True, text=True, check=False
        )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise LocalError(
            f"building {binary.name} {binary.version} failed (go build exit {result.returncode})",
            details=tail,
        )
    log(f"built {binary.name} {binary.version} in {format_seconds(elapsed())}")


def ensure_binary(binary: GoBinary, cache_dir: Path, log: Log = print) -> Path:
    """The path of a sound cached `binary`, building it first if it is missing or damaged."""
    path, problem = cached_binary(binary, cache_dir)
    if problem is None:
        return path
    with _cache_lock(cache_dir):
        path, problem = cached_binary(binary, cache_dir)  # another process may have built it meanwhile
        if problem is None:
            return path
        if problem == "not built yet":
            log(f"building {binary.name} {binary.version} from Go modules (first run only) …")
        else:
            log(f"cached {binary.name} {binary.version} is damaged ({problem}); rebuilding it …")
        entry = path.parent
        if entry.exists():
            shutil.rmtree(entry)
        staging = Path(tempfile.mkdtemp(prefix=f".{binary.name}-", dir=entry.parent))
        try:
            _go_build(binary, staging / binary.name, log)
            manifest = {
                "name": binary.name,
                "version": binary.version,
                "sha256": _sha256(staging / binary.name),
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
            staging.rename(entry)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return path


def ensure_binaries(names: list[str], cache_dir: Path, log: Log = print) -> dict[str, Path]:
    return {name: ensure_binary(BINARIES[name], cache_dir, log) for name in names}
