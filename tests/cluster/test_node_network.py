"""Pods get their own network: replicas share a port on distinct IPs, Services route to ready
endpoints by DNS name, probes drive readiness and restarts, and scaling down stops the processes."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from kubernetes import client

from kube import apply, eventually, finished, is_ready, kubectl, pod, pods_of, processes_with, python_pod

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_node")]

HTTP_SERVER = """\
import http.server, os, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {os.environ['HOSTNAME']}\\n".encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("", 8080), Handler).serve_forever()
"""


def web(name: str, replicas: int, marker: str, **container: object) -> list[dict[str, object]]:
    labels = {"app": name}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 5,
                        "containers": [
                            {
                                "name": "http",
                                "image": "python:3.11",
                                "command": ["python3", "-c", HTTP_SERVER, marker],
                                "ports": [{"containerPort": 8080, "name": "http"}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/", "port": "http"},
                                    "periodSeconds": 1,
                                },
                                **container,
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    ]


def apply_all(
    kubectl_bin: Path, kubeconfig: Path, namespace: str, manifests: list[dict[str, object]]
) -> None:
    apply(kubectl_bin, kubeconfig, namespace, {"apiVersion": "v1", "kind": "List", "items": manifests})


def test_replicas_share_a_port_services_route_by_dns_and_scale_to_zero_stops_them(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    apply_all(kubectl_bin, kubeconfig, namespace, web("web", 2, marker))
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    replicas = eventually(
        lambda: (
            [p for p in pods_of(core, namespace, "app=web") if is_ready(p)]
            if len([p for p in pods_of(core, namespace, "app=web") if is_ready(p)]) == 2
            else None
        ),
        what="2 ready replicas",
    )
    addresses = {p.status.pod_ip for p in replicas}
    assert len(addresses) == 2 and all(a.startswith("10.244.") for a in addresses)
    assert len(processes_with(marker)) == 2

    names = ["web", f"web.{namespace}", f"web.{namespace}.svc.cluster.local"]
    script = (
        "import socket, urllib.request\n"
        f"for name in {names!r}:\n"
        "    answer = urllib.request.urlopen(f'http://{name}/', timeout=5).read().decode().strip()\n"
        "    print(name, socket.gethostbyname(name), answer)\n"
    )
    apply(kubectl_bin, kubeconfig, namespace, python_pod("client", script))
    finished(core, namespace, "client")
    logs = kubectl(kubectl_bin, kubeconfig, "logs", "-n", namespace, "client").stdout
    service_ip = core.read_namespaced_service("web", namespace).spec.cluster_ip
    replica_names = {p.metadata.name for p in replicas}
    for name in names:
        line = next(line for line in logs.splitlines() if line.startswith(name + " "))
        _, address, *answer = line.split()
        assert address == service_ip
        assert answer[:2] == ["hello", "from"] and answer[2] in replica_names
    assert pod(core, namespace, "client").status.phase == "Succeeded"

    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 0}})
    eventually(lambda: not pods_of(core, namespace, "app=web"), what="replicas deleted")
    eventually(lambda: not processes_with(marker), timeout=15, what="replica processes gone")


def test_readiness_gates_endpoints_and_liveness_restarts_the_container(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    manifests = web(
        "flaky",
        1,
        marker,
        livenessProbe={
            "exec": {
                "command": ["python3", "-c", "import os; raise SystemExit(os.path.exists('/tmp/broken'))"]
            },
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
    )
    apply_all(kubectl_bin, kubeconfig, namespace, manifests)
    core = client.CoreV1Api(api_client)
    discovery = client.DiscoveryV1Api(api_client)
    [first] = eventually(
        lambda: [p for p in pods_of(core, namespace, "app=flaky") if is_ready(p)], what="ready replica"
    )

    def endpoints_ready() -> list[str]:
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=flaky"
        )
        return [a for s in slices.items for e in s.endpoints or [] if e.conditions.ready for a in e.addresses]

    assert eventually(endpoints_ready, what="endpoint ready") == [first.status.pod_ip]
    [process] = processes_with(marker)
    # Break liveness inside the container (through its root): the node restarts the container, not the pod.
    (Path("/proc", str(process.pid), "root") / "tmp" / "broken").write_text("")
    restarted = eventually(
        lambda: (
            (p := pod(core, namespace, first.metadata.name))
            and p.status.container_statuses[0].restart_count >= 1
            and p
        ),
        timeout=30,
        what="liveness restart",
    )
    assert restarted.metadata.uid == first.metadata.uid
    last = restarted.status.container_statuses[0].last_state.terminated
    assert last is not None and last.exit_code in (137, 143)
    assert not process.is_running()
