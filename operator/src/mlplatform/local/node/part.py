"""The local node as a part of the platform: the node agent, kube-proxy, CoreDNS and the volume provisioner.

kube-proxy (iptables mode) routes ClusterIP Services to ready endpoints, and CoreDNS answers Service
names for pods; both run on the host, built from the same pinned modules as the control plane.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from mlplatform.local import pki, storage
from mlplatform.local.config import PLATFORM_NAMESPACE, LocalConfig, StateLayout
from mlplatform.local.controlplane import kubectl_apply, tls_context, write_private_yaml
from mlplatform.local.errors import LocalError
from mlplatform.local.files import write_if_changed
from mlplatform.local.kubeconfig import write_kubeconfig
from mlplatform.local.network import remove_kube_chains
from mlplatform.local.node import runtime, shim
from mlplatform.local.node.layout import NodeLayout
from mlplatform.local.platform import Context, Service
from mlplatform.local.processes import Check, ProcessSpec, http_check
from mlplatform.local.stack import minio, tracking

NODE_AGENT = "node-agent"
KUBE_PROXY = "kube-proxy"
COREDNS = "coredns"
DNS_SERVICE = "kube-dns"
MANAGED_BY = "mlplatform-local"
Manifest = dict[str, Any]


def kube_proxy_config(config: LocalConfig, layout: StateLayout) -> Manifest:
    ports = config.ports
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.kubeconfig(KUBE_PROXY))},
        "hostnameOverride": config.node_name,
        "mode": "iptables",
        "clusterCIDR": config.network.cluster_cidr,
        "healthzBindAddress": f"127.0.0.1:{ports.kube_proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{ports.kube_proxy_metrics}",
        "nodePortAddresses": [f"{config.network.host_address}/32"],
        # Leave the machine's conntrack settings as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


def corefile(config: LocalConfig, layout: StateLayout) -> str:
    domain = config.network.cluster_domain
    return f"""\
.:{config.ports.dns} {{
    bind {config.network.host_address}
    errors
    ready 127.0.0.1:{config.ports.dns_ready}
    kubernetes {domain} in-addr.arpa ip6.arpa {{
        kubeconfig {layout.kubeconfig(COREDNS)} mlplatform-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"""


def host_service(
    config: LocalConfig,
    namespace: str,
    name: str,
    ports: Sequence[Manifest],
    labels: dict[str, str] | None = None,
) -> list[Manifest]:
    """A Service whose one endpoint is on the host address: how pods reach host-side services
    (CoreDNS, the MLflow stack) by name, the way they would reach them in a real cluster."""
    service: Manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "ports": [
                {k: v for k, v in p.items() if k != "hostPort"} | {"targetPort": p["hostPort"]} for p in ports
            ]
        },
    }
    if name == DNS_SERVICE:
        service["spec"]["clusterIP"] = config.network.dns_service_ip
    endpoints: Manifest = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-host",
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [config.network.host_address], "conditions": {"ready": True}}],
        "ports": [
            {"name": p["name"], "port": p["hostPort"], "protocol": p.get("protocol", "TCP")} for p in ports
        ],
    }
    return [service, endpoints]


def dns_objects(config: LocalConfig) -> list[Manifest]:
    """CoreDNS's read access, and the kube-dns Service whose endpoint is CoreDNS on the host address."""
    dns = config.ports.dns
    ports = [
        {"name": "dns", "port": dns, "hostPort": dns, "protocol": "UDP"},
        {"name": "dns-tcp", "port": dns, "hostPort": dns, "protocol": "TCP"},
    ]
    rbac = "rbac.authorization.k8s.io"
    return [
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": pki.COREDNS_USER},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": pki.COREDNS_USER},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": pki.COREDNS_USER},
            "subjects": [{"apiGroup": rbac, "kind": "User", "name": pki.COREDNS_USER}],
        },
        *host_service(
            config,
            "kube-system",
            DNS_SERVICE,
            ports,
            {"k8s-app": DNS_SERVICE, "kubernetes.io/name": "CoreDNS"},
        ),
    ]


def stack_objects(config: LocalConfig) -> list[Manifest]:
    """In-cluster names of the MLflow stack: mlflow.mlplatform-system:5000, minio.mlplatform-system:9000."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PLATFORM_NAMESPACE}},
        *host_service(
            config,
            PLATFORM_NAMESPACE,
            tracking.IN_CLUSTER_NAME,
            [{"name": "http", "port": tracking.IN_CLUSTER_PORT, "hostPort": config.ports.mlflow}],
        ),
        *host_service(
            config,
            PLATFORM_NAMESPACE,
            minio.IN_CLUSTER_NAME,
            [{"name": "s3", "port": minio.IN_CLUSTER_PORT, "hostPort": config.ports.minio}],
        ),
    ]


def node_ready_check(config: LocalConfig, layout: StateLayout) -> Check:
    def verdict(body: str) -> str | None:
        try:
            conditions = json.loads(body).get("status", {}).get("conditions", [])
        except ValueError as exc:
            return str(exc)
        ready = [c for c in conditions if c["type"] == "Ready"]
        return None if ready and ready[0]["status"] == "True" else "node not Ready yet"

    return http_check(
        f"{config.apiserver_url}/api/v1/nodes/{config.node_name}",
        context=tls_context(layout, pki.CLUSTER_CA, "admin"),
        verdict=verdict,
    )


class LocalNode:
    """The node agent, then kube-proxy, CoreDNS and the volume provisioner."""

    name = "local node"

    def binaries(self, config: LocalConfig) -> Sequence[str]:
        return [KUBE_PROXY, COREDNS, storage.PROVISIONER]

    def stages(self, config: LocalConfig) -> Sequence[Sequence[Service]]:
        host = config.network.host_address
        return [
            [
                Service(
                    NODE_AGENT,
                    lambda ctx: ProcessSpec(
                        NODE_AGENT,
                        [
                            sys.executable,
                            "-m",
                            "mlplatform.local.node",
                            f"--state-dir={ctx.config.state_dir}",
                        ],
                    ),
                    lambda ctx: node_ready_check(ctx.config, ctx.layout),
                    lambda c: [(host, c.ports.node)],
                )
            ],
            [
                Service(
                    KUBE_PROXY,
                    lambda ctx: ProcessSpec(
                        KUBE_PROXY,
                        [str(ctx.binaries[KUBE_PROXY]), f"--config={ctx.layout.root / 'kube-proxy.yaml'}"],
                    ),
                    lambda ctx: http_check(f"http://127.0.0.1:{ctx.config.ports.kube_proxy_healthz}/healthz"),
                    lambda c: [
                        ("127.0.0.1", c.ports.kube_proxy_healthz),
                        ("127.0.0.1", c.ports.kube_proxy_metrics),
                    ],
                ),
                Service(
                    COREDNS,
                    lambda ctx: ProcessSpec(
                        COREDNS, [str(ctx.binaries[COREDNS]), "-conf", str(ctx.layout.root / "Corefile")]
                    ),
                    lambda ctx: http_check(f"http://127.0.0.1:{ctx.config.ports.dns_ready}/ready"),
                    lambda c: [(host, c.ports.dns), ("127.0.0.1", c.ports.dns_ready)],
                ),
                storage.provisioner_service(),
            ],
        ]

    def prepare(self, ctx: Context) -> None:
        layout, config = ctx.layout, ctx.config
        if shutil.which(shim.RUNC) is None:
            raise LocalError(f"the local node runs containers with {shim.RUNC}: install it (Debian: runc)")
        layout.node.mkdir(parents=True, exist_ok=True)
        for user, cert in ((NODE_AGENT, "node"), (KUBE_PROXY, "kube-proxy"), (COREDNS, "coredns")):
            name = pki.node_user(config.node_name) if user == NODE_AGENT else f"system:{user}"
            target = layout.kubeconfig("node" if user == NODE_AGENT else user)
            write_kubeconfig(target, config.apiserver_url, layout.pki, cert, name)
        write_private_yaml(layout.root / "kube-proxy.yaml", kube_proxy_config(config, layout))
        write_if_changed(layout.root / "Corefile", corefile(config, layout))
        kubectl_apply(ctx, dns_objects(config))  # CoreDNS needs its read access before it can be ready
        storage.prepare_storage(ctx)  # the provisioner reads its ConfigMap when it starts

    def finish(self, ctx: Context) -> None:
        if ctx.config.stack:
            kubectl_apply(ctx, stack_objects(ctx.config))

    def teardown(self, ctx: Context) -> None:
        runtime.kill_everything(NodeLayout(ctx.layout.node))
        if (kube_proxy := ctx.binaries.get(KUBE_PROXY)) is not None:
            subprocess.run(
                [str(kube_proxy), "--cleanup", f"--config={ctx.layout.root / 'kube-proxy.yaml'}"],
                capture_output=True,
                check=False,
                timeout=60,
            )
        remove_kube_chains()
