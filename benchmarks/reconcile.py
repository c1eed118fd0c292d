"""Reconcile throughput: TrainingRuns created at a steady rate, create → Job created, ours beside plain kopf.

Runs against the local cluster in $MLPLATFORM_STATE_DIR (default ~/.cache/mlplatform/local) with its
MLflow stack; the node is not needed. Every TrainingRun has `spec.suspend: true`, so its Job is created
suspended and no pod ever runs. For each configuration (COUNT@RATE, default 500@20 and 2000@100), in a
fresh namespace each time and with only one operator running at a time (both watch only that namespace):

1. `mlplatform operator` as a host process: COUNT TrainingRuns are created at RATE per second, and a watch
   on Jobs notes when each one's Job appears (client clocks). Then the figures: create → Job p50/p95/p99,
   the rate achieved, apiserver requests per TrainingRun (API Priority and Fairness counts the requests
   of a FlowSchema that matches only the operator's ServiceAccount), MLflow calls per TrainingRun (the
   operator's own counter), duplicate Jobs (Jobs per TrainingRun beyond one), RSS at the end;
2. the plain kopf peer (kopf_peer.py: one suspended Job per TrainingRun, nothing else), the same way.

It prints both, the ratio ours/peer for each percentile, and writes benchmarks/results/reconcile.json.
The namespaces and their MLflow experiments are deleted afterwards.

    python benchmarks/reconcile.py [--config 500@20 --config 2000@100] [--operators ours,peer]
"""

from __future__ import annotations

import argparse
import re
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import (
    API_SERVICES,
    MLFLOW_SERVICES,
    OPERATORS,
    RESULTS,
    JobWatcher,
    OperatorIdentity,
    Platform,
    Profile,
    Table,
    Usage,
    create_paced,
    delete_experiment,
    delete_namespace,
    percentile,
    prepare_operator_bench,
    prometheus_sum,
    running,
    scrape,
    service_cpu_seconds,
    start_watching_one,
    suspended_trainingrun,
    untyped,
    wait_healthy,
    write_results,
)
from kubernetes import client

from mlplatform import names

HEALTH_PORT, METRICS_PORT = 28180, 29190
MLFLOW_CALL = re.compile(r'^mlplatform_mlflow_calls_total\{call="([^"]+)",status="([^"]+)"\} (\S+)$', re.M)
STEPS = ("mlflow_run", "create_job")


@dataclass(frozen=True)
class Config:
    count: int
    rate: float

    @classmethod
    def parse(cls, text: str) -> Config:
        count, _, rate = text.partition("@")
        return cls(int(count), float(rate))

    def __str__(self) -> str:
        return f"{self.count} at {self.rate:g}/s"


@dataclass
class Outcome:
    """One operator's figures for one configuration."""

    operator: str
    latencies_ms: list[float]
    missing_jobs: int
    duplicate_jobs: int
    created_per_second: float
    jobs_per_second: float
    api_requests_per_run: float
    mlflow_calls_per_run: float | None
    rss_mb: float
    cpu_ms_per_run: float  # the operator process's CPU time, from the first create to quiet
    mlflow_cpu_ms_per_run: float  # the tracking server's and PostgreSQL's, meanwhile
    api_cpu_ms_per_run: float  # kube-apiserver's and etcd's, meanwhile (the creates included)
    mlflow_calls: dict[str, float] = field(default_factory=dict)  # "GET experiments/get-by-name 200" -> n
    step_mean_ms: dict[str, float] = field(default_factory=dict)  # our reconcile steps, their mean
    profile: list[tuple[str, float]] = field(default_factory=list)  # on-CPU leaf functions, their share

    def p(self, percent: int) -> float:
        return percentile(self.latencies_ms, percent) if self.latencies_ms else float("nan")


class Bench:
    def __init__(
        self, local: Platform, identity: OperatorIdentity, logs: Path, settle: float, profile: bool
    ) -> None:
        self.local = local
        self.profile = profile
        self.identity = identity
        self.logs = logs
        self.settle = settle
        self.admin = local.admin_api(connections=20)
        self.custom = client.CustomObjectsApi(self.admin)

    def measure(self, operator: str, config: Config) -> Outcome:
        namespace = f"bench-reconcile-{operator}-{uuid.uuid4().hex[:6]}"
        untyped(client.CoreV1Api(self.admin)).create_namespace({"metadata": {"name": namespace}})
        log = self.logs / f"{namespace}.log"
        try:
            with running(self.start(operator, namespace, log)) as process:
                wait_healthy(process, f"http://127.0.0.1:{HEALTH_PORT}/healthz", log)
                print(f"  {operator}: {config} in namespace {namespace} (log: {log})", flush=True)
                return self.run(operator, config, namespace, Usage(process.pid))
        finally:
            delete_namespace(self.admin, namespace)
            if operator == "ours":
                delete_experiment(self.local.tracking_uri, namespace)

    def start(self, operator: str, namespace: str, log: Path) -> Any:
        ports = (HEALTH_PORT, METRICS_PORT)
        return start_watching_one(operator, self.local, self.identity.kubeconfig, namespace, log, ports=ports)

    def run(self, operator: str, config: Config, namespace: str, usage: Usage) -> Outcome:
        watcher = JobWatcher(self.admin, namespace)
        watcher.start()
        watcher.ready.wait(30)
        time.sleep(2)  # the operator's own watches are established
        metrics_before = self.operator_metrics(operator)
        requests_before = self.identity.requests()
        run_names = [f"run-{index:05d}" for index in range(config.count)]

        def create(index: int) -> None:
            body = suspended_trainingrun(run_names[index])
            self.custom.create_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.TRAININGRUN_PLURAL, body
            )

        cpu_before = usage.cpu_seconds()
        services_before = self.services_cpu()
        profile = self.start_profile(operator, config, usage)
        started = create_paced(create, config.count, config.rate)
        created = time.monotonic()
        watcher.wait_for(run_names, timeout=120 + config.count / config.rate)
        self.wait_quiet()
        services = [
            after - before for after, before in zip(self.services_cpu(), services_before, strict=True)
        ]
        top = profile.stop() if profile is not None else []
        requests = self.identity.requests() - requests_before
        metrics_after = self.operator_metrics(operator)
        seen = watcher.first_seen
        latencies = [(seen[name] - started[i]) * 1000 for i, name in enumerate(run_names) if name in seen]
        last_job = max(seen.values(), default=created)
        jobs_per_owner = Counter(self.job_owners(namespace))
        mlflow = mlflow_calls(metrics_after, metrics_before)
        return Outcome(
            operator=operator,
            latencies_ms=latencies,
            missing_jobs=config.count - len(latencies),
            duplicate_jobs=sum(count - 1 for count in jobs_per_owner.values()),
            created_per_second=config.count / (created - started[0]),
            jobs_per_second=len(latencies) / (last_job - started[0]),
            api_requests_per_run=requests / config.count,
            mlflow_calls_per_run=sum(mlflow.values()) / config.count if operator == "ours" else None,
            rss_mb=usage.rss_mb(),
            cpu_ms_per_run=(usage.cpu_seconds() - cpu_before) * 1000 / config.count,
            mlflow_cpu_ms_per_run=services[0] * 1000 / config.count,
            api_cpu_ms_per_run=services[1] * 1000 / config.count,
            mlflow_calls=mlflow,
            step_mean_ms=step_means(metrics_after, metrics_before),
            profile=top,
        )

    def start_profile(self, operator: str, config: Config, usage: Usage) -> Profile | None:
        if not self.profile or operator != "ours":
            return None
        RESULTS.mkdir(exist_ok=True)
        return Profile(usage.process.pid, RESULTS / f"reconcile-{config.count}-ours.pyspy.txt")

    def services_cpu(self) -> tuple[float, float]:
        return (
            service_cpu_seconds(self.local, MLFLOW_SERVICES),
            service_cpu_seconds(self.local, API_SERVICES),
        )

    def wait_quiet(self) -> None:
        """Wait until the operator has sent no request for `settle` seconds (its status writes and events
        come after the Job), at most a minute."""
        deadline = time.monotonic() + 60
        last = self.identity.requests()
        while time.monotonic() < deadline:
            time.sleep(self.settle)
            now = self.identity.requests()
            if now == last:
                return
            last = now

    def operator_metrics(self, operator: str) -> str:
        return scrape(f"http://127.0.0.1:{METRICS_PORT}/metrics") if operator == "ours" else ""

    def job_owners(self, namespace: str) -> list[str]:
        jobs = untyped(client.BatchV1Api(self.admin)).list_namespaced_job(namespace).items
        return [owner.name for job in jobs for owner in job.metadata.owner_references or []]


def mlflow_calls(after: str, before: str) -> dict[str, float]:
    def counts(text: str) -> dict[str, float]:
        return {f"{call} {status}": float(value) for call, status, value in MLFLOW_CALL.findall(text)}

    old = counts(before)
    return {
        key: value - old.get(key, 0.0) for key, value in counts(after).items() if value > old.get(key, 0.0)
    }


def step_means(after: str, before: str) -> dict[str, float]:
    """Mean milliseconds of our reconcile steps over the run, from the operator's histograms."""
    means = {}
    for step in STEPS:
        labels = {"kind": "trainingrun", "step": step}
        metric = "mlplatform_reconcile_duration_seconds"
        total = prometheus_sum(after, f"{metric}_sum", **labels) - prometheus_sum(
            before, f"{metric}_sum", **labels
        )
        count = prometheus_sum(after, f"{metric}_count", **labels) - prometheus_sum(
            before, f"{metric}_count", **labels
        )
        if count:
            means[step] = total / count * 1000
    return means


def report(config: Config, outcomes: dict[str, Outcome]) -> None:
    print(f"\n{config} TrainingRuns, spec.suspend: true (Jobs created suspended: no pod ran)")
    columns = [outcomes[name] for name in OPERATORS if name in outcomes]
    both = len(columns) == len(OPERATORS)
    table = Table(["", *(o.operator if o.operator == "ours" else "kopf peer" for o in columns)])
    if both:
        table.header.append("ours/peer")
    for percent in (50, 95, 99):
        cells = [f"{o.p(percent):.0f}" for o in columns]
        ratio = [f"{columns[0].p(percent) / columns[1].p(percent):.2f}"] if both else []
        table.add(f"create → Job p{percent} (ms)", *cells, *ratio)
    table.add("TrainingRuns created/s", *(f"{o.created_per_second:.1f}" for o in columns))
    table.add("Jobs/s sustained", *(f"{o.jobs_per_second:.1f}" for o in columns))
    table.add("apiserver requests/run", *(f"{o.api_requests_per_run:.2f}" for o in columns))
    table.add(
        "MLflow calls/run",
        *("-" if o.mlflow_calls_per_run is None else f"{o.mlflow_calls_per_run:.2f}" for o in columns),
    )
    table.add("duplicate Jobs", *(o.duplicate_jobs for o in columns))
    table.add("missing Jobs", *(o.missing_jobs for o in columns))
    table.add("operator CPU ms/run", *(f"{o.cpu_ms_per_run:.1f}" for o in columns))
    table.add("MLflow+PostgreSQL CPU ms/run", *(f"{o.mlflow_cpu_ms_per_run:.1f}" for o in columns))
    table.add("apiserver+etcd CPU ms/run", *(f"{o.api_cpu_ms_per_run:.1f}" for o in columns))
    table.add("RSS at the end (MB)", *(f"{o.rss_mb:.0f}" for o in columns))
    print(table.render())
    if (ours := outcomes.get("ours")) is not None:
        calls = ", ".join(
            f"{call}: {count / config.count:.2f}" for call, count in sorted(ours.mlflow_calls.items())
        )
        steps = ", ".join(f"{step} {mean:.0f} ms" for step, mean in ours.step_mean_ms.items())
        print(f"our MLflow calls per run: {calls}\nour reconcile steps, mean: {steps}")
        for frame, share in ours.profile:
            print(f"  {share:6.1%}  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        action="append",
        type=Config.parse,
        help="COUNT@RATE (repeat; default 500@20 and 2000@100)",
    )
    parser.add_argument("--operators", default="ours,peer", help="which to run, in order (default ours,peer)")
    parser.add_argument(
        "--profile", action="store_true", help="sample ours with py-spy (pip install py-spy) while it works"
    )
    parser.add_argument("--settle", type=float, default=3.0, help="seconds without a request that end a run")
    parser.add_argument(
        "--wait-minutes", type=float, default=30, help="for other operators on this machine to end"
    )
    args = parser.parse_args()
    configs: list[Config] = args.config or [Config(500, 20), Config(2000, 100)]
    prepared = prepare_operator_bench(parser, args.operators, args.wait_minutes, "reconcile")
    bench = Bench(prepared.local, prepared.identity, prepared.logs, args.settle, args.profile)
    results: list[dict[str, Any]] = []
    try:
        for config in configs:
            print(f"{config}:", flush=True)
            outcomes = {name: bench.measure(name, config) for name in prepared.operators}
            report(config, outcomes)
            results.append({"count": config.count, "rate": config.rate, "operators": summarize(outcomes)})
    finally:
        prepared.identity.delete()
    path = write_results("reconcile", {"suspended": True, "configurations": results})
    print(f"\nwritten to {path}")


def summarize(outcomes: dict[str, Outcome]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, outcome in outcomes.items():
        figures = asdict(outcome)
        figures.pop("latencies_ms")
        figures.update({f"p{p}_ms": round(outcome.p(p), 1) for p in (50, 95, 99)})
        summary[name] = figures
    if len(outcomes) == len(OPERATORS):
        ours, peer = outcomes["ours"], outcomes["peer"]
        summary["ratio_ours_to_peer"] = {f"p{p}": round(ours.p(p) / peer.p(p), 2) for p in (50, 95, 99)}
    return summary


if __name__ == "__main__":
    main()
