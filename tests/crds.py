"""The CustomResourceDefinitions of crds/, loaded for unit tests and installed on the session cluster.

CRDs are cluster-scoped and every test that needs one applies the same files, so installing is
idempotent (server-side apply with one field manager) and never deletes anything.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from kube import eventually, kubectl

CRDS_DIR = Path(__file__).resolve().parent.parent / "crds"
FIELD_MANAGER = "mlplatform-tests"


def crd_files() -> list[Path]:
    """Every YAML file in crds/, sorted."""
    return sorted(p for p in CRDS_DIR.iterdir() if p.suffix in (".yaml", ".yml"))


def load_crds() -> dict[str, dict[str, Any]]:
    """Every CustomResourceDefinition in crds/, by name."""
    crds: dict[str, dict[str, Any]] = {}
    for path in crd_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert doc.get("kind") == "CustomResourceDefinition", f"{path.name}: not a CRD"
                crds[doc["metadata"]["name"]] = doc
    return crds


def install_crds(kubectl_bin: Path, kubeconfig: Path, timeout: float = 60) -> list[str]:
    """Apply every file in crds/ server-side, wait until each CRD is Established and its resource is
    served, and return their names."""
    for path in crd_files():
        kubectl(
            kubectl_bin,
            kubeconfig,
            "apply",
            "--server-side",
            "--force-conflicts",
            f"--field-manager={FIELD_MANAGER}",
            "-f",
            str(path),
        )
    crds = load_crds()
    kubectl(
        kubectl_bin,
        kubeconfig,
        "wait",
        "--for=condition=Established",
        f"--timeout={int(timeout)}s",
        *(f"customresourcedefinition/{name}" for name in crds),
    )
    for name in crds:
        # Established comes a moment before kubectl's discovery lists the resource: wait until it is served.
        eventually(partial(_served, kubectl_bin, kubeconfig, name), timeout=timeout, what=f"{name} served")
    return list(crds)


def _served(kubectl_bin: Path, kubeconfig: Path, resource: str) -> bool:
    listed = kubectl(kubectl_bin, kubeconfig, "get", resource, "--all-namespaces", "-o", "name", check=False)
    return listed.returncode == 0


# --- manifests edited one field at a time, as the CRD tests refuse or accept them ----------------------
Spec = dict[str, Any]
Change = Callable[[Spec], None]


def our_object(kind: str, name: str, spec: Spec) -> dict[str, Any]:
    return {"apiVersion": "mlplatform.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def edited(spec: Spec, change: Change) -> Spec:
    """A deep copy of `spec` with `change` made to it."""
    copied = copy.deepcopy(spec)
    change(copied)
    return copied


def set_field(path: str, value: Any) -> Change:
    """Set the dotted `path` (creating what is missing on the way) to `value`."""

    def change(spec: Spec) -> None:
        *parents, last = path.split(".")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return change


def delete_field(path: str) -> Change:
    def change(spec: Spec) -> None:
        *parents, last = path.split(".")
        node = spec
        for part in parents:
            node = node[part]
        del node[last]

    return change


def apply_manifest(run_kubectl: Callable[..., Any], namespace: str, manifest: dict[str, Any]) -> Any:
    """`kubectl apply` the manifest; the completed process, whether it was accepted or not."""
    return run_kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest), check=False)


def assert_refused(
    run_kubectl: Callable[..., Any], namespace: str, manifest: dict[str, Any], expected: list[str]
) -> None:
    """`kubectl apply` refuses the manifest with a message holding each of `expected`, and stores nothing."""
    result = apply_manifest(run_kubectl, namespace, manifest)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    message = " ".join(result.stderr.split())
    for part in expected:
        assert part in message, f"{part!r} not in: {message}"
    kind = manifest["kind"].lower()
    assert run_kubectl("get", kind, "-n", namespace, "-o", "name").stdout.strip() == ""
