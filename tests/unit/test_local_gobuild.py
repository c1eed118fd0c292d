"""The Go build's inputs and its cache: every wrapper pins its release and replaces what the upstream
module points at locally, versions are stamped into the binaries, and a damaged cache entry is noticed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mlplatform.local.errors import LocalError
from mlplatform.local.gobuild import (
    BINARIES,
    GOMOD_ROOT,
    MANIFEST,
    cache_entry,
    cached_binary,
    ldflags,
    pinned_version,
)

WRAPPERS = sorted({b.wrapper for b in BINARIES.values()})
SEMVER = re.compile(r"^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+incompatible)?$")


def module_blocks(go_mod: str, directive: str) -> list[str]:
    """The lines of `directive` (require or replace), in blocks or single-line form, comments dropped."""
    lines: list[str] = []
    inside = False
    for raw in go_mod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if inside:
            if line == ")":
                inside = False
            elif line:
                lines.append(line)
        elif line == f"{directive} (":
            inside = True
        elif line.startswith(f"{directive} "):
            lines.append(line.removeprefix(f"{directive} ").strip())
    return lines


def requires(go_mod: str) -> dict[str, str]:
    return dict(line.split()[:2] for line in module_blocks(go_mod, "require"))  # type: ignore[misc]


def replaces(go_mod: str) -> dict[str, str]:
    found = {}
    for line in module_blocks(go_mod, "replace"):
        old, new = (part.strip() for part in line.split("=>"))
        found[old.split()[0]] = new
    return found


def test_every_wrapper_pins_its_module_to_a_version() -> None:
    assert set(WRAPPERS) == {p.name for p in GOMOD_ROOT.iterdir() if (p / "go.mod").is_file()}
    for binary in BINARIES.values():
        go_mod = (binary.wrapper_dir / "go.mod").read_text()
        version = pinned_version(binary.wrapper_dir / "go.mod", binary.pinned_module)
        assert SEMVER.match(version), f"{binary.wrapper}: {version}"
        assert requires(go_mod)[binary.pinned_module] == version
        assert (binary.wrapper_dir / "go.sum").read_text().count(f"{binary.pinned_module} {version}") >= 1


def test_pinned_version_reads_require_blocks_and_single_lines(tmp_path: Path) -> None:
    go_mod = tmp_path / "go.mod"
    go_mod.write_text(
        "module x\n\nrequire example.com/single v1.2.3\n\n"
        "require (\n\texample.com/single/v2 v2.0.0 // indirect\n\texample.com/other v0.1.0\n)\n"
        "replace example.com/other => example.com/other v0.1.1\n"
    )
    assert pinned_version(go_mod, "example.com/single") == "v1.2.3"
    assert pinned_version(go_mod, "example.com/single/v2") == "v2.0.0"
    assert pinned_version(go_mod, "example.com/other") == "v0.1.0"
    with pytest.raises(LocalError, match=r"does not pin example\.com/absent"):
        pinned_version(go_mod, "example.com/absent")


def test_kubernetes_wrapper_replaces_staging_modules_with_the_matching_release() -> None:
    """Each replace of a k8s.io staging module names the v0.<minor>.<patch> of the pinned v1 release."""
    wrapper = BINARIES["kube-apiserver"].wrapper_dir / "go.mod"
    version = pinned_version(wrapper, "k8s.io/kubernetes")
    staging_version = "v0." + version.removeprefix("v1.")
    replaced = replaces(wrapper.read_text())
    assert len(replaced) >= 25
    for module, target in replaced.items():
        assert target == f"{module} {staging_version}", module


def _escaped(module: str) -> str:
    """A module path as the module cache spells it (upper-case letters become !lower-case)."""
    return re.sub(r"[A-Z]", lambda m: "!" + m.group(0).lower(), module)


def _gomodcache() -> Path | None:
    go = shutil.which("go")
    if go is None:
        return None
    result = subprocess.run(
        [go, "env", "GOMODCACHE"], capture_output=True, text=True, check=False, timeout=30
    )
    return Path(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip() else None


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_wrapper_replaces_every_module_its_upstream_points_at_locally(wrapper: str) -> None:
    """k8s.io/kubernetes points its staging modules at ./staging (etcd its siblings at ../): a module
    consumer lacks those folders, so the wrapper must replace each such required module by a release."""
    binary = next(b for b in BINARIES.values() if b.wrapper == wrapper)
    cache = _gomodcache()
    if cache is None:
        pytest.skip("no Go toolchain on PATH: cannot locate the module cache (GOMODCACHE)")
    upstream = cache / "cache" / "download" / _escaped(binary.pinned_module) / "@v" / f"{binary.version}.mod"
    if not upstream.is_file():
        pytest.skip(
            f"{binary.pinned_module} {binary.version} is not in the module cache ({upstream} missing)"
        )
    upstream_mod = upstream.read_text()
    local = {
        module
        for module, target in replaces(upstream_mod).items()
        if target.startswith(("./", "../")) and module in requires(upstream_mod)
    }
    wrapper_replaces = replaces((binary.wrapper_dir / "go.mod").read_text())
    missing = sorted(local - set(wrapper_replaces))
    assert not missing, f"{wrapper}/go.mod lacks replace lines for {missing}"
    for module in local:
        target_module, _, target_version = wrapper_replaces[module].partition(" ")
        assert target_module == module and SEMVER.match(target_version), wrapper_replaces[module]
    if wrapper == "kubernetes":
        staging = {m for m, v in requires(upstream_mod).items() if m.startswith("k8s.io/") and v == "v0.0.0"}
        assert staging and staging <= local  # every staging module is required at v0.0.0 and replaced


def test_ldflags_stamp_the_pinned_version() -> None:
    kube = BINARIES["kube-apiserver"]
    flags = " ".join(ldflags(kube))
    version = kube.version
    major, minor = version.removeprefix("v").split(".")[:2]
    assert f"-X k8s.io/component-base/version.gitVersion={version}" in flags
    assert f"-X k8s.io/client-go/pkg/version.gitVersion={version}" in flags
    assert f"-X k8s.io/component-base/version.gitMajor={major}" in flags
    assert f"-X k8s.io/component-base/version.gitMinor={minor}" in flags
    assert ldflags(kube)[:2] == ["-s", "-w"]
    assert f"-X helm.sh/helm/v3/internal/version.version={BINARIES['helm'].version}" in ldflags(
        BINARIES["helm"]
    )
    minio = " ".join(ldflags(BINARIES["minio"]))
    commit = BINARIES["minio"].version.rsplit("-", 1)[1]
    assert f"-X github.com/minio/minio/cmd.CommitID={commit}" in minio
    assert re.search(r"cmd\.Version=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", minio)
    assert f"coremain.GitCommit={BINARIES['coredns'].version}" in " ".join(ldflags(BINARIES["coredns"]))
    provisioner = BINARIES["local-path-provisioner"]
    assert f"-X main.VERSION={provisioner.version}" in ldflags(provisioner)


def test_cache_entries_are_keyed_by_name_version_and_build_inputs(tmp_path: Path) -> None:
    apiserver, kubectl = (
        cache_entry(BINARIES["kube-apiserver"], tmp_path),
        cache_entry(BINARIES["kubectl"], tmp_path),
    )
    assert apiserver.parent == tmp_path / "bin"
    assert apiserver.name.startswith(f"kube-apiserver-{BINARIES['kube-apiserver'].version}-")
    assert apiserver.name.rsplit("-", 1)[1] == kubectl.name.rsplit("-", 1)[1]  # same wrapper, same inputs
    assert cache_entry(BINARIES["etcd"], tmp_path).name.rsplit("-", 1)[1] != apiserver.name.rsplit("-", 1)[1]


def test_cached_binary_reports_each_kind_of_damage(tmp_path: Path) -> None:
    binary = BINARIES["etcd"]
    path, problem = cached_binary(binary, tmp_path)
    assert (path, problem) == (cache_entry(binary, tmp_path) / "etcd", "not built yet")

    path.parent.mkdir(parents=True)
    path.write_bytes(b"#!/bin/sh\necho etcd\n")
    path.chmod(0o755)
    assert cached_binary(binary, tmp_path)[1] == "its manifest is missing or unreadable"
    manifest = path.parent / MANIFEST
    manifest.write_text("{not json")
    assert cached_binary(binary, tmp_path)[1] == "its manifest is missing or unreadable"

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest.write_text(json.dumps({"name": "etcd", "version": binary.version, "sha256": digest}))
    assert cached_binary(binary, tmp_path) == (path, None)

    with path.open("ab") as handle:
        handle.write(b"# one flipped byte is enough\n")
    assert cached_binary(binary, tmp_path)[1] == "its checksum does not match"

    path.write_bytes(b"#!/bin/sh\necho etcd\n")
    path.chmod(0o644)
    if os.geteuid() == 0:
        # root may execute a file if any execute bit is set; with none set, even root may not.
        assert not os.access(path, os.X_OK)
    assert cached_binary(binary, tmp_path)[1] == "it is not executable"
