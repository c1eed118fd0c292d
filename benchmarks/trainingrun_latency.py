"""TrainingRun latency, end to end: create → Job created, and create → Succeeded (trained, registered).

Runs against the local cluster in $MLPLATFORM_STATE_DIR (default ~/.cache/mlplatform/local), which must
be up with its node and MLflow stack. Installs the CRDs, starts `mlplatform operator` as a host process,
then applies the scikit-learn ConfigMap example (examples/trainingrun-sklearn-configmap.yaml) --runs
times, one after another, each under a new name, and prints each latency and the medians. Times are taken
by this script from watches (client clocks), not from object timestamps (whole seconds).

    python benchmarks/trainingrun_latency.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from common import start_operator
from kubernetes import client, config, watch

from mlplatform import names
from mlplatform.local.config import StateLayout, default_state_dir, load_config
from mlplatform.local.stack import endpoints
from mlplatform.local.stack.tracking import in_cluster_uri

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "trainingrun-sklearn-configmap.yaml"


class JobWatcher(threading.Thread):
    """Notes when each Job of the namespace first appears."""

    def __init__(self, batch: client.BatchV1Api, namespace: str) -> None:
        super().__init__(daemon=True)
        self.batch, self.namespace = batch, namespace
        self.seen: dict[str, float] = {}

    def run(self) -> None:
        for event in watch.Watch().stream(
            self.batch.list_namespaced_job, self.namespace, timeout_seconds=3600
        ):
            self.seen.setdefault(event["object"].metadata.name, time.monotonic())


def wait_finished(custom: client.CustomObjectsApi, namespace: str, name: str) -> tuple[str, float]:
    stream = watch.Watch()
    for event in stream.stream(
        custom.list_namespaced_custom_object,
        names.GROUP,
        names.VERSION,
        namespace,
        names.TRAININGRUN_PLURAL,
        field_selector=f"metadata.name={name}",
        timeout_seconds=600,
    ):
        phase = (event["object"].get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            stream.stop()
            return str(phase), time.monotonic()
    raise TimeoutError(f"{name} did not finish within 600 s")


def one_run(
    api: client.ApiClient, namespace: str, run: dict[str, Any], jobs: JobWatcher
) -> tuple[float, float]:
    custom = client.CustomObjectsApi(api)
    name = run["metadata"]["name"]
    started = time.monotonic()
    custom.create_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.TRAININGRUN_PLURAL, run
    )
    phase, finished = wait_finished(custom, namespace, name)
    if phase != "Succeeded":
        raise SystemExit(f"{name} ended {phase}: kubectl describe tr {name} -n {namespace}")
    return jobs.seen[name] - started, finished - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    local = load_config(default_state_dir())
    if local is None or not local.node or not local.stack:
        sys.exit(f"no local cluster with node and stack in {default_state_dir()}: run `mlplatform local up`")
    layout = StateLayout(local.state_dir)
    kubectl = [str(layout.bin / "kubectl"), f"--kubeconfig={layout.admin_kubeconfig}"]
    subprocess.run(
        [*kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds")], check=True
    )
    subprocess.run([*kubectl, "wait", "--for=condition=Established", "crd", "--all"], check=True)
    api = config.new_client_from_config(config_file=str(layout.admin_kubeconfig))
    core = client.CoreV1Api(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    log = Path(tempfile.mkdtemp()) / "operator.log"
    operator = start_operator(
        layout.admin_kubeconfig, endpoints(local).tracking_uri, in_cluster_uri(local), log
    )
    try:
        config_map, template = list(yaml.safe_load_all(EXAMPLE.read_text()))
        core.create_namespaced_config_map(namespace, config_map)
        jobs = JobWatcher(client.BatchV1Api(api), namespace)
        jobs.start()
        time.sleep(3)  # the operator's watches are established
        to_job, to_done = [], []
        model = f"bench-{uuid.uuid4().hex[:6]}"
        print(f"{args.runs} runs of {EXAMPLE.name}, one after another (operator log: {log}):")
        for index in range(args.runs):
            run = {**template, "metadata": {"name": f"run-{index}"}}
            run["spec"] = {**template["spec"], "model": {"name": model}}
            job_latency, done_latency = one_run(api, namespace, run, jobs)
            to_job.append(job_latency)
            to_done.append(done_latency)
            print(
                f"  run {index + 1}: create → Job {job_latency * 1000:6.0f} ms"
                f"   create → Succeeded {done_latency:5.1f} s"
            )
        print(
            f"median: create → Job {statistics.median(to_job) * 1000:.0f} ms, "
            f"create → Succeeded {statistics.median(to_done):.1f} s"
        )
    finally:
        os.killpg(operator.pid, signal.SIGTERM)
        operator.wait(timeout=30)
        core.delete_namespace(namespace)


if __name__ == "__main__":
    main()
