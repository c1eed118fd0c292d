"""The local cluster's PKI: the apiserver answers to every name a client uses, every leaf verifies
against its CA, keys are private, and a second `ensure_pki` keeps everything it made."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mlplatform.local import pki
from mlplatform.local.config import LocalConfig

CONFIG = LocalConfig(state_dir=Path("/state"), cache_dir=Path("/cache"))


def load(pki_dir: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pki.cert_path(pki_dir, name).read_bytes())


def alternative_names(certificate: x509.Certificate) -> tuple[set[str], set[str]]:
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(names.get_values_for_type(x509.DNSName)), {
        str(ip) for ip in names.get_values_for_type(x509.IPAddress)
    }


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    pki.ensure_pki(folder, CONFIG)
    return folder


def test_apiserver_spec_answers_to_host_loopback_service_ip_and_service_names() -> None:
    spec = next(s for s in pki.cluster_certificates(CONFIG) if s.name == "apiserver")
    assert {"10.244.0.1", "127.0.0.1", "10.96.0.1"} <= set(spec.ip_addresses)
    assert {"kubernetes", "kubernetes.default", "kubernetes.default.svc.cluster.local"} <= set(spec.dns_names)
    assert spec.server and not spec.client and spec.ca == pki.CLUSTER_CA


def test_apiserver_certificate_carries_those_names(pki_dir: Path) -> None:
    dns, ips = alternative_names(load(pki_dir, "apiserver"))
    assert {"10.244.0.1", "127.0.0.1", "10.96.0.1"} <= ips
    assert "kubernetes.default.svc.cluster.local" in dns


def test_every_leaf_verifies_against_its_ca_with_the_right_identity_and_usage(pki_dir: Path) -> None:
    cas = {name: load(pki_dir, name) for name in (pki.CLUSTER_CA, pki.ETCD_CA)}
    for spec in pki.cluster_certificates(CONFIG):
        leaf = load(pki_dir, spec.name)
        leaf.verify_directly_issued_by(cas[spec.ca])  # raises if the signature or issuer is wrong
        other_ca = cas[pki.ETCD_CA if spec.ca == pki.CLUSTER_CA else pki.CLUSTER_CA]
        with pytest.raises((ValueError, InvalidSignature)):
            leaf.verify_directly_issued_by(other_ca)
        subject = leaf.subject
        assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == spec.common_name
        organizations = [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        assert organizations == list(spec.organizations)
        usages = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert (ExtendedKeyUsageOID.SERVER_AUTH in usages) == spec.server, spec.name
        assert (ExtendedKeyUsageOID.CLIENT_AUTH in usages) == spec.client, spec.name
        assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    for ca in cas.values():
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True


def test_node_and_admin_identities_are_what_rbac_expects(pki_dir: Path) -> None:
    node = load(pki_dir, "node").subject
    assert node.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:mlplatform-local"
    assert node.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    admin = load(pki_dir, "admin").subject
    assert admin.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    _, serving_ips = alternative_names(load(pki_dir, "node-serving"))
    assert {str(ipaddress.ip_address("10.244.0.1")), "127.0.0.1"} <= serving_ips


def test_keys_are_private(pki_dir: Path) -> None:
    keys = sorted(pki_dir.glob("*.key"))
    assert {k.stem for k in keys} >= {"ca", "etcd-ca", "sa", "apiserver", "admin", "node"}
    for key in keys:
        assert key.stat().st_mode & 0o777 == 0o600, key.name
    assert (pki_dir / "sa.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_ensure_pki_is_idempotent(pki_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in pki_dir.iterdir()}
    pki.ensure_pki(pki_dir, CONFIG)
    assert {p.name: p.read_bytes() for p in pki_dir.iterdir()} == before


def test_ensure_pki_reissues_only_what_is_missing(tmp_path: Path) -> None:
    pki.ensure_pki(tmp_path, CONFIG)
    ca_before = pki.cert_path(tmp_path, pki.CLUSTER_CA).read_bytes()
    admin_before = pki.cert_path(tmp_path, "admin").read_bytes()
    pki.cert_path(tmp_path, "scheduler").unlink()
    pki.ensure_pki(tmp_path, CONFIG)
    assert pki.cert_path(tmp_path, pki.CLUSTER_CA).read_bytes() == ca_before
    assert pki.cert_path(tmp_path, "admin").read_bytes() == admin_before
    load(tmp_path, "scheduler").verify_directly_issued_by(load(tmp_path, pki.CLUSTER_CA))


def test_without_a_node_the_certificates_name_loopback_only() -> None:
    loopback = LocalConfig(state_dir=Path("/s"), cache_dir=Path("/c"), node=False)
    spec = next(s for s in pki.cluster_certificates(loopback) if s.name == "apiserver")
    assert "10.244.0.1" not in spec.ip_addresses
    assert {"127.0.0.1", "10.96.0.1"} <= set(spec.ip_addresses)
