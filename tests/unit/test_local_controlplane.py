"""The control plane's command lines: secrets stay in private files (never on an argv, which any user
can read in /proc), every file a flag names exists once the PKI is made, and the flags that make the
cluster secure and reachable are there."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest
import yaml

from mlplatform.local import pki
from mlplatform.local.config import LocalConfig, Ports, StateLayout, claim_state_dir
from mlplatform.local.controlplane import (
    CONTROLLER_MANAGER,
    SCHEDULER,
    apiserver_argv,
    controller_manager_argv,
    encryption_config,
    etcd_argv,
    scheduler_argv,
    write_private_yaml,
)
from mlplatform.local.kubeconfig import write_kubeconfig

BINARY = Path("/cache/bin/component")
ENCRYPTION_KEY = base64.b64encode(b"k" * 32).decode()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalConfig, StateLayout]:
    """A state directory prepared as `ControlPlane.prepare` does, without starting anything."""
    root = tmp_path_factory.mktemp("state")
    config = LocalConfig(state_dir=root, cache_dir=root / "cache", ports=Ports().shifted(7))
    layout = claim_state_dir(config)
    pki.ensure_pki(layout.pki, config)
    write_private_yaml(layout.encryption_config, encryption_config(ENCRYPTION_KEY))
    for component, cert in ((CONTROLLER_MANAGER, "controller-manager"), (SCHEDULER, "scheduler")):
        write_kubeconfig(layout.kubeconfig(component), config.apiserver_url, layout.pki, cert, component)
    return config, layout


def all_argv(config: LocalConfig, layout: StateLayout) -> dict[str, list[str]]:
    return {
        "etcd": etcd_argv(BINARY, config, layout),
        "kube-apiserver": apiserver_argv(BINARY, config, layout),
        "kube-controller-manager": controller_manager_argv(BINARY, config, layout),
        "kube-scheduler": scheduler_argv(BINARY, config, layout),
    }


def flags(argv: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in argv[1:])


def test_no_secret_material_is_on_any_command_line(cluster: tuple[LocalConfig, StateLayout]) -> None:
    config, layout = cluster
    secrets = [ENCRYPTION_KEY, "PRIVATE KEY", "BEGIN"]
    for key in layout.pki.glob("*.key"):
        body = "".join(key.read_text().splitlines()[1:-1])
        secrets += [body[:40], body[-40:]]
    for name, argv in all_argv(config, layout).items():
        assert argv[0] == str(BINARY)
        joined = " ".join(argv)
        leaked = [s for s in secrets if s in joined]
        assert not leaked, f"{name} has secret material on its argv"
        for arg in argv[1:]:
            assert arg.startswith("--") and "=" in arg, arg


def test_every_file_a_flag_names_exists_and_keys_are_private(
    cluster: tuple[LocalConfig, StateLayout],
) -> None:
    config, layout = cluster
    path_flags = (
        "file",
        "cafile",
        "certfile",
        "keyfile",
        "kubeconfig",
        "config",
        "certificate",
        "key",
        "authority",
    )
    checked = 0
    for name, argv in all_argv(config, layout).items():
        for flag, value in flags(argv).items():
            if flag == "data-dir":
                assert Path(value).parent == layout.root
                continue
            if flag.split("-")[-1] in path_flags or flag.endswith("-ca-file"):
                path = Path(value)
                assert path.is_file(), f"{name} --{flag}={value} does not exist"
                checked += 1
                assert path.is_relative_to(layout.root), f"{name} --{flag} points outside the state"
                if path.suffix in {".key", ".kubeconfig"} or "encryption" in path.name:
                    assert path.stat().st_mode & 0o777 == 0o600, f"{name} --{flag}: {path} is not private"
    assert checked >= 31  # every certificate, key, kubeconfig and config flag of the four components


def test_etcd_serves_tls_to_clients_with_certificates_on_loopback(
    cluster: tuple[LocalConfig, StateLayout],
) -> None:
    config, layout = cluster
    etcd = flags(etcd_argv(BINARY, config, layout))
    assert etcd["listen-client-urls"] == f"https://127.0.0.1:{config.ports.etcd_client}"
    assert etcd["listen-peer-urls"] == f"http://127.0.0.1:{config.ports.etcd_peer}"
    assert etcd["client-cert-auth"] == "true"
    assert etcd["trusted-ca-file"] == str(pki.cert_path(layout.pki, pki.ETCD_CA))
    assert etcd["data-dir"] == str(layout.etcd_data)


def test_apiserver_flags_secure_the_cluster(cluster: tuple[LocalConfig, StateLayout]) -> None:
    config, layout = cluster
    api = flags(apiserver_argv(BINARY, config, layout))
    assert api["bind-address"] == api["advertise-address"] == "10.244.0.1"
    assert api["secure-port"] == str(config.ports.apiserver) == "16450"
    assert api["etcd-servers"] == f"https://127.0.0.1:{config.ports.etcd_client}"
    assert api["authorization-mode"] == "Node,RBAC"
    assert api["enable-admission-plugins"] == "NodeRestriction"
    assert api["client-ca-file"] == str(pki.cert_path(layout.pki, pki.CLUSTER_CA))
    assert api["service-cluster-ip-range"] == "10.96.0.0/16"
    assert api["service-account-issuer"] == "https://kubernetes.default.svc.cluster.local"
    assert api["service-account-signing-key-file"] == str(pki.key_path(layout.pki, pki.SERVICE_ACCOUNT_KEY))
    assert api["encryption-provider-config"] == str(layout.encryption_config)
    assert api["profiling"] == "false"
    assert "insecure-port" not in api and "anonymous-auth" not in api
    written = yaml.safe_load(layout.encryption_config.read_text())
    assert written["resources"][0]["resources"] == ["secrets"]
    assert written["resources"][0]["providers"][0]["secretbox"]["keys"][0]["secret"] == ENCRYPTION_KEY


def test_apiserver_without_a_node_listens_on_loopback(cluster: tuple[LocalConfig, StateLayout]) -> None:
    config, layout = cluster
    api = flags(apiserver_argv(BINARY, dataclasses.replace(config, node=False), layout))
    assert api["bind-address"] == "127.0.0.1"


def test_controller_manager_and_scheduler_flags(cluster: tuple[LocalConfig, StateLayout]) -> None:
    config, layout = cluster
    manager = flags(controller_manager_argv(BINARY, config, layout))
    assert manager["kubeconfig"] == str(layout.kubeconfig(CONTROLLER_MANAGER))
    assert (
        manager["authentication-kubeconfig"] == manager["authorization-kubeconfig"] == manager["kubeconfig"]
    )
    assert manager["bind-address"] == "127.0.0.1"
    assert manager["secure-port"] == str(config.ports.controller_manager)
    assert manager["use-service-account-credentials"] == "true"
    assert manager["service-account-private-key-file"] == str(
        pki.key_path(layout.pki, pki.SERVICE_ACCOUNT_KEY)
    )
    assert manager["cluster-signing-key-file"] == str(pki.key_path(layout.pki, pki.CLUSTER_CA))
    assert manager["root-ca-file"] == str(pki.cert_path(layout.pki, pki.CLUSTER_CA))
    assert manager["cluster-cidr"] == "10.244.0.0/16"
    scheduler = flags(scheduler_argv(BINARY, config, layout))
    assert scheduler["kubeconfig"] == str(layout.kubeconfig(SCHEDULER))
    assert scheduler["bind-address"] == "127.0.0.1"
    assert scheduler["secure-port"] == str(config.ports.scheduler)
    assert scheduler["leader-elect"] == "false"
