"""Persistent volumes of the local node: rancher's local-path-provisioner behind a default StorageClass.

The provisioner (the one kind ships) runs on the host with its own client certificate. For each claim of
the `standard` class, once the scheduler has picked the node, it runs a helper pod (image busybox) that
makes a world-writable folder under the state directory's `volumes/`, and publishes a hostPath
PersistentVolume pinned to the node; deleting the claim runs the teardown helper, which removes the
folder. The folders live in the state directory, so `down` removes them with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mlplatform.local import pki
from mlplatform.local.config import StateLayout
from mlplatform.local.controlplane import kubectl_apply
from mlplatform.local.kubeconfig import write_kubeconfig
from mlplatform.local.platform import Context, Service
from mlplatform.local.processes import Check, ProcessSpec

PROVISIONER = "local-path-provisioner"  # the binary, the service and its client certificate
PROVISIONER_NAME = "rancher.io/local-path"
PROVISIONER_USER = "system:local-path-provisioner"
NAMESPACE = "local-path-storage"
CONFIG_MAP = "local-path-config"
SERVICE_ACCOUNT = "local-path-provisioner-service-account"  # the helper pods run as it
ROLE = "local-path-provisioner-role"
BINDING = "local-path-provisioner-bind"
STORAGE_CLASS = "standard"
HELPER_IMAGE = "busybox"
DEFAULT_NODE = "DEFAULT_PATH_FOR_NON_LISTED_NODES"
READY_LINE = "Started provisioner controller"  # logged once its informers have synced
RBAC = "rbac.authorization.k8s.io"
Manifest = dict[str, Any]

# The helper pod's scripts, as upstream's deploy/local-path-storage.yaml has them.
SETUP_SCRIPT = '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n'
TEARDOWN_SCRIPT = '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n'


def volumes_dir(layout: StateLayout) -> Path:
    """Where provisioned volumes live: inside the state directory, so `down` removes them with it."""
    return layout.root / "volumes"


def provisioner_config(volumes: Path) -> Manifest:
    """config.json: every node keeps its volumes under `volumes`."""
    return {"nodePathMap": [{"node": DEFAULT_NODE, "paths": [str(volumes)]}]}


def helper_pod() -> Manifest:
    """helperPod.yaml: the template the provisioner completes with the scripts, the folder and the node."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "helper-pod"},
        "spec": {
            "priorityClassName": "system-node-critical",
            "tolerations": [
                {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "containers": [{"name": "helper-pod", "image": HELPER_IMAGE, "imagePullPolicy": "IfNotPresent"}],
        },
    }


def config_map(volumes: Path) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "namespace": NAMESPACE},
        "data": {
            "config.json": json.dumps(provisioner_config(volumes), indent=2),
            "setup": SETUP_SCRIPT,
            "teardown": TEARDOWN_SCRIPT,
            "helperPod.yaml": yaml.safe_dump(helper_pod(), sort_keys=False),
        },
    }


def storage_class() -> Manifest:
    """The default class, named as kind names its own: claims without a class land here."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER_NAME,
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
    }


def _role(kind: str, rules: list[Manifest], namespace: str | None = None) -> Manifest:
    metadata = {"name": ROLE, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": f"{RBAC}/v1", "kind": kind, "metadata": metadata, "rules": rules}


def _binding(kind: str, role_kind: str, namespace: str | None = None) -> Manifest:
    metadata = {"name": BINDING, **({"namespace": namespace} if namespace else {})}
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": ROLE},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": PROVISIONER_USER}],
    }


def rbac_objects() -> list[Manifest]:
    """Upstream's roles, bound to the provisioner's user (it runs on the host, not as a pod)."""
    read = ["get", "list", "watch"]
    cluster_rules = [
        {
            "apiGroups": [""],
            "resources": ["nodes", "persistentvolumeclaims", "configmaps", "pods", "pods/log"],
            "verbs": read,
        },
        {
            "apiGroups": [""],
            "resources": ["persistentvolumes"],
            "verbs": [*read, "create", "patch", "update", "delete"],
        },
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": read},
    ]
    pod_rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": [*read, "create", "patch", "update", "delete"]}
    ]
    return [
        _role("ClusterRole", cluster_rules),
        _binding("ClusterRoleBinding", "ClusterRole"),
        _role("Role", pod_rules, NAMESPACE),
        _binding("RoleBinding", "Role", NAMESPACE),
    ]


def storage_objects(volumes: Path) -> list[Manifest]:
    """Everything the provisioner needs in the cluster before it starts, and the class it serves."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE},
        },
        *rbac_objects(),
        config_map(volumes),
        storage_class(),
    ]


def provisioner_argv(binary: Path, kubeconfig: Path) -> list[str]:
    return [
        str(binary),
        "start",
        f"--kubeconfig={kubeconfig}",
        f"--provisioner-name={PROVISIONER_NAME}",
        f"--namespace={NAMESPACE}",
        f"--configmap-name={CONFIG_MAP}",
        f"--service-account-name={SERVICE_ACCOUNT}",
        f"--helper-image={HELPER_IMAGE}",
    ]


def started_since_last_start(log_file: Path, name: str) -> Check:
    """Ready once the log of the latest start of `name` says READY_LINE (it serves no health endpoint)."""

    def check() -> str | None:
        try:
            text = log_file.read_text(errors="replace")
        except OSError as exc:
            return str(exc)
        latest = text[text.rfind(f"starting {name}\n") :]  # the marker ProcessTable.start writes
        return None if READY_LINE in latest else f"its log does not say {READY_LINE!r} yet"

    return check


def provisioner_service() -> Service:
    return Service(
        PROVISIONER,
        lambda ctx: ProcessSpec(
            PROVISIONER, provisioner_argv(ctx.binaries[PROVISIONER], ctx.layout.kubeconfig(PROVISIONER))
        ),
        lambda ctx: started_since_last_start(ctx.processes.log_path(PROVISIONER), PROVISIONER),
    )


def prepare_storage(ctx: Context) -> None:
    """The provisioner's identity, its volumes folder and its cluster objects; idempotent."""
    layout = ctx.layout
    spec = pki.CertificateSpec(PROVISIONER, PROVISIONER_USER, client=True)
    if not (
        pki.cert_path(layout.pki, PROVISIONER).exists() and pki.key_path(layout.pki, PROVISIONER).exists()
    ):
        pki.issue(layout.pki, spec)
    write_kubeconfig(
        layout.kubeconfig(PROVISIONER), ctx.config.apiserver_url, layout.pki, PROVISIONER, PROVISIONER_USER
    )
    volumes_dir(layout).mkdir(mode=0o755, exist_ok=True)
    kubectl_apply(ctx, storage_objects(volumes_dir(layout)))
