"""The local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager and kube-scheduler.

The argv of each component is a pure function of the configuration and the state layout; readiness
checks are small HTTPS probes with the cluster's own certificates.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import yaml

from mlplatform.local import pki
from mlplatform.local.config import LocalConfig, StateLayout
from mlplatform.local.errors import LocalError
from mlplatform.local.files import PRIVATE, write_if_changed
from mlplatform.local.kubeconfig import write_kubeconfig
from mlplatform.local.platform import Context, Service
from mlplatform.local.processes import Check, ProcessSpec, body_contains, http_check

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
KUBECTL = "kubectl"
HELM = "helm"
CONTROL_PLANE = (ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER)
ETCD_MEMBER = "mlplatform"


def _crt(layout: StateLayout, name: str) -> str:
    return str(pki.cert_path(layout.pki, name))


def _key(layout: StateLayout, name: str) -> str:
    return str(pki.key_path(layout.pki, name))


def etcd_client_url(config: LocalConfig) -> str:
    return f"https://127.0.0.1:{config.ports.etcd_client}"


def etcd_argv(binary: Path, config: LocalConfig, layout: StateLayout) -> list[str]:
    peer = f"http://127.0.0.1:{config.ports.etcd_peer}"
    client = etcd_client_url(config)
    return [
        str(binary),
        f"--name={ETCD_MEMBER}",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster={ETCD_MEMBER}={peer}",
        f"--cert-file={_crt(layout, 'etcd-server')}",
        f"--key-file={_key(layout, 'etcd-server')}",
        f"--trusted-ca-file={_crt(layout, pki.ETCD_CA)}",
        "--client-cert-auth=true",
        "--log-level=warn",
    ]


def apiserver_argv(binary: Path, config: LocalConfig, layout: StateLayout) -> list[str]:
    domain = config.network.cluster_domain
    return [
        str(binary),
        f"--bind-address={config.bind_address}",
        f"--advertise-address={config.bind_address}",
        f"--secure-port={config.ports.apiserver}",
        f"--etcd-servers={etcd_client_url(config)}",
        f"--etcd-cafile={_crt(layout, pki.ETCD_CA)}",
        f"--etcd-certfile={_crt(layout, 'apiserver-etcd-client')}",
        f"--etcd-keyfile={_key(layout, 'apiserver-etcd-client')}",
        f"--tls-cert-file={_crt(layout, 'apiserver')}",
        f"--tls-private-key-file={_key(layout, 'apiserver')}",
        f"--client-ca-file={_crt(layout, pki.CLUSTER_CA)}",
        f"--kubelet-client-certificate={_crt(layout, 'apiserver-kubelet-client')}",
        f"--kubelet-client-key={_key(layout, 'apiserver-kubelet-client')}",
        f"--kubelet-certificate-authority={_crt(layout, pki.CLUSTER_CA)}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        f"--service-cluster-ip-range={config.network.service_cidr}",
        f"--service-account-issuer=https://kubernetes.default.svc.{domain}",
        f"--service-account-key-file={layout.pki / (pki.SERVICE_ACCOUNT_KEY + '.pub')}",
        f"--service-account-signing-key-file={_key(layout, pki.SERVICE_ACCOUNT_KEY)}",
        f"--encryption-provider-config={layout.encryption_config}",
        "--profiling=false",
    ]


def _client_kubeconfig_flags(kubeconfig: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
    ]


def controller_manager_argv(binary: Path, config: LocalConfig, layout: StateLayout) -> list[str]:
    return [
        str(binary),
        *_client_kubeconfig_flags(layout.kubeconfig(CONTROLLER_MANAGER)),
        "--bind-address=127.0.0.1",
        f"--secure-port={config.ports.controller_manager}",
        f"--tls-cert-file={_crt(layout, 'controller-manager-serving')}",
        f"--tls-private-key-file={_key(layout, 'controller-manager-serving')}",
        f"--client-ca-file={_crt(layout, pki.CLUSTER_CA)}",
        f"--root-ca-file={_crt(layout, pki.CLUSTER_CA)}",
        f"--service-account-private-key-file={_key(layout, pki.SERVICE_ACCOUNT_KEY)}",
        "--use-service-account-credentials=true",
        f"--cluster-signing-cert-file={_crt(layout, pki.CLUSTER_CA)}",
        f"--cluster-signing-key-file={_key(layout, pki.CLUSTER_CA)}",
        f"--service-cluster-ip-range={config.network.service_cidr}",
        f"--cluster-cidr={config.network.cluster_cidr}",
        # The node registers with its own fixed pod range (its bridge already carries the host address).
        "--allocate-node-cidrs=false",
        "--leader-elect=false",
        "--profiling=false",
    ]


def scheduler_argv(binary: Path, config: LocalConfig, layout: StateLayout) -> list[str]:
    return [
        str(binary),
        *_client_kubeconfig_flags(layout.kubeconfig(SCHEDULER)),
        "--bind-address=127.0.0.1",
        f"--secure-port={config.ports.scheduler}",
        f"--tls-cert-file={_crt(layout, 'scheduler-serving')}",
        f"--tls-private-key-file={_key(layout, 'scheduler-serving')}",
        f"--client-ca-file={_crt(layout, pki.CLUSTER_CA)}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def tls_context(layout: StateLayout, ca: str, client_cert: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=_crt(layout, ca))
    if client_cert:
        context.load_cert_chain(_crt(layout, client_cert), _key(layout, client_cert))
    return context


def readiness_checks(config: LocalConfig, layout: StateLayout) -> dict[str, Check]:
    """How each control-plane component says it is ready."""
    cluster_ca = tls_context(layout, pki.CLUSTER_CA, None)
    return {
        ETCD: http_check(
            f"{etcd_client_url(config)}/health",
            context=tls_context(layout, pki.ETCD_CA, "apiserver-etcd-client"),
            verdict=body_contains('"true"'),
        ),
        APISERVER: http_check(
            f"{config.apiserver_url}/readyz",
            context=tls_context(layout, pki.CLUSTER_CA, "admin"),
            verdict=body_contains("ok"),
        ),
        CONTROLLER_MANAGER: http_check(
            f"https://127.0.0.1:{config.ports.controller_manager}/healthz",
            context=cluster_ca,
            verdict=body_contains("ok"),
        ),
        SCHEDULER: http_check(
            f"https://127.0.0.1:{config.ports.scheduler}/healthz",
            context=cluster_ca,
            verdict=body_contains("ok"),
        ),
    }


def encryption_config(key_b64: str) -> dict[str, object]:
    """Encrypt Secrets at rest in etcd with a key generated for this cluster."""
    return {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [
            {
                "resources": ["secrets"],
                "providers": [
                    {"secretbox": {"keys": [{"name": "key1", "secret": key_b64}]}},
                    {"identity": {}},
                ],
            }
        ],
    }


def bootstrap_objects() -> list[dict[str, object]]:
    """Cluster objects the control plane needs beyond Kubernetes' own bootstrap policy."""
    return [
        {
            # As kubeadm does: the apiserver's kubelet client may read node logs and proxy to the node.
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "mlplatform:apiserver-kubelet-client"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:kubelet-api-admin",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": "kube-apiserver-kubelet-client",
                }
            ],
        }
    ]


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler, and the client tools."""

    name = "control plane"

    def binaries(self, config: LocalConfig) -> Sequence[str]:
        return [ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER, KUBECTL, HELM]

    def stages(self, config: LocalConfig) -> Sequence[Sequence[Service]]:
        def process(
            name: str, argv: Callable[[Path, LocalConfig, StateLayout], list[str]]
        ) -> Callable[[Context], ProcessSpec]:
            return lambda ctx: ProcessSpec(name, argv(ctx.binaries[name], ctx.config, ctx.layout))

        def ready(name: str) -> Callable[[Context], Check]:
            return lambda ctx: readiness_checks(ctx.config, ctx.layout)[name]

        ports = config.ports
        return [
            [
                Service(
                    ETCD,
                    process(ETCD, etcd_argv),
                    ready(ETCD),
                    lambda c: [("127.0.0.1", c.ports.etcd_client), ("127.0.0.1", c.ports.etcd_peer)],
                )
            ],
            [
                Service(
                    APISERVER,
                    process(APISERVER, apiserver_argv),
                    ready(APISERVER),
                    lambda c: [(c.bind_address, c.ports.apiserver)],
                )
            ],
            [
                Service(
                    CONTROLLER_MANAGER,
                    process(CONTROLLER_MANAGER, controller_manager_argv),
                    ready(CONTROLLER_MANAGER),
                    lambda _: [("127.0.0.1", ports.controller_manager)],
                ),
                Service(
                    SCHEDULER,
                    process(SCHEDULER, scheduler_argv),
                    ready(SCHEDULER),
                    lambda _: [("127.0.0.1", ports.scheduler)],
                ),
            ],
        ]

    def prepare(self, ctx: Context) -> None:
        layout, config = ctx.layout, ctx.config
        pki.ensure_pki(layout.pki, config)
        if not layout.encryption_config.exists():
            key = base64.b64encode(secrets.token_bytes(32)).decode()
            write_private_yaml(layout.encryption_config, encryption_config(key))
        layout.etcd_data.mkdir(mode=0o700, exist_ok=True)
        write_kubeconfig(layout.admin_kubeconfig, config.apiserver_url, layout.pki, "admin", pki.ADMIN_USER)
        for component, cert in ((CONTROLLER_MANAGER, "controller-manager"), (SCHEDULER, "scheduler")):
            write_kubeconfig(layout.kubeconfig(component), config.apiserver_url, layout.pki, cert, component)
        for tool in (KUBECTL, HELM):
            link = layout.bin / tool
            link.unlink(missing_ok=True)
            link.symlink_to(ctx.binaries[tool])

    def finish(self, ctx: Context) -> None:
        kubectl_apply(ctx, bootstrap_objects())

    def teardown(self, ctx: Context) -> None:
        """Everything the control plane made lives in the state directory."""


def kubectl(ctx: Context, *args: str, stdin: str | None = None) -> str:
    """Run the cluster's own kubectl as the admin; fail with its message."""
    argv = [str(ctx.layout.bin / KUBECTL), f"--kubeconfig={ctx.layout.admin_kubeconfig}", *args]
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise LocalError(f"kubectl {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def kubectl_apply(ctx: Context, objects: Sequence[Mapping[str, object]]) -> None:
    """Server-side apply `objects` as the local platform's field manager: idempotent by construction."""
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    kubectl(
        ctx,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=mlplatform-local",
        "-f",
        "-",
        stdin=document,
    )


def write_private_yaml(path: Path, data: object) -> None:
    write_if_changed(path, yaml.safe_dump(data, sort_keys=False), PRIVATE)
