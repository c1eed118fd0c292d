"""ModelDeployment latency: create → first prediction, and alias move → new version serving (webhook, poll).

End to end, with the registry's webhooks and with polling alone.

Runs against the local cluster in $MLPLATFORM_STATE_DIR (default ~/.cache/mlplatform/local), which must
be up with its node and MLflow stack. Installs the CRDs, logs two scikit-learn models once (ElasticNets on
the diabetes data that predict differently, so an answer tells which one served it) with the
trainer-sklearn image's environment on this host, registers a model of its own, and starts
`mlplatform operator` as a host process watching only the benchmark's namespace. Then, --runs times
each, one after another:

1. create → first prediction: a ModelDeployment (replicas 1) of the alias `champion` is created, and
   POSTs to its Service's /invocations every 50 ms until one answers 200 with predictions;
2. alias move with webhooks (operator with MLPLATFORM_WEBHOOK_URL, pollIntervalSeconds 600, so only the
   webhook can move it in time): the alias is set to a new version (REST registered-models/alias) and
   the script times the rollout starting (status.targetVersion), the new version serving
   (status.modelVersion and Ready), and the first and the last answers of the new and old models seen by a
   client calling the Service every 50 ms;
3. the same alias move with polling alone (operator without a webhook, pollIntervalSeconds 10; --poll-
   interval): the alias is set at evenly spaced points of the poll interval (move i of n at
   (i + ½) / n of it after the previous rollout settled), so the figure is a poll wait (half the
   interval on average) plus the rollout. --skip-polling leaves this out.

Requests go from this host to the Service's ClusterIP: kube-proxy's iptables rules translate it for host
processes too and route to the pod over the node's bridge. Times are taken by this script (watches and
client clocks), not from object timestamps; nothing is asserted about them.

It refuses to start while another `mlplatform operator` process runs (--ignore-other-operators): a
cluster-wide one would reconcile the benchmark's ModelDeployments too, and the registry webhook is one
per tracking server (named mlplatform-operator), which each operator points at its own receiver. At the
end it deletes that webhook if it still points at the benchmark's operator, the ModelDeployments (while
the operator runs, which holds their finalizer), the namespace, the registered model and the
experiment (--keep keeps the namespace and the model).

    python benchmarks/modeldeployment_latency.py [--runs 5] [--skip-polling] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from mlplatform import names
from mlplatform.local.config import LocalConfig, StateLayout, default_state_dir, load_config
from mlplatform.local.images import ensure_environment, load_image_map, resolve_image
from mlplatform.local.stack import endpoints
from mlplatform.local.stack.tracking import in_cluster_uri
from mlplatform.webhooks import RECEIVER_PATH, WEBHOOK_NAME

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "mlplatform/trainer-sklearn:0.1.0"
ALIAS = "champion"
COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
ROW = [0.01] * len(COLUMNS)
BODY = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [ROW]}}).encode()
PROBE_INTERVAL = 0.05  # seconds between a client's requests
TIMEOUT = 240.0  # for anything the cluster does

# Run with the trainer image's Python: two models that answer ROW differently, logged (not registered).
LOG_MODELS = """
import json, sys
import mlflow, mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature
from sklearn.datasets import load_diabetes
from sklearn.linear_model import ElasticNet
features, target = load_diabetes(return_X_y=True, as_frame=True)
row = pd.DataFrame([[0.01] * 10], columns=features.columns)
mlflow.set_experiment(sys.argv[1])
logged = []
for alpha in (0.001, 0.5):
    with mlflow.start_run(run_name=f"alpha-{alpha}") as run:
        model = ElasticNet(alpha=alpha, l1_ratio=0.5, random_state=42).fit(features, target)
        info = mlflow.sklearn.log_model(
            model, name="model", signature=infer_signature(features, model.predict(features)),
            input_example=features.head(3),
        )
        logged.append({"model_id": info.model_id, "run_id": run.info.run_id,
                       "prediction": float(model.predict(row)[0])})
print(json.dumps(logged))
"""


def quiet(_: str) -> None:
    """Progress messages of environment builds are not part of the figures."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- MLflow -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Logged:
    model_id: str
    run_id: str
    prediction: float  # what it answers for ROW


@dataclass
class Registry:
    tracking_uri: str
    model: str
    logged: list[Logged] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)  # version -> index in `logged`

    def api(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the stack's own http URL
            f"{self.tracking_uri}/api/2.0/mlflow/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
                text = answer.read().decode()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"MLflow {method} {path}: {exc.code} {exc.read().decode()[:500]}") from exc
        found: dict[str, Any] = json.loads(text) if text.strip() else {}
        return found

    def log_models(self, local: LocalConfig, experiment: str) -> None:
        environment = resolve_image(IMAGE, load_image_map())
        if environment is None:
            sys.exit(f"local-images.yaml has no environment for {IMAGE}")
        venv = ensure_environment(environment, local.cache_dir, quiet)
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c", LOG_MODELS, experiment],
            env={
                **environment.env,
                "MLFLOW_TRACKING_URI": self.tracking_uri,
                "HOME": tempfile.gettempdir(),
                "PATH": f"{venv}/bin:/usr/bin:/bin",
            },
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(f"logging the models failed:\n{done.stderr[-3000:]}")
        self.logged = [Logged(**entry) for entry in json.loads(done.stdout.strip().splitlines()[-1])]
        self.api("POST", "registered-models/create", {"name": self.model})

    def register(self, source: int) -> str:
        """A new version of the model from logged model `source`, tagged with the image that serves it."""
        logged = self.logged[source]
        body = {
            "name": self.model,
            "source": f"models:/{logged.model_id}",
            "model_id": logged.model_id,
            "run_id": logged.run_id,
            "tags": [{"key": names.TAG_IMAGE, "value": IMAGE}],
        }
        version = str(self.api("POST", "model-versions/create", body)["model_version"]["version"])
        self.sources[version] = source
        return version

    def set_alias(self, version: str) -> None:
        self.api("POST", "registered-models/alias", {"name": self.model, "alias": ALIAS, "version": version})

    def which(self, prediction: float) -> int:
        """The logged model that answers `prediction`."""
        return min(range(len(self.logged)), key=lambda i: abs(self.logged[i].prediction - prediction))

    def delete(self) -> None:
        """Delete the registered model (its versions too) and the experiment of the logged models."""
        if self.logged:
            self.api("DELETE", "registered-models/delete", {"name": self.model})
        found = self.api("GET", f"experiments/get-by-name?experiment_name={self.model}")
        self.api("POST", "experiments/delete", {"experiment_id": found["experiment"]["experiment_id"]})

    def webhook(self) -> dict[str, Any] | None:
        hooks = self.api("GET", "webhooks?max_results=100").get("webhooks", [])
        return next((hook for hook in hooks if hook.get("name") == WEBHOOK_NAME), None)


# --- the operator -----------------------------------------------------------------------------------


@dataclass
class Operator:
    process: subprocess.Popen[bytes]
    health_port: int
    webhook_url: str | None

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise SystemExit(f"the operator exited with {self.process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_operator(local: LocalConfig, namespace: str, log: Path, webhooks: bool) -> Operator:
    """`mlplatform operator` as a host process, as the end-to-end tests run it, watching `namespace`
    only; with `webhooks`, its registry-webhook receiver on 127.0.0.1 (the tracking server runs on this
    host), registered with MLflow."""
    layout = StateLayout(local.state_dir)
    health_port, webhook_port = free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(layout.admin_kubeconfig),
        "MLPLATFORM_NAMESPACES": namespace,
        "MLPLATFORM_TRACKING_URI": endpoints(local).tracking_uri,
        "MLPLATFORM_POD_TRACKING_URI": in_cluster_uri(local),
        "MLPLATFORM_LISTEN_ADDRESS": "127.0.0.1",
        "MLPLATFORM_HEALTH_PORT": str(health_port),
        "MLPLATFORM_METRICS_PORT": str(free_port()),
        "MLPLATFORM_WEBHOOK_PORT": str(webhook_port),
    }
    for variable in ("MLPLATFORM_WEBHOOK_URL", "MLPLATFORM_WEBHOOK_SECRET"):
        env.pop(variable, None)
    url = f"http://127.0.0.1:{webhook_port}{RECEIVER_PATH}" if webhooks else None
    if url:
        env["MLPLATFORM_WEBHOOK_URL"] = url
        env["MLPLATFORM_WEBHOOK_SECRET"] = secrets.token_hex(16)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlplatform.cli", "operator"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    operator = Operator(process, health_port, url)
    try:
        until(operator.healthy, 60, "the operator answers /healthz")
    except BaseException:
        operator.stop()
        raise
    return operator


def other_operators() -> list[int]:
    """Other `mlplatform operator` processes on this machine (a cluster-wide one would reconcile the
    benchmark's objects too, and its registry webhook is the same MLflow webhook this one registers)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "mlplatform.cli operator" in cmdline and process.info["pid"] != os.getpid():
            found.append(int(process.info["pid"]))
    return found


# --- watching the cluster ---------------------------------------------------------------------------


def until(check: Callable[[], object], timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


class Statuses(threading.Thread):
    """Every status of the namespace's ModelDeployments, as a watch delivers it, with the time it came."""

    def __init__(self, custom: client.CustomObjectsApi, namespace: str) -> None:
        super().__init__(daemon=True)
        self.custom, self.namespace = custom, namespace
        self.seen: list[tuple[float, str, dict[str, Any]]] = []
        self.changed = threading.Condition()

    def run(self) -> None:
        while True:
            try:
                for event in watch.Watch().stream(
                    self.custom.list_namespaced_custom_object,
                    names.GROUP,
                    names.VERSION,
                    self.namespace,
                    names.MODELDEPLOYMENT_PLURAL,
                    timeout_seconds=300,
                ):
                    found = event["object"]
                    with self.changed:
                        self.seen.append(
                            (time.monotonic(), found["metadata"]["name"], found.get("status") or {})
                        )
                        self.changed.notify_all()
            except Exception:  # a broken stream is opened again (and lists everything anew)
                time.sleep(0.5)

    def wait(self, name: str, check: Callable[[dict[str, Any]], bool], since: float, what: str) -> float:
        """When the first status of `name` that passes `check` arrived, at or after `since`."""
        deadline = time.monotonic() + TIMEOUT
        with self.changed:
            while True:
                for seen, found, status in self.seen:
                    if found == name and seen >= since and check(status):
                        return seen
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: {what} not within {TIMEOUT:.0f} s")
                self.changed.wait(1)


def ready(status: Mapping[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])


def serving(version: str) -> Callable[[dict[str, Any]], bool]:
    return lambda status: status.get("modelVersion") == version and ready(status)


def invoke(cluster_ip: str) -> float | None:
    """The prediction the Service answers for ROW; None if it does not answer 200 with predictions."""
    request = urllib.request.Request(
        f"http://{cluster_ip}/invocations",
        data=BODY,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            return float(json.loads(answer.read())["predictions"][0])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


class Client(threading.Thread):
    """Calls the Service every PROBE_INTERVAL; notes when each answer came, and what it was."""

    def __init__(self, cluster_ip: str) -> None:
        super().__init__(daemon=True)
        self.cluster_ip = cluster_ip
        self.answers: list[tuple[float, float | None]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            prediction = invoke(self.cluster_ip)
            self.answers.append((time.monotonic(), prediction))
            self.stopped.wait(PROBE_INTERVAL)

    def between(self, start: float, end: float) -> list[tuple[float, float | None]]:
        return [(at, prediction) for at, prediction in list(self.answers) if start <= at <= end]


@dataclass
class Cluster:
    api: client.ApiClient
    namespace: str
    statuses: Statuses

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def create(self, name: str, model: str, poll_interval: int) -> float:
        """Create a ModelDeployment of the alias; when the create call was made."""
        manifest = {
            "apiVersion": names.API_VERSION,
            "kind": names.MODELDEPLOYMENT_KIND,
            "metadata": {"name": name},
            "spec": {
                "model": {"name": model, "alias": ALIAS},
                "replicas": 1,
                "pollIntervalSeconds": poll_interval,
            },
        }
        started = time.monotonic()
        self.custom.create_namespaced_custom_object(
            names.GROUP, names.VERSION, self.namespace, names.MODELDEPLOYMENT_PLURAL, manifest
        )
        return started

    def cluster_ip(self, name: str) -> str | None:
        try:
            return str(self.core.read_namespaced_service(name, self.namespace).spec.cluster_ip)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def pods(self, name: str) -> list[Any]:
        selector = f"{names.LABEL_MODELDEPLOYMENT}={name}"
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def settled(self, name: str) -> bool:
        """One pod, ready, and nothing terminating."""
        pods = self.pods(name)
        return len(pods) == 1 and pods[0].metadata.deletion_timestamp is None and pod_ready(pods[0])

    def delete(self, name: str) -> None:
        """Delete the ModelDeployment and wait until it and its pods are gone (the operator runs)."""
        try:
            self.custom.delete_namespaced_custom_object(
                names.GROUP, names.VERSION, self.namespace, names.MODELDEPLOYMENT_PLURAL, name
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

        def gone() -> bool:
            try:
                self.custom.get_namespaced_custom_object(
                    names.GROUP, names.VERSION, self.namespace, names.MODELDEPLOYMENT_PLURAL, name
                )
            except ApiException as exc:
                if exc.status == 404:
                    return not self.pods(name)
                raise
            return False

        until(gone, TIMEOUT, f"{name} and its pods deleted", interval=0.5)

    def delete_all(self) -> None:
        found = self.custom.list_namespaced_custom_object(
            names.GROUP, names.VERSION, self.namespace, names.MODELDEPLOYMENT_PLURAL
        )
        for item in found.get("items", []):
            self.delete(item["metadata"]["name"])


def pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


# --- the measurements -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    service: float  # create → the Service exists (the operator's first pass applied it)
    ready: float  # create → status Ready
    answered: float  # create → the first 200 with predictions
    request: float  # how long the request that got it took (a SYN lost to a rule change waits 1 s, 2 s)


def create_to_prediction(cluster: Cluster, model: str, index: int) -> Created:
    name = f"create-{index}"
    started = cluster.create(name, model, 600)
    service = prediction = None
    cluster_ip = None
    deadline = started + TIMEOUT
    while prediction is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: no prediction within {TIMEOUT:.0f} s")
        if cluster_ip is None:
            cluster_ip = cluster.cluster_ip(name)
            service = time.monotonic() if cluster_ip else None
        sent = time.monotonic()
        if cluster_ip is not None and invoke(cluster_ip) is not None:
            prediction = time.monotonic()
        else:
            time.sleep(PROBE_INTERVAL)
    assert service is not None
    was_ready = cluster.statuses.wait(name, ready, started, "Ready")
    cluster.delete(name)
    return Created(service - started, was_ready - started, prediction - started, prediction - sent)


@dataclass(frozen=True)
class Move:
    delay: float  # how long after the previous rollout settled the alias was set
    started: float  # alias set → status.targetVersion is the new version
    serving: float  # alias set → status.modelVersion is the new version, Ready
    first_new: float | None  # alias set → the client's first answer from the new model
    last_old: float | None  # alias set → the client's last answer from the old model
    failed: int  # the client's requests that got no prediction, from the alias set until settled
    answered: int


def alias_moves(
    cluster: Cluster, registry: Registry, name: str, *, runs: int, poll_interval: int, spread: bool
) -> list[Move]:
    """Serve the alias from a new ModelDeployment, then move the alias `runs` times, each to a new version
    of the other logged model, with a client calling the Service all along."""
    current = registry.register(0)
    registry.set_alias(current)
    created = cluster.create(name, registry.model, poll_interval)
    cluster.statuses.wait(name, serving(current), created, f"version {current} serving")
    until(lambda: cluster.settled(name), TIMEOUT, f"{name} settled")
    cluster_ip = cluster.cluster_ip(name)
    assert cluster_ip is not None
    traffic = Client(cluster_ip)
    traffic.start()
    moves = []
    try:
        for index in range(runs):
            old = registry.sources[current]
            new_version = registry.register(1 - old)  # the version-created webhook changes nothing
            # Spread over the poll interval (the object's timer restarts with each pass, the last one about
            # when the rollout settled), or just past the pass the version-created webhook wakes.
            delay = poll_interval * (index + 0.5) / runs if spread else 2.0
            time.sleep(delay)
            moved = time.monotonic()
            registry.set_alias(new_version)
            started = cluster.statuses.wait(
                name, lambda s, v=new_version: s.get("targetVersion") == v, moved, "rollout started"
            )
            served = cluster.statuses.wait(name, serving(new_version), moved, f"{new_version} serving")
            until(lambda: cluster.settled(name), TIMEOUT, f"{name} settled")
            time.sleep(1)  # the client's answers up to now are in
            answers = traffic.between(moved, time.monotonic())
            sources = [(at, None if p is None else registry.which(p)) for at, p in answers]
            first_new = next((at - moved for at, s in sources if s == 1 - old), None)
            last_old = max((at - moved for at, s in sources if s == old), default=None)
            failed = sum(1 for _, s in sources if s is None)
            moves.append(
                Move(delay, started - moved, served - moved, first_new, last_old, failed, len(answers))
            )
            waited = f", set {delay:4.1f} s after the last settled" if spread else ""
            print(
                f"  move {len(moves)} (to version {new_version}{waited}):"
                f" rollout started {started - moved:5.2f} s,"
                f" serving {served - moved:5.2f} s, first new answer {seconds(first_new)},"
                f" last old answer {seconds(last_old)}, {failed}/{len(answers)} requests failed",
                flush=True,
            )
            current = new_version
    finally:
        traffic.stopped.set()
        traffic.join(timeout=10)
    cluster.delete(name)
    return moves


def seconds(value: float | None) -> str:
    return "    —  " if value is None else f"{value:5.2f} s"


def summary(label: str, values: list[float], unit: str = "s") -> str:
    if not values:
        return f"  {label:<44} —"
    scale, fmt = (1000, ".0f") if unit == "ms" else (1, ".2f")
    median, low, high = (v * scale for v in (statistics.median(values), min(values), max(values)))
    return f"  {label:<44} median {median:{fmt}} {unit}  (min {low:{fmt}}, max {high:{fmt}}, n={len(values)})"


def print_moves(moves: list[Move]) -> None:
    print(summary("alias set → rollout started (targetVersion)", [m.started for m in moves]))
    print(summary("alias set → new version serving (Ready)", [m.serving for m in moves]))
    print(
        summary(
            "alias set → first answer of the new model",
            [m.first_new for m in moves if m.first_new is not None],
        )
    )
    print(
        summary(
            "alias set → last answer of the old model", [m.last_old for m in moves if m.last_old is not None]
        )
    )
    failed, answered = sum(m.failed for m in moves), sum(m.answered for m in moves)
    print(f"  client requests during the moves: {answered - failed} answered, {failed} failed")


def main() -> None:  # noqa: PLR0912, PLR0915 - one benchmark, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measurements of each kind (default 5)")
    parser.add_argument(
        "--skip-polling", action="store_true", help="leave out the alias moves without webhook"
    )
    parser.add_argument("--poll-interval", type=int, default=10, help="pollIntervalSeconds without webhook")
    parser.add_argument("--keep", action="store_true", help="keep the namespace and the registered model")
    parser.add_argument(
        "--ignore-other-operators",
        action="store_true",
        help="run even if another `mlplatform operator` process runs (its figures would be mixed in)",
    )
    args = parser.parse_args()
    local = load_config(default_state_dir())
    if local is None or not local.node or not local.stack:
        sys.exit(f"no local cluster with node and stack in {default_state_dir()}: run `mlplatform local up`")
    if (others := other_operators()) and not args.ignore_other_operators:
        sys.exit(
            f"another `mlplatform operator` runs (pid {', '.join(map(str, others))}): a cluster-wide one "
            "reconciles this benchmark's ModelDeployments too, and the registry webhook is one for all "
            "operators; stop it, or pass --ignore-other-operators"
        )
    layout = StateLayout(local.state_dir)
    kubectl = [str(layout.bin / "kubectl"), f"--kubeconfig={layout.admin_kubeconfig}"]
    # The same files the tests install (with a field manager of their own): taking the fields over changes
    # nothing else.
    apply = ["apply", "--server-side", "--force-conflicts", "--field-manager=mlplatform-benchmarks"]
    subprocess.run([*kubectl, *apply, "-f", str(ROOT / "crds")], check=True)
    subprocess.run([*kubectl, "wait", "--for=condition=Established", "crd", "--all"], check=True)
    api = config.new_client_from_config(config_file=str(layout.admin_kubeconfig))
    suffix = uuid.uuid4().hex[:6]
    namespace = f"bench-{suffix}"
    registry = Registry(endpoints(local).tracking_uri, f"bench-md-{suffix}")
    client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    cluster = Cluster(api, namespace, Statuses(client.CustomObjectsApi(api), namespace))
    cluster.statuses.start()
    log = Path(tempfile.mkdtemp(prefix="mlplatform-bench-")) / "operator.log"
    operator: Operator | None = None
    hook_url: str | None = None
    try:
        print(f"logging two models of {IMAGE} and registering {registry.model} ...", flush=True)
        registry.log_models(local, registry.model)
        first = registry.register(0)
        registry.set_alias(first)
        operator = start_operator(local, namespace, log, webhooks=True)
        hook_url = operator.webhook_url
        until(
            lambda: (registry.webhook() or {}).get("url") == hook_url,
            30,
            "the operator's registry webhook registered with MLflow",
        )
        print(
            f"namespace {namespace}, model {registry.model}, operator log {log}\n"
            f"requests: POST http://<the Service's ClusterIP>:80/invocations from this host (kube-proxy's "
            f"iptables rules route it to the pod), one row of the diabetes features, every "
            f"{PROBE_INTERVAL * 1000:.0f} ms",
            flush=True,
        )

        print(f"\n1. create → first prediction: {args.runs} ModelDeployments (replicas 1), one after another")
        created = []
        for index in range(args.runs):
            result = create_to_prediction(cluster, registry.model, index)
            created.append(result)
            print(
                f"  run {index + 1}: create → Service {result.service * 1000:5.0f} ms,"
                f" → Ready {result.ready:5.2f} s, → first prediction {result.answered:5.2f} s"
                f" (that request took {result.request * 1000:.0f} ms)",
                flush=True,
            )

        print(
            f"\n2. alias move with the registry webhook ({operator.webhook_url}), pollIntervalSeconds 600:"
            f" {args.runs} moves"
        )
        with_hooks = alias_moves(
            cluster, registry, "moves-webhook", runs=args.runs, poll_interval=600, spread=False
        )

        polled: list[Move] = []
        if not args.skip_polling:
            operator.stop()
            operator = start_operator(local, namespace, log, webhooks=False)
            print(
                f"\n3. alias move without webhook (polling alone), pollIntervalSeconds {args.poll_interval},"
                f" the alias set at evenly spaced points of the interval: {args.runs} moves"
            )
            polled = alias_moves(
                cluster,
                registry,
                "moves-polling",
                runs=args.runs,
                poll_interval=args.poll_interval,
                spread=True,
            )

        print(f"\nresults (median of {args.runs}, min, max):")
        print("1. create a ModelDeployment → first prediction")
        print(summary("create → Service created", [c.service for c in created], "ms"))
        print(summary("create → Ready", [c.ready for c in created]))
        print(summary("create → first prediction through the Service", [c.answered for c in created]))
        print("2. alias move, with the registry webhook")
        print_moves(with_hooks)
        if polled:
            print(f"3. alias move, polling every {args.poll_interval} s (no webhook)")
            print_moves(polled)
        print(
            "\n'rollout started': the operator re-resolved the alias and pinned the new version (status."
            "targetVersion);\n'serving': the new pod is ready and the old one replaced (status.modelVersion, "
            "Ready);\n'first/last answer': what the client calling the Service saw (the two models predict "
            "differently);\nwithout webhook the move waits for the next poll: half the interval on average."
        )
    finally:
        if operator is not None and operator.process.poll() is None:
            if not args.keep:
                try:
                    cluster.delete_all()  # while the operator runs: it removes its finalizers
                except Exception as exc:  # clean up the rest regardless
                    print(f"deleting the ModelDeployments: {exc}", file=sys.stderr)
            operator.stop()
        if not args.keep:
            client.CoreV1Api(api).delete_namespace(namespace)
            try:
                registry.delete()
            except RuntimeError as exc:
                print(exc, file=sys.stderr)
        else:
            print(
                f"kept namespace {namespace} and model {registry.model} (the ModelDeployments keep the "
                "operator's finalizer: delete them while an operator runs)"
            )
        try:
            hook = registry.webhook()
            if hook and hook_url is not None and hook.get("url") == hook_url:
                registry.api("DELETE", f"webhooks/{hook['webhook_id']}")  # ours, pointing nowhere now
        except RuntimeError as exc:
            print(exc, file=sys.stderr)


if __name__ == "__main__":
    main()
