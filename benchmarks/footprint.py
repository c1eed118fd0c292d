"""Operator footprint: RSS and idle CPU with 0, 1,000 and 5,000 objects, ours beside plain kopf, and a soak.

Runs against the local cluster in $MLPLATFORM_STATE_DIR (default ~/.cache/mlplatform/local) with its
MLflow stack; the node is not needed. Each operator runs alone, on a namespace of its own (it watches only
that one). Objects are added level by level (default 0, then 1,000, then 5,000 in all), half of them
TrainingRuns with `spec.suspend: true` (their Jobs are created suspended: no pod runs) and half
ModelDeployments of a model the registry does not have: ours resolves the alias, finds no model, marks the
ModelDeployment not Ready (ModelNotFound) and creates no Deployment, so no serving pod starts; its pass
still asks the registry again every pollIntervalSeconds (the CRD's default 30 s unless --poll-interval),
which is the steady work of a real ModelDeployment too. At each level, once the operator has handled every
object and gone quiet: its RSS, and its CPU seconds over a --idle-seconds window (default 60) with the
apiserver requests and MLflow calls it made meanwhile.

The plain kopf peer (kopf_peer.py) gets the same objects; it watches TrainingRuns only (one suspended Job
each), so the ModelDeployments cost it nothing.

Then, with every object present, ours is sampled every 30 s for --soak-minutes (default 30: the full run)
and the growth of its RSS is printed (mean of the first five minutes against the last five; a third of
the soak each when it is shorter than 15 minutes, e.g. `--soak-minutes 3` to check the script). Writes
benchmarks/results/footprint.json; the namespaces and the MLflow experiment are deleted afterwards.

    python benchmarks/footprint.py [--levels 0,1000,5000] [--soak-minutes 30] [--operators ours,peer]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import (
    OperatorIdentity,
    Platform,
    Table,
    Usage,
    create_paced,
    delete_experiment,
    delete_namespace,
    idle_cpu,
    prepare_operator_bench,
    prometheus_sum,
    running,
    scrape,
    start_watching_one,
    suspended_trainingrun,
    untyped,
    wait_healthy,
    write_results,
)
from kubernetes import client

from mlplatform import names

HEALTH_PORT, METRICS_PORT = 28182, 29192
SOAK_INTERVAL = 30.0
SOAK_WINDOW = 300.0  # seconds averaged at each end of the soak


@dataclass(frozen=True)
class Level:
    """What one operator cost with `objects` objects present and nothing new happening."""

    objects: int
    trainingruns: int
    modeldeployments: int
    settle_seconds: float  # from the last create to every object handled
    rss_mb: float
    idle_cpu_seconds: float
    idle_window_seconds: float
    idle_api_requests: float
    idle_mlflow_calls: float | None


@dataclass(frozen=True)
class Soak:
    minutes: float
    samples_mb: list[float]
    first_mean_mb: float
    last_mean_mb: float

    @property
    def growth_mb(self) -> float:
        return self.last_mean_mb - self.first_mean_mb


@dataclass(frozen=True)
class Options:
    levels: list[int]
    modeldeployment_share: float
    rate: float
    idle_seconds: float
    poll_interval: int | None
    soak_minutes: float


class Bench:
    def __init__(self, local: Platform, identity: OperatorIdentity, logs: Path, options: Options) -> None:
        self.local = local
        self.identity = identity
        self.logs = logs
        self.options = options
        self.admin = local.admin_api(connections=20)
        self.custom = untyped(client.CustomObjectsApi(self.admin))
        self.model = f"bench-missing-{uuid.uuid4().hex[:6]}"  # a model no registry holds

    def measure(self, operator: str) -> tuple[list[Level], Soak | None]:
        namespace = f"bench-footprint-{operator}-{uuid.uuid4().hex[:6]}"
        untyped(client.CoreV1Api(self.admin)).create_namespace({"metadata": {"name": namespace}})
        log = self.logs / f"{namespace}.log"
        print(f"{operator} in namespace {namespace} (log: {log})", flush=True)
        try:
            with running(self.start(operator, namespace, log)) as process:
                wait_healthy(process, f"http://127.0.0.1:{HEALTH_PORT}/healthz", log)
                time.sleep(2)  # its watches are established
                usage = Usage(process.pid)
                levels = self.levels(operator, namespace, usage)
                soak = self.soak(usage) if operator == "ours" and self.options.soak_minutes > 0 else None
                self.check_no_pods(namespace)
                return levels, soak
        finally:
            delete_namespace(self.admin, namespace, timeout=600)
            if operator == "ours":
                delete_experiment(self.local.tracking_uri, namespace)

    def start(self, operator: str, namespace: str, log: Path) -> subprocess.Popen[bytes]:
        ports = (HEALTH_PORT, METRICS_PORT)
        return start_watching_one(operator, self.local, self.identity.kubeconfig, namespace, log, ports=ports)

    def levels(self, operator: str, namespace: str, usage: Usage) -> list[Level]:
        measured: list[Level] = []
        runs, deployments = 0, 0
        for objects in self.options.levels:
            wanted_deployments = round(objects * self.options.modeldeployment_share)
            wanted_runs = objects - wanted_deployments
            self.create(namespace, names.TRAININGRUN_PLURAL, runs, wanted_runs, suspended_trainingrun)
            self.create(
                namespace, names.MODELDEPLOYMENT_PLURAL, deployments, wanted_deployments, self.deployment
            )
            runs, deployments = wanted_runs, wanted_deployments
            created = time.monotonic()
            self.wait_handled(operator, namespace, runs, deployments)
            settle = time.monotonic() - created
            level = self.idle(operator, usage, runs, deployments, settle)
            measured.append(level)
            print(
                f"  {objects} objects: RSS {level.rss_mb:.0f} MB, idle CPU {level.idle_cpu_seconds:.2f} s "
                f"in {level.idle_window_seconds:.0f} s (handled {settle:.0f} s after the last create)",
                flush=True,
            )
        return measured

    def create(
        self, namespace: str, plural: str, start: int, stop: int, body: Callable[[str], dict[str, Any]]
    ) -> None:
        def one(index: int) -> None:
            self.custom.create_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, plural, body(f"{plural[:-1]}-{start + index:05d}")
            )

        if stop > start:
            create_paced(one, stop - start, self.options.rate)

    def deployment(self, name: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"model": {"name": self.model, "alias": "champion"}, "replicas": 1}
        if self.options.poll_interval is not None:
            spec["pollIntervalSeconds"] = self.options.poll_interval
        return {
            "apiVersion": names.API_VERSION,
            "kind": names.MODELDEPLOYMENT_KIND,
            "metadata": {"name": name},
            "spec": spec,
        }

    def wait_handled(self, operator: str, namespace: str, runs: int, deployments: int) -> None:
        """Until every TrainingRun has its Job (and, for ours, every ModelDeployment a status), then until
        the operator sends the apiserver nothing for 5 s."""
        deadline = time.monotonic() + 180 + (runs + deployments) / 10
        while time.monotonic() < deadline:
            jobs, statuses = self.handled(namespace)
            if jobs >= runs and (operator == "peer" or statuses >= deployments):
                break
            time.sleep(10)  # listing thousands of objects costs CPU the operator should get
        else:
            print(f"  warning: not all handled in time: {jobs} Jobs, {statuses} ModelDeployment statuses")
        last = self.identity.requests()
        while time.monotonic() < deadline:
            time.sleep(5)
            if (now := self.identity.requests()) == last:
                return
            last = now

    def handled(self, namespace: str) -> tuple[int, int]:
        """Jobs in the namespace, and ModelDeployments with a Ready condition."""
        jobs = client.BatchV1Api(self.admin).list_namespaced_job(namespace).items
        listed = self.custom.list_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.MODELDEPLOYMENT_PLURAL
        )["items"]
        ready = sum(1 for md in listed if (md.get("status") or {}).get("conditions"))
        return len(jobs), ready

    def idle(self, operator: str, usage: Usage, runs: int, deployments: int, settle: float) -> Level:
        requests, calls = self.identity.requests(), self.mlflow_calls(operator)
        cpu = idle_cpu(usage, self.options.idle_seconds)
        after_calls = self.mlflow_calls(operator)
        return Level(
            objects=runs + deployments,
            trainingruns=runs,
            modeldeployments=deployments,
            settle_seconds=round(settle, 1),
            rss_mb=round(usage.rss_mb(), 1),
            idle_cpu_seconds=round(cpu, 2),
            idle_window_seconds=self.options.idle_seconds,
            idle_api_requests=self.identity.requests() - requests,
            idle_mlflow_calls=None if calls is None or after_calls is None else after_calls - calls,
        )

    def mlflow_calls(self, operator: str) -> float | None:
        if operator != "ours":
            return None
        return prometheus_sum(
            scrape(f"http://127.0.0.1:{METRICS_PORT}/metrics"), "mlplatform_mlflow_calls_total"
        )

    def soak(self, usage: Usage) -> Soak:
        minutes = self.options.soak_minutes
        print(f"  soak: RSS every {SOAK_INTERVAL:g} s for {minutes:g} min", flush=True)
        samples = []
        end = time.monotonic() + minutes * 60
        while True:
            samples.append(round(usage.rss_mb(), 1))
            if time.monotonic() + SOAK_INTERVAL > end:
                break
            time.sleep(SOAK_INTERVAL)
        window = max(1, int(min(SOAK_WINDOW, minutes * 60 / 3) // SOAK_INTERVAL))
        return Soak(minutes, samples, statistics.mean(samples[:window]), statistics.mean(samples[-window:]))

    def check_no_pods(self, namespace: str) -> None:
        pods = client.CoreV1Api(self.admin).list_namespaced_pod(namespace).items
        deployments = client.AppsV1Api(self.admin).list_namespaced_deployment(namespace).items
        if pods or deployments:
            print(f"  warning: {len(pods)} pod(s) and {len(deployments)} Deployment(s) in {namespace}")


def report(measured: dict[str, list[Level]], soak: Soak | None) -> None:
    print("\nFootprint (TrainingRuns suspended, ModelDeployments of a model the registry lacks: no pods)")
    table = Table(
        ["objects (TR + MD)", "operator", "RSS MB", "idle CPU s/60 s", "API req idle", "MLflow calls idle"]
    )
    for operator, levels in measured.items():
        for level in levels:
            scale = 60 / level.idle_window_seconds
            calls = "-" if level.idle_mlflow_calls is None else f"{level.idle_mlflow_calls * scale:.0f}"
            table.add(
                f"{level.objects} ({level.trainingruns} + {level.modeldeployments})",
                "ours" if operator == "ours" else "kopf peer",
                f"{level.rss_mb:.0f}",
                f"{level.idle_cpu_seconds * scale:.2f}",
                f"{level.idle_api_requests * scale:.0f}",
                calls,
            )
    print(table.render())
    if soak is not None:
        print(
            f"soak {soak.minutes:g} min, RSS every {SOAK_INTERVAL:g} s: {soak.first_mean_mb:.1f} MB at the "
            f"start, {soak.last_mean_mb:.1f} MB at the end: growth {soak.growth_mb:+.1f} MB "
            f"({soak.growth_mb / soak.first_mean_mb:+.1%}); "
            f"min {min(soak.samples_mb):.1f}, max {max(soak.samples_mb):.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--levels", default="0,1000,5000", help="object counts, ascending (default 0,1000,5000)"
    )
    parser.add_argument(
        "--modeldeployment-share", type=float, default=0.5, help="of each level (default 0.5)"
    )
    parser.add_argument("--rate", type=float, default=100.0, help="objects created per second (default 100)")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument(
        "--poll-interval", type=int, help="ModelDeployments' pollIntervalSeconds (default: the CRD's)"
    )
    parser.add_argument("--soak-minutes", type=float, default=30.0, help="30: the full run; 0: none")
    parser.add_argument("--operators", default="ours,peer")
    parser.add_argument(
        "--wait-minutes", type=float, default=30, help="for other operators on this machine to end"
    )
    args = parser.parse_args()
    options = Options(
        levels=sorted(int(level) for level in args.levels.split(",")),
        modeldeployment_share=args.modeldeployment_share,
        rate=args.rate,
        idle_seconds=args.idle_seconds,
        poll_interval=args.poll_interval,
        soak_minutes=args.soak_minutes,
    )
    prepared = prepare_operator_bench(parser, args.operators, args.wait_minutes, "footprint")
    bench = Bench(prepared.local, prepared.identity, prepared.logs, options)
    measured: dict[str, list[Level]] = {}
    soak: Soak | None = None
    try:
        for operator in prepared.operators:
            measured[operator], operator_soak = bench.measure(operator)
            soak = soak or operator_soak
    finally:
        prepared.identity.delete()
    report(measured, soak)
    figures = {
        "options": asdict(options),
        "levels": {operator: [asdict(level) for level in levels] for operator, levels in measured.items()},
        "soak": None if soak is None else {**asdict(soak), "growth_mb": round(soak.growth_mb, 1)},
    }
    print(f"\nwritten to {write_results('footprint', figures)}")


if __name__ == "__main__":
    main()
