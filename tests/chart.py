"""The platform chart as tests use it: rendered with the session's helm, its objects picked apart."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "mlplatform"
Manifest = dict[str, Any]
WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}


def helm(helm_bin: Path, *args: str, kubeconfig: Path | None = None, check: bool = True) -> str:
    """Run helm; a failure raises with helm's own message."""
    config = [f"--kubeconfig={kubeconfig}"] if kubeconfig else []
    done = subprocess.run(
        [str(helm_bin), *config, *args], capture_output=True, text=True, check=False, timeout=900
    )
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args[:3])} failed: {done.stderr.strip()}")
    return done.stdout


def set_args(values: Mapping[str, Any]) -> list[str]:
    """`--set`/`--set-string` arguments for flat dotted keys."""
    args: list[str] = []
    for key, value in values.items():
        if isinstance(value, bool):
            args += ["--set", f"{key}={str(value).lower()}"]
        elif isinstance(value, int):
            args += ["--set", f"{key}={value}"]
        elif isinstance(value, list):
            args += ["--set", f"{key}={{{','.join(value)}}}"]
        else:
            args += ["--set-string", f"{key}={value}"]
    return args


def render(helm_bin: Path, values: Mapping[str, Any] | None = None, namespace: str = "mlp") -> list[Manifest]:
    """Every object `helm template` renders (hooks and test pods included)."""
    out = helm(helm_bin, "template", "mlp", str(CHART), "--namespace", namespace, *set_args(values or {}))
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render_error(helm_bin: Path, values: Mapping[str, Any]) -> str:
    """What helm says when it refuses the values (the test fails if it renders)."""
    out = subprocess.run(
        [str(helm_bin), "template", "mlp", str(CHART), *set_args(values)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode != 0, f"helm rendered values it should refuse: {values}"
    return out.stderr


def find(manifests: Sequence[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, (
        f"expected one {kind} *{name_suffix}, found {[m['metadata']['name'] for m in found]}"
    )
    return found[0]


def pod_specs(manifests: Sequence[Manifest]) -> Iterator[tuple[str, Manifest]]:
    """(kind/name, pod spec) of every pod and pod template."""
    for m in manifests:
        where = f"{m['kind']}/{m['metadata']['name']}"
        if m["kind"] == "Pod":
            yield where, m["spec"]
        elif m["kind"] in WORKLOADS:
            yield where, m["spec"]["template"]["spec"]


def container(manifest: Manifest, name: str) -> Manifest:
    spec = manifest["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def env_of(container_spec: Manifest) -> dict[str, Any]:
    """name -> value, or ("secret", name, key) for a secretKeyRef."""
    env: dict[str, Any] = {}
    for item in container_spec.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        env[item["name"]] = ("secret", ref["name"], ref["key"]) if ref else item.get("value")
    return env
