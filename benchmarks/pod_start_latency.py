"""Pod start latency on the local node: create → Ready for a small HTTP server, warm environment cache.

Runs against the local cluster in $MLPLATFORM_STATE_DIR (default ~/.cache/mlplatform/local), which
must be up with its node. Creates the pods one after another in a scratch namespace, prints each
latency, the median and the spread, and deletes the namespace.

    python benchmarks/pod_start_latency.py [--pods 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid

from kubernetes import client, config, watch

from mlplatform.local.config import StateLayout, default_state_dir, load_config

SERVER = (
    "import http.server; http.server.ThreadingHTTPServer(('', 8080), http.server.SimpleHTTPRequestHandler)"
    ".serve_forever()"
)


def server_pod(name: str, probe: bool = True) -> dict[str, object]:
    readiness = (
        {"readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}} if probe else {}
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "http",
                    "image": "python:3.11",
                    "command": ["python3", "-c", SERVER],
                    "ports": [{"containerPort": 8080}],
                    **readiness,
                }
            ],
        },
    }


def ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def start_latency(core: client.CoreV1Api, namespace: str, name: str, probe: bool) -> float:
    started = time.monotonic()
    core.create_namespaced_pod(namespace, server_pod(name, probe))
    stream = watch.Watch()
    for event in stream.stream(
        core.list_namespaced_pod, namespace, field_selector=f"metadata.name={name}", timeout_seconds=120
    ):
        if ready(event["object"]):
            stream.stop()
            return time.monotonic() - started
    raise TimeoutError(f"pod {name} was not Ready within 120s")


def report(latencies: list[float]) -> None:
    ordered = sorted(latencies)
    print(
        f"  median: {statistics.median(latencies) * 1000:.0f} ms  "
        f"p90: {ordered[int(0.9 * (len(ordered) - 1))] * 1000:.0f} ms  "
        f"min: {ordered[0] * 1000:.0f} ms  max: {ordered[-1] * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20)
    args = parser.parse_args()
    local = load_config(default_state_dir())
    if local is None or not local.node:
        sys.exit(f"no local cluster with a node in {default_state_dir()}: run `mlplatform local up` first")
    api = config.new_client_from_config(config_file=str(StateLayout(local.state_dir).admin_kubeconfig))
    core = client.CoreV1Api(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        core.create_namespaced_pod(namespace, server_pod("warm-up"))  # builds the environment if needed
        while not ready(core.read_namespaced_pod("warm-up", namespace)):
            time.sleep(0.2)
        for probe in (True, False):
            label = (
                "with an httpGet readiness probe (periodSeconds: 1)" if probe else "without a readiness probe"
            )
            print(f"\n{args.pods} pods {label}:")
            latencies = []
            for index in range(args.pods):
                latency = start_latency(core, namespace, f"server-{int(probe)}-{index}", probe)
                latencies.append(latency)
                print(f"  pod {index + 1:>2}: create → Ready {latency * 1000:6.0f} ms")
            report(latencies)
    finally:
        core.delete_namespace(namespace)


if __name__ == "__main__":
    main()
