"""Serving throughput: one ModelDeployment pod of the platform's model server against one of plain
`mlflow models serve`, the same model version, the same core, the same run.

Runs against the local cluster in $MLPLATFORM_STATE_DIR (default ~/.cache/mlplatform/local), which must
be up with its node and MLflow stack, and needs `wrk` (Debian's package). Logs and registers two models
with the trainer-sklearn image's environment: a scikit-learn ElasticNet on the diabetes data, and a
python_function model (plain Python code, another flavor) on the same columns. Starts `mlplatform
operator` as a host process watching only the benchmark's namespace, and creates four ModelDeployments,
replicas 1 and workers 1: each model served by `server: mlplatform` (the default) and by `server: mlflow`.

Every serving process is pinned to the same core (--server-cpu, default 1) and wrk to another
(--client-cpu, default 0), so the figures are per core and the load generator does not take the servers'
time. For each model and each number of connections (1 and 10), wrk POSTs one row of the diabetes
features as dataframe_split JSON to the pod's IP for --seconds (after a warm-up of 3 s), to the
platform's server and to MLflow's in turn; it prints requests/s, p50 and p99 latency, and the ratios.
Both servers are checked to answer that request with the same bytes first. Results go to
benchmarks/results/serving.json. Nothing is asserted: this is a measurement, not a test.

    python benchmarks/serving.py [--seconds 20] [--connections 1 10] [--keep]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from kubernetes import client, config
from modeldeployment_latency import (
    BODY,
    IMAGE,
    Cluster,
    Logged,
    Registry,
    Statuses,
    other_operators,
    quiet,
    ready,
    start_operator,
)

from mlplatform import names
from mlplatform.local.config import LocalConfig, StateLayout, default_state_dir, load_config
from mlplatform.local.images import ensure_environment, load_image_map, resolve_image
from mlplatform.local.stack import endpoints

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "serving.json"
SERVERS = ("mlplatform", "mlflow")
WARM_UP_SECONDS = 3

# Run with the trainer image's Python: a python_function model on the diabetes columns (a fixed linear
# score in plain pandas), logged; prints its model id and run id.
LOG_PYFUNC = """
import json, sys
import mlflow, mlflow.pyfunc
import pandas as pd
from mlflow.models import infer_signature
from sklearn.datasets import load_diabetes

class Score(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        weights = [0.5, -1.0, 2.0, 1.5, -0.25, 0.75, -2.0, 1.0, 3.0, 0.1]
        return (model_input * weights).sum(axis=1) * 100 + 150

features = load_diabetes(return_X_y=True, as_frame=True)[0]
mlflow.set_experiment(sys.argv[1])
with mlflow.start_run(run_name="pyfunc") as run:
    info = mlflow.pyfunc.log_model(
        name="model", python_model=Score(), input_example=features.head(3),
        signature=infer_signature(features, Score().predict(None, features)),
    )
print(json.dumps({"model_id": info.model_id, "run_id": run.info.run_id}))
"""


@dataclass(frozen=True)
class Load:
    """One wrk run against one server."""

    model: str
    server: str
    connections: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx answers and socket errors


def log_pyfunc(registry: Registry, local: LocalConfig) -> None:
    """Log the python_function model and register it as registry.model, as Registry.log_models does."""
    environment = resolve_image(IMAGE, load_image_map())
    assert environment is not None, IMAGE
    venv = ensure_environment(environment, local.cache_dir, quiet)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", LOG_PYFUNC, registry.model],
        env={**environment.env, "MLFLOW_TRACKING_URI": registry.tracking_uri, "HOME": tempfile.gettempdir(),
             "PATH": f"{venv}/bin:/usr/bin:/bin"},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"logging the python_function model failed:\n{done.stderr[-3000:]}")
    registry.logged = [Logged(**json.loads(done.stdout.strip().splitlines()[-1]), prediction=0.0)]
    registry.api("POST", "registered-models/create", {"name": registry.model})


def create(cluster: Cluster, name: str, model: str, server: str) -> None:
    manifest = {
        "apiVersion": names.API_VERSION,
        "kind": names.MODELDEPLOYMENT_KIND,
        "metadata": {"name": name},
        "spec": {
            "model": {"name": model, "alias": "champion"},
            "replicas": 1,
            "workers": 1,
            "server": server,
        },
    }
    cluster.custom.create_namespaced_custom_object(
        names.GROUP, names.VERSION, cluster.namespace, names.MODELDEPLOYMENT_PLURAL, manifest
    )


def pod_of(cluster: Cluster, name: str) -> Any:
    [pod] = [p for p in cluster.pods(name) if p.metadata.deletion_timestamp is None]
    return pod


def pod_processes(pod_name: str) -> list[psutil.Process]:
    """The processes of a pod on the local node: they run on this host, with the pod's HOSTNAME."""
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.environ().get("HOSTNAME") == pod_name:
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def pin(processes: list[psutil.Process], cpu: int) -> None:
    for process in processes:
        for thread in process.threads():  # every thread: affinity is per thread
            psutil.Process(thread.id).cpu_affinity([cpu])


def answer(url: str) -> bytes:
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(f"{url}/invocations", data=BODY, method="POST", headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 - a pod's http URL
        return bytes(reply.read())


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
"""
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * UNITS[unit]


def wrk(url: str, connections: int, seconds: int, cpu: int, script: Path) -> dict[str, float]:
    command = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
               "-s", str(script), f"{url}/invocations"]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.MULTILINE))
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(map(int, socket_errors.groups())) if socket_errors else 0
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    return {"rate": rate, "p50": milliseconds(percentiles["50"]), "p99": milliseconds(percentiles["99"]),
            "requests": total, "errors": errors}  # fmt: skip


def pinned_urls(cluster: Cluster, model: str, args: argparse.Namespace) -> dict[str, str]:
    """Each server's URL for `model`, its processes pinned to the servers' core; checks both answer alike."""
    urls = {}
    for server in SERVERS:
        pod = pod_of(cluster, f"{model}-{server}")
        processes = pod_processes(pod.metadata.name)
        if not processes:
            sys.exit(f"no process of pod {pod.metadata.name} on this host")
        pin(processes, args.server_cpu)
        urls[server] = f"http://{pod.status.pod_ip}:8080"
    same = answer(urls["mlplatform"]) == answer(urls["mlflow"])
    print(f"{model}: both servers answer the request with the same bytes: {same}", flush=True)
    return urls


def measure(urls: dict[str, str], model: str, args: argparse.Namespace, script: Path) -> list[Load]:
    loads = []
    for connections in args.connections:
        for server in SERVERS:
            wrk(urls[server], connections, WARM_UP_SECONDS, args.client_cpu, script)
            found = wrk(urls[server], connections, args.seconds, args.client_cpu, script)
            load = Load(model, server, connections, found["rate"], found["p50"], found["p99"],
                        int(found["requests"]), int(found["errors"]))  # fmt: skip
            loads.append(load)
            figures = f"p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms, errors {load.errors}"
            print(f"  {model} {server} {connections} conn: {load.requests_per_second:.1f} req/s, {figures}")
    return loads


def table(loads: list[Load]) -> str:
    header = "model    conn   mlplatform req/s  p50 ms  p99 ms   mlflow req/s  p50 ms  p99 ms   req/s ratio"
    by = {(load.model, load.server, load.connections): load for load in loads}
    lines = [header]
    for model, connections in sorted({(load.model, load.connections) for load in loads}):
        ours, theirs = by[(model, "mlplatform", connections)], by[(model, "mlflow", connections)]
        ratio = ours.requests_per_second / theirs.requests_per_second
        columns = [ours.requests_per_second, ours.p50_ms, ours.p99_ms]
        columns += [theirs.requests_per_second, theirs.p50_ms, theirs.p99_ms]
        widths = (16, 7, 7, 14, 7, 7)
        figures = " ".join(
            f"{value:{width}.{1 if width > 7 else 2}f}" for value, width in zip(columns, widths, strict=True)
        )
        lines.append(f"{model:8} {connections:4}   {figures}   {ratio:10.2f}x")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    return {
        "cpus": psutil.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 2**30),
    }


def main() -> None:  # noqa: PLR0915 - one benchmark, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="each wrk run (default 20)")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--server-cpu", type=int, default=1, help="the core every server process runs on")
    parser.add_argument("--client-cpu", type=int, default=0, help="the core wrk runs on")
    parser.add_argument("--keep", action="store_true", help="keep the namespace and the registered models")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    local = load_config(default_state_dir())
    if local is None or not local.node or not local.stack:
        sys.exit(f"no local cluster with node and stack in {default_state_dir()}: run `mlplatform local up`")
    if others := other_operators():
        sys.exit(f"another `mlplatform operator` runs (pid {', '.join(map(str, others))}): stop it first")
    layout = StateLayout(local.state_dir)
    subprocess.run([str(layout.bin / "kubectl"), f"--kubeconfig={layout.admin_kubeconfig}", "apply",
                    "--server-side", "--force-conflicts", "--field-manager=mlplatform-benchmarks", "-f",
                    str(ROOT / "crds")], check=True, capture_output=True)  # fmt: skip
    api = config.new_client_from_config(config_file=str(layout.admin_kubeconfig))
    suffix = uuid.uuid4().hex[:6]
    namespace = f"bench-serve-{suffix}"
    tracking = endpoints(local).tracking_uri
    sklearn = Registry(tracking, f"bench-serve-sklearn-{suffix}")
    pyfunc = Registry(tracking, f"bench-serve-pyfunc-{suffix}")
    client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    cluster = Cluster(api, namespace, Statuses(client.CustomObjectsApi(api), namespace))
    cluster.statuses.start()
    workdir = Path(tempfile.mkdtemp(prefix="mlplatform-bench-serving-"))
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=json.dumps(BODY.decode())))
    operator = None
    try:
        print(f"logging and registering {sklearn.model} and {pyfunc.model} ...", flush=True)
        sklearn.log_models(local, sklearn.model)
        sklearn.set_alias(sklearn.register(0))
        log_pyfunc(pyfunc, local)
        pyfunc.set_alias(pyfunc.register(0))
        operator = start_operator(local, namespace, workdir / "operator.log", webhooks=False)
        models = {"sklearn": sklearn.model, "pyfunc": pyfunc.model}
        for model, registered in models.items():
            for server in SERVERS:
                create(cluster, f"{model}-{server}", registered, server)
        for model in models:
            for server in SERVERS:
                cluster.statuses.wait(f"{model}-{server}", ready, 0, "Ready")
        print(f"namespace {namespace}; servers on CPU {args.server_cpu}, wrk on CPU {args.client_cpu}; "
              f"{args.seconds} s per run after {WARM_UP_SECONDS} s of warm-up", flush=True)  # fmt: skip
        loads = [
            load
            for model in models
            for load in measure(pinned_urls(cluster, model, args), model, args, script)
        ]
        print("\n" + table(loads))
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
            "seconds": args.seconds, "server_cpu": args.server_cpu, "client_cpu": args.client_cpu,
            "request": BODY.decode(), "loads": [asdict(load) for load in loads],
        }, indent=2) + "\n")  # fmt: skip
        print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    finally:
        if not args.keep:
            cluster.delete_all()
            client.CoreV1Api(api).delete_namespace(namespace)
            for registry in (sklearn, pyfunc):
                registry.delete()
        if operator is not None:
            operator.stop()


if __name__ == "__main__":
    main()
