"""Pieces every built object shares: names that fit a label, labels, owner references, security."""

from __future__ import annotations

import hashlib
from typing import Any

from mlplatform import names
from mlplatform.api.base import PodOptions

Manifest = dict[str, Any]
LABEL_VALUE_LIMIT = 63

# The "restricted" Pod Security Standard, the default of every pod the operator creates. The uid is the
# one the platform's images create (or any non-root one: the images need only a writable HOME).
DEFAULT_UID = 10001
RESTRICTED_POD_SECURITY: Manifest = {
    "runAsNonRoot": True,
    "runAsUser": DEFAULT_UID,
    "runAsGroup": DEFAULT_UID,
    "fsGroup": DEFAULT_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER_SECURITY: Manifest = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
}


def short_name(name: str, limit: int = LABEL_VALUE_LIMIT) -> str:
    """`name` if it fits a label value, else a prefix and a hash of the whole (stable and unique)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-.')}-{digest}"


def owner_reference(kind: str, name: str, uid: str) -> Manifest:
    """Makes the object part of its custom resource: deleted with it, watched as its child."""
    return {
        "apiVersion": names.API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def standard_labels(kind_label: str, instance: str, component: str) -> dict[str, str]:
    return {
        names.LABEL_NAME: kind_label,
        names.LABEL_INSTANCE: short_name(instance),
        names.LABEL_COMPONENT: component,
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
    }


def env_var(name: str, value: str) -> Manifest:
    return {"name": name, "value": value}


def secret_env(name: str, secret: str, key: str) -> Manifest:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def pod_options(spec: PodOptions) -> Manifest:
    """The pod fields the user set: account, placement and pull secrets (left out when not set)."""
    optional: Manifest = {
        "serviceAccountName": spec.service_account_name,
        "nodeSelector": spec.node_selector,
        "tolerations": spec.tolerations,
        "affinity": spec.affinity,
        "imagePullSecrets": [{"name": s.name} for s in spec.image_pull_secrets],
    }
    return {key: value for key, value in optional.items() if value}
