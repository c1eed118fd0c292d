"""What the benchmarks share: the local platform, operator processes, request counts, sampling, results.

Not a benchmark itself: `python benchmarks/<name>.py` puts this folder first on sys.path, so the scripts
import it as `common`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import psutil
import urllib3
import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from mlplatform import names
from mlplatform.local.config import (
    LocalConfig,
    StateLayout,
    default_cache_dir,
    default_state_dir,
    load_config,
)
from mlplatform.local.images import ImageEnvironment, ensure_environment, load_image_map, resolve_image
from mlplatform.local.stack import endpoints
from mlplatform.local.stack.tracking import in_cluster_uri

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PEER_SCRIPT = ROOT / "benchmarks" / "kopf_peer.py"
OPERATOR_IMAGE = "mlplatform/operator"
NOT_FOUND = 404
CONFLICT = 409


# --- the local platform ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    config: LocalConfig
    layout: StateLayout

    @property
    def kubectl(self) -> list[str]:
        return [str(self.layout.bin / "kubectl"), f"--kubeconfig={self.layout.admin_kubeconfig}"]

    @property
    def tracking_uri(self) -> str:
        return endpoints(self.config).tracking_uri

    @property
    def pod_tracking_uri(self) -> str:
        return in_cluster_uri(self.config)

    def admin_api(self, connections: int = 4) -> client.ApiClient:
        """An API client as cluster admin, with room for `connections` threads at once."""
        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            str(self.layout.admin_kubeconfig), client_configuration=configuration
        )
        configuration.connection_pool_maxsize = connections
        return client.ApiClient(configuration)


def local_platform(*, node: bool) -> Platform:
    """The running local cluster with its MLflow stack (and node, if asked), else exit saying what to do."""
    local = load_config(default_state_dir())
    if local is None or not local.stack or (node and not local.node):
        needs = "node and stack" if node else "MLflow stack"
        sys.exit(f"no local cluster with its {needs} in {default_state_dir()}: run `mlplatform local up`")
    return Platform(local, StateLayout(local.state_dir))


def install_crds(local: Platform) -> None:
    crds = ["apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds")]
    subprocess.run([*local.kubectl, *crds], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*local.kubectl, "wait", "--for=condition=Established", "crd", "--all"], check=True)


# --- operator processes ---------------------------------------------------------------------------


def operator_env(
    kubeconfig: Path, tracking_uri: str, pod_uri: str, health_port: int, metrics_port: int
) -> dict[str, str]:
    return {
        **os.environ,
        **operator_image().env,  # its allocator, for one: the bench runs the operator as the image does
        "PYTHONPATH": str(ROOT / "operator" / "src"),  # where the image has it, here
        "KUBECONFIG": str(kubeconfig),
        "MLPLATFORM_TRACKING_URI": tracking_uri,
        "MLPLATFORM_POD_TRACKING_URI": pod_uri,
        "MLPLATFORM_LISTEN_ADDRESS": "127.0.0.1",
        "MLPLATFORM_HEALTH_PORT": str(health_port),
        "MLPLATFORM_METRICS_PORT": str(metrics_port),
    }


def start_operator(
    kubeconfig: Path,
    tracking_uri: str,
    pod_uri: str,
    log: Path,
    *,
    namespaces: Sequence[str] = (),
    health_port: int = 28080,
    metrics_port: int = 29090,
) -> subprocess.Popen[bytes]:
    """`mlplatform operator` as a host process (all namespaces unless `namespaces` names some)."""
    env = operator_env(kubeconfig, tracking_uri, pod_uri, health_port, metrics_port)
    if namespaces:
        env["MLPLATFORM_NAMESPACES"] = ",".join(namespaces)
    return spawn([str(operator_python()), "-m", "mlplatform.cli", "operator"], env, log)


def start_peer(kubeconfig: Path, namespace: str, log: Path, health_port: int) -> subprocess.Popen[bytes]:
    """The plain kopf operator of kopf_peer.py, watching one namespace."""
    argv = [
        str(operator_python()),
        str(PEER_SCRIPT),
        "--namespace",
        namespace,
        "--health-port",
        str(health_port),
    ]
    return spawn(argv, {**os.environ, "KUBECONFIG": str(kubeconfig)}, log)


@cache
def operator_python() -> Path:
    """The Python of the operator image's environment (operator/requirements.txt), as the local node runs
    the chart's operator pod: ours and the peer run with the libraries the image ships, not the bench's
    (kopf loads the official clients' models whenever they are installed). Our package comes from
    $PYTHONPATH, as in the image."""
    local = load_config(default_state_dir())
    cache_dir = local.cache_dir if local is not None else default_cache_dir()
    return ensure_environment(operator_image(), cache_dir) / "bin" / "python"


@cache
def operator_image() -> ImageEnvironment:
    """The operator image as the local image map has it (from operator/Dockerfile)."""
    image = resolve_image(OPERATOR_IMAGE, load_image_map())
    assert image is not None, f"{OPERATOR_IMAGE} is not in the local image map"
    return image


OPERATORS = ("ours", "peer")


@dataclass(frozen=True)
class OperatorBench:
    """What a benchmark of ours against the peer starts from: which to run, the cluster, the identity
    they run as (whose apiserver requests are counted) and a folder for their logs."""

    operators: list[str]
    local: Platform
    identity: OperatorIdentity
    logs: Path


def prepare_operator_bench(
    parser: argparse.ArgumentParser, operators: str, wait_minutes: float, name: str
) -> OperatorBench:
    """Check `--operators`, wait until no other operator runs, install the CRDs and make the identity."""
    chosen = [operator for operator in operators.split(",") if operator]
    if unknown := set(chosen) - set(OPERATORS):
        parser.error(f"unknown operator(s) {', '.join(sorted(unknown))}: choose from {', '.join(OPERATORS)}")
    wait_alone(wait_minutes)
    local = local_platform(node=False)
    install_crds(local)
    logs = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    identity = OperatorIdentity(local.admin_api(), logs / "operator.kubeconfig")
    identity.create(local.layout.admin_kubeconfig)
    return OperatorBench(chosen, local, identity, logs)


def start_watching_one(
    operator: str, local: Platform, kubeconfig: Path, namespace: str, log: Path, *, ports: tuple[int, int]
) -> subprocess.Popen[bytes]:
    """`ours` or the kopf `peer`, watching `namespace` only, on (health port, metrics port)."""
    health_port, metrics_port = ports
    if operator == "peer":
        return start_peer(kubeconfig, namespace, log, health_port)
    return start_operator(
        kubeconfig,
        local.tracking_uri,
        local.pod_tracking_uri,
        log,
        namespaces=[namespace],
        health_port=health_port,
        metrics_port=metrics_port,
    )


def other_operators() -> list[str]:
    """Operators already running on this machine: one watching all namespaces would act on the bench's
    objects too, and any of them takes CPU from the one measured."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        argv = process.info["cmdline"] or []
        if ("mlplatform.cli" in argv and "operator" in argv) or any(a.endswith("kopf_peer.py") for a in argv):
            found.append(f"{process.info['pid']} {' '.join(argv)[:100]}")
    return found


def wait_alone(minutes: float) -> None:
    """Wait until no other operator runs on this machine (at most `minutes`), or exit."""
    deadline = time.monotonic() + minutes * 60
    while running_now := other_operators():
        if time.monotonic() > deadline:
            sys.exit("other operators still run; measure when they are gone:\n  " + "\n  ".join(running_now))
        print(f"waiting for other operators to end: {'; '.join(running_now)}", flush=True)
        time.sleep(15)


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        # Its own session, so stopping it stops anything it started and nothing else.
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 60) -> None:
    """Wait for the process's liveness endpoint (kopf serves it once its startup handlers ran)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the operator exited with {process.returncode}; its log: {log}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own loopback URL
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    sys.exit(f"the operator did not answer {url} within {timeout:g} s; its log: {log}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def running(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield process
    finally:
        stop_process(process)


# --- what a process costs -------------------------------------------------------------------------


class Usage:
    """Resident memory and CPU time of one process, read from /proc through psutil."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)

    def rss_mb(self) -> float:
        return self.process.memory_info().rss / 2**20

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)


MLFLOW_SERVICES = ("mlflow-server", "postgres")  # what an MLflow call costs, server side
API_SERVICES = ("kube-apiserver", "etcd")


def service_cpu_seconds(local: Platform, services: Iterable[str]) -> float:
    """CPU seconds of local platform services so far, with their worker processes (MLflow's uvicorn
    workers, PostgreSQL's backends)."""
    total = 0.0
    for service in services:
        record = json.loads((local.layout.run / f"{service}.pid.json").read_text())
        leader = psutil.Process(int(record["pid"]))
        for process in [leader, *leader.children(recursive=True)]:
            with suppress(psutil.Error):  # a worker that ended meanwhile
                times = process.cpu_times()
                total += times.user + times.system
    return total


def idle_cpu(usage: Usage, seconds: float) -> float:
    """CPU seconds the process spent over a window of `seconds` in which nobody asked it anything."""
    before = usage.cpu_seconds()
    time.sleep(seconds)
    return usage.cpu_seconds() - before


def percentile(values: Sequence[float], percent: int) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def prometheus_sum(text: str, metric: str, **labels: str) -> float:
    """The sum of the samples of `metric` whose labels include `labels`, from Prometheus text format."""
    total = 0.0
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    for line in text.splitlines():
        named = line.startswith((metric + "{", metric + " "))
        if named and all(label in line for label in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - our own loopback URL
        return str(answer.read().decode())


# --- apiserver requests of one client ---------------------------------------------------------------


@dataclass
class OperatorIdentity:
    """A ServiceAccount the operator under test authenticates as, and a FlowSchema that matches only it.

    The apiserver's request counter has no user label, but API Priority and Fairness counts dispatched
    requests per FlowSchema: a schema of its own (on the exempt priority level, as the admin user the
    operators would otherwise run as) gives the operator's requests alone. Cluster-admin, for the bench.
    """

    api: client.ApiClient
    kubeconfig: Path
    name: str = "mlplatform-bench-operator"
    namespace: str = "default"

    def create(self, admin_kubeconfig: Path) -> None:
        core, rbac = untyped(client.CoreV1Api(self.api)), untyped(client.RbacAuthorizationV1Api(self.api))
        flowcontrol = untyped(client.FlowcontrolApiserverV1Api(self.api))
        account = {"metadata": {"name": self.name}}
        binding = {
            "metadata": {"name": self.name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": self.name, "namespace": self.namespace}],
        }
        ignore_conflict(lambda: core.create_namespaced_service_account(self.namespace, account))
        ignore_conflict(lambda: rbac.create_cluster_role_binding(binding))
        ignore_conflict(lambda: flowcontrol.create_flow_schema(self.flow_schema()))
        request = {"spec": {"expirationSeconds": 6 * 3600}}
        token = core.create_namespaced_service_account_token(self.name, self.namespace, request).status.token
        self.write_kubeconfig(admin_kubeconfig, token)

    def flow_schema(self) -> dict[str, Any]:
        subject = {
            "kind": "ServiceAccount",
            "serviceAccount": {"name": self.name, "namespace": self.namespace},
        }
        everything = {
            "verbs": ["*"],
            "apiGroups": ["*"],
            "resources": ["*"],
            "namespaces": ["*"],
            "clusterScope": True,
        }
        return {
            "metadata": {"name": self.name},
            "spec": {
                "priorityLevelConfiguration": {"name": "exempt"},
                "matchingPrecedence": 100,
                "rules": [
                    {
                        "subjects": [subject],
                        "resourceRules": [everything],
                        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    }
                ],
            },
        }

    def write_kubeconfig(self, admin_kubeconfig: Path, token: str) -> None:
        admin = yaml.safe_load(admin_kubeconfig.read_text())
        cluster = admin["clusters"][0]
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": self.name, "user": {"token": token}}],
            "contexts": [{"name": self.name, "context": {"cluster": cluster["name"], "user": self.name}}],
            "current-context": self.name,
        }
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig))
        self.kubeconfig.chmod(0o600)

    def requests(self) -> float:
        """Requests the apiserver has dispatched for this identity so far (watches included)."""
        request = self.api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
        response = untyped(self.api).call_api(*request)
        text = response.read().decode()
        return prometheus_sum(text, "apiserver_flowcontrol_dispatched_requests_total", flow_schema=self.name)

    def delete(self) -> None:
        core, rbac = client.CoreV1Api(self.api), client.RbacAuthorizationV1Api(self.api)
        ignore_missing(lambda: client.FlowcontrolApiserverV1Api(self.api).delete_flow_schema(self.name))
        ignore_missing(lambda: rbac.delete_cluster_role_binding(self.name))
        ignore_missing(lambda: core.delete_namespaced_service_account(self.name, self.namespace))
        self.kubeconfig.unlink(missing_ok=True)


def untyped(api: object) -> Any:
    """An API of the kubernetes client as its calls work: they take plain dicts as bodies (its stubs ask
    for model objects) and answer objects whose optional fields the bench knows are set."""
    return api


def ignore_conflict(call: Callable[[], object]) -> None:
    try:
        call()
    except ApiException as exc:
        if exc.status != CONFLICT:
            raise


def ignore_missing(call: Callable[[], object]) -> None:
    try:
        call()
    except ApiException as exc:
        if exc.status != NOT_FOUND:
            raise


# --- objects ---------------------------------------------------------------------------------------


def suspended_trainingrun(name: str) -> dict[str, Any]:
    """A TrainingRun whose Job is created suspended: no pod ever starts."""
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.TRAININGRUN_KIND,
        "metadata": {"name": name},
        "spec": {"image": "mlplatform/trainer-minimal:0.1.0", "suspend": True},
    }


def create_surely(create: Callable[[], None], attempts: int = 5) -> None:
    """Create an object even when the apiserver drops the connection under the load of a burst: a create
    that got no answer is sent again, and "already exists" then means the first one landed."""
    for attempt in range(attempts):
        try:
            create()
            return
        except ApiException as exc:
            if exc.status == 409 and attempt > 0:
                return
            raise
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.MaxRetryError):
            if attempt + 1 == attempts:
                raise
            time.sleep(0.5 * (attempt + 1))


def create_paced(create: Callable[[int], None], count: int, rate: float, threads: int = 16) -> list[float]:
    """Call create(i) for i < count at `rate` per second (threads keep the pace when a call is slow);
    the monotonic time each call started."""
    started = [0.0] * count
    begin = time.monotonic() + 0.1

    def one(index: int) -> None:
        time.sleep(max(0.0, begin + index / rate - time.monotonic()))
        started[index] = time.monotonic()
        create_surely(lambda: create(index))

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(one, index) for index in range(count)]:
            future.result()
    return started


class JobWatcher(threading.Thread):
    """Notes when the first Job owned by each object of the namespace appears, and every Job's name."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        super().__init__(daemon=True)
        self.batch, self.namespace = client.BatchV1Api(api), namespace
        self.first_seen: dict[str, float] = {}  # owner name -> monotonic time of its first Job
        self.jobs: dict[str, set[str]] = {}  # owner name -> names of the Jobs it owns
        self.ready = threading.Event()
        self.stream = watch.Watch()  # type: ignore[no-untyped-call]

    def run(self) -> None:
        listed = untyped(self.batch).list_namespaced_job(self.namespace)
        self.ready.set()
        for event in self.stream.stream(  # type: ignore[no-untyped-call]
            self.batch.list_namespaced_job,
            self.namespace,
            resource_version=listed.metadata.resource_version,
            timeout_seconds=3600,
        ):
            job = event["object"]
            for owner in job.metadata.owner_references or []:
                self.first_seen.setdefault(owner.name, time.monotonic())
                self.jobs.setdefault(owner.name, set()).add(job.metadata.name)

    def wait_for(self, owners: Iterable[str], timeout: float) -> bool:
        wanted = set(owners)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if wanted <= self.first_seen.keys():
                return True
            time.sleep(0.2)
        return False


def remove_finalizers(api: client.ApiClient, namespace: str, plural: str) -> None:
    """Let objects go without their operator (stopped): drop the finalizers it put on them."""
    custom = untyped(client.CustomObjectsApi(api))
    listed = custom.list_namespaced_custom_object(names.GROUP, names.VERSION, namespace, plural)
    held = [item["metadata"]["name"] for item in listed["items"] if item["metadata"].get("finalizers")]

    def release(name: str) -> None:
        patch = {"metadata": {"finalizers": None}}
        ignore_missing(
            lambda: custom.patch_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, plural, name, patch
            )
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(release, held))


def delete_namespace(api: client.ApiClient, namespace: str, timeout: float = 300) -> None:
    """Delete the namespace, once nothing holds its objects, and wait until it is gone."""
    for plural in (names.TRAININGRUN_PLURAL, names.MODELDEPLOYMENT_PLURAL):
        remove_finalizers(api, namespace, plural)
    core = client.CoreV1Api(api)
    ignore_missing(lambda: core.delete_namespace(namespace))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespace(namespace)
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return
            raise
        time.sleep(1)
    print(f"warning: namespace {namespace} still terminating after {timeout:g} s", file=sys.stderr)


def delete_experiment(tracking_uri: str, name: str) -> None:
    """Move the MLflow experiment of a bench namespace (and its runs) to MLflow's trash, if it exists."""
    base = tracking_uri.rstrip("/") + "/api/2.0/mlflow/experiments/"
    query = urllib.parse.urlencode({"experiment_name": name})
    try:
        with urllib.request.urlopen(f"{base}get-by-name?{query}", timeout=10) as answer:  # noqa: S310
            experiment_id = json.load(answer)["experiment"]["experiment_id"]
    except urllib.error.HTTPError:
        return  # no such experiment
    body = json.dumps({"experiment_id": experiment_id}).encode()
    request = urllib.request.Request(  # noqa: S310 - the local tracking server
        base + "delete", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310
        pass


# --- results ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
    }


def write_results(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), **figures}
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


@dataclass
class Table:
    """A plain text table: a header and rows of already formatted cells, right-aligned but the first."""

    header: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(cell) for cell in cells])

    def render(self) -> str:
        """The table, rows shorter than the header padded with empty cells."""
        rows = [[*row, *[""] * (len(self.header) - len(row))] for row in self.rows]
        widths = [max(len(row[i]) for row in [self.header, *rows]) for i in range(len(self.header))]
        lines = []
        for row in [self.header, *rows]:
            cells = [
                row[0].ljust(widths[0]),
                *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)),
            ]
            lines.append("  ".join(cells))
        return "\n".join(lines)


# --- where a process spends its CPU ------------------------------------------------------------------


class Profile:
    """py-spy sampling a running process (not paused: --nonblocking) into collapsed stacks."""

    def __init__(self, pid: int, output: Path) -> None:
        self.output = output
        py_spy = Path(sys.executable).parent / "py-spy"
        argv = [str(py_spy), "record", "--pid", str(pid), "--format", "raw", "--nonblocking"]
        self.process = subprocess.Popen(
            [*argv, "--output", str(output)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> list[tuple[str, float]]:
        """Stop sampling; the functions that were on CPU most, with their share of the samples."""
        self.process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        self.process.wait(timeout=60)
        return top_functions(self.output.read_text() if self.output.exists() else "")


def top_functions(collapsed: str, count: int = 12) -> list[tuple[str, float]]:
    """Leaf frames ("function (file)") by their share of all samples, from py-spy's raw format."""
    samples: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, weight = line.rpartition(" ")
        if stack:
            leaf = stack.rsplit(";", 1)[-1]
            samples[leaf.split(":", 1)[0].replace(str(ROOT), "")] += int(weight)
    total = sum(samples.values()) or 1
    return [(frame, n / total) for frame, n in samples.most_common(count)]
