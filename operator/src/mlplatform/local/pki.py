"""The local cluster's certificates: CAs, serving and client certificates, and the service-account key.

Which certificates exist is decided by pure functions over the configuration (`cluster_certificates`);
`ensure_pki` only writes what is missing, so a second `up` reuses every key it made before.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mlplatform.local.config import LocalConfig
from mlplatform.local.files import PRIVATE, write_if_changed

VALIDITY = datetime.timedelta(days=365)
CLUSTER_CA = "ca"
ETCD_CA = "etcd-ca"
SERVICE_ACCOUNT_KEY = "sa"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
SCHEDULER_USER = "system:kube-scheduler"
KUBE_PROXY_USER = "system:kube-proxy"
COREDNS_USER = "system:coredns"
ADMIN_USER = "mlplatform-admin"
MASTERS_GROUP = "system:masters"
NODES_GROUP = "system:nodes"


@dataclass(frozen=True)
class CertificateSpec:
    """A leaf certificate: its file stem, subject, names and uses, and the CA that signs it."""

    name: str
    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    server: bool = False
    client: bool = False
    ca: str = CLUSTER_CA


def node_user(node_name: str) -> str:
    return f"system:node:{node_name}"


def apiserver_names(config: LocalConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """DNS names and IPs the apiserver answers to: from the host, from pods, by its Service name."""
    domain = config.network.cluster_domain
    dns = (
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{domain}",
    )
    ips = tuple(dict.fromkeys(("127.0.0.1", config.bind_address, config.network.apiserver_service_ip)))
    return dns, ips


def cluster_certificates(config: LocalConfig) -> list[CertificateSpec]:
    """Every leaf certificate the control plane and the node need."""
    api_dns, api_ips = apiserver_names(config)
    host_ips = tuple(dict.fromkeys(("127.0.0.1", config.bind_address)))
    return [
        CertificateSpec(
            "etcd-server",
            "etcd",
            dns_names=("localhost",),
            ip_addresses=("127.0.0.1",),
            server=True,
            client=True,
            ca=ETCD_CA,
        ),
        CertificateSpec("apiserver-etcd-client", "kube-apiserver-etcd-client", client=True, ca=ETCD_CA),
        CertificateSpec("apiserver", "kube-apiserver", dns_names=api_dns, ip_addresses=api_ips, server=True),
        CertificateSpec("apiserver-kubelet-client", "kube-apiserver-kubelet-client", client=True),
        CertificateSpec("admin", ADMIN_USER, organizations=(MASTERS_GROUP,), client=True),
        CertificateSpec("controller-manager", CONTROLLER_MANAGER_USER, client=True),
        CertificateSpec(
            "controller-manager-serving",
            "kube-controller-manager",
            ip_addresses=("127.0.0.1",),
            dns_names=("localhost",),
            server=True,
        ),
        CertificateSpec("scheduler", SCHEDULER_USER, client=True),
        CertificateSpec(
            "scheduler-serving",
            "kube-scheduler",
            ip_addresses=("127.0.0.1",),
            dns_names=("localhost",),
            server=True,
        ),
        CertificateSpec("kube-proxy", KUBE_PROXY_USER, client=True),
        CertificateSpec("coredns", COREDNS_USER, client=True),
        CertificateSpec("node", node_user(config.node_name), organizations=(NODES_GROUP,), client=True),
        CertificateSpec(
            "node-serving",
            config.node_name,
            dns_names=(config.node_name, "localhost"),
            ip_addresses=host_ips,
            server=True,
        ),
    ]


def cert_path(pki_dir: Path, name: str) -> Path:
    return pki_dir / f"{name}.crt"


def key_path(pki_dir: Path, name: str) -> Path:
    return pki_dir / f"{name}.key"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def ensure_ca(pki_dir: Path, name: str, common_name: str) -> None:
    if cert_path(pki_dir, name).exists() and key_path(pki_dir, name).exists():
        return
    key = _new_key()
    subject = _name(common_name)
    certificate = (
        _builder(subject, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_if_changed(key_path(pki_dir, name), _key_pem(key), PRIVATE)
    cert_path(pki_dir, name).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def issue(pki_dir: Path, spec: CertificateSpec) -> None:
    """Write the key and certificate of `spec`, signed by its CA."""
    ca_key = _load_key(key_path(pki_dir, spec.ca))
    ca_cert = x509.load_pem_x509_certificate(cert_path(pki_dir, spec.ca).read_bytes())
    key = _new_key()
    usages = [
        u
        for u, wanted in (
            (ExtendedKeyUsageOID.SERVER_AUTH, spec.server),
            (ExtendedKeyUsageOID.CLIENT_AUTH, spec.client),
        )
        if wanted
    ]
    builder = (
        _builder(_name(spec.common_name, spec.organizations), ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    alternative_names: list[x509.GeneralName] = [x509.DNSName(n) for n in spec.dns_names]
    alternative_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ip_addresses]
    if alternative_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
    certificate = builder.sign(ca_key, hashes.SHA256())
    write_if_changed(key_path(pki_dir, spec.name), _key_pem(key), PRIVATE)
    cert_path(pki_dir, spec.name).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def ensure_service_account_key(pki_dir: Path) -> None:
    """The key pair that signs and verifies service-account tokens."""
    private = key_path(pki_dir, SERVICE_ACCOUNT_KEY)
    if private.exists():
        return
    key = _new_key()
    write_if_changed(private, _key_pem(key), PRIVATE)
    (pki_dir / f"{SERVICE_ACCOUNT_KEY}.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def ensure_pki(pki_dir: Path, config: LocalConfig) -> None:
    """Create whatever CA, certificate or key of the cluster is missing; keep what exists."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    ensure_ca(pki_dir, CLUSTER_CA, "mlplatform-local-ca")
    ensure_ca(pki_dir, ETCD_CA, "mlplatform-local-etcd-ca")
    for spec in cluster_certificates(config):
        if not (cert_path(pki_dir, spec.name).exists() and key_path(pki_dir, spec.name).exists()):
            issue(pki_dir, spec)
    ensure_service_account_key(pki_dir)
