"""Kubeconfig files for the admin and for each control-plane client."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from mlplatform.local.files import PRIVATE, write_if_changed

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
    write_if_changed(path, yaml.safe_dump(config, sort_keys=False), PRIVATE)
