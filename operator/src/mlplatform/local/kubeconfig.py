"""Kubeconfig files for the admin and for each control-plane client."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import yaml

CONTEXT = "mlplatform-local"


def build_kubeconfig(
    server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str
) -> dict[str, Any]:
    """A kubeconfig with one cluster, one user and one context, its credentials embedded."""

    def encode(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CONTEXT, "cluster": {"server": server, "certificate-authority-data": encode(ca_pem)}}
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": encode(cert_pem), "client-key-data": encode(key_pem)},
            }
        ],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user}}],
        "current-context": CONTEXT,
    }


def write_kubeconfig(path: Path, server: str, pki_dir: Path, cert_name: str, user: str) -> None:
    """Write a kubeconfig for the client certificate `cert_name` of `pki_dir`, readable by its owner only."""
    config = build_kubeconfig(
        server,
        (pki_dir / "ca.crt").read_bytes(),
        (pki_dir / f"{cert_name}.crt").read_bytes(),
        (pki_dir / f"{cert_name}.key").read_bytes(),
        user,
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
