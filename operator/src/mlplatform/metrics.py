"""The operator's Prometheus metrics, served on the metrics port (`/metrics`)."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

RECONCILES = Counter(
    "mlplatform_reconciles_total", "Reconcile passes, by kind and outcome", ["kind", "outcome"]
)
ERRORS = Counter(
    "mlplatform_reconcile_errors_total", "Reconcile errors, by kind and reason", ["kind", "reason"]
)
DURATION = Histogram(
    "mlplatform_reconcile_duration_seconds",
    "Duration of reconcile steps, by kind and step",
    ["kind", "step"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MLFLOW_CALLS = Counter(
    "mlplatform_mlflow_calls_total",
    "HTTP calls to the MLflow tracking server, by call and status",
    ["call", "status"],
)

WEBHOOK_DELIVERIES = Counter(
    "mlplatform_webhook_deliveries_total",
    "MLflow registry webhook deliveries received, by result (accepted, refused, ignored)",
    ["result"],
)
ROLLOUTS = Counter(
    "mlplatform_model_rollouts_total",
    "Model version rollouts of ModelDeployments, by outcome (completed, rolled_back, failed)",
    ["outcome"],
)


class PhaseCollector(Collector):
    """Objects by phase, counted from what the operator's watch last saw of each (uid -> phase)."""

    def __init__(self, kind: str, phases: MutableMapping[str, str]) -> None:
        self.kind = kind
        self.phases = phases

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"mlplatform_{self.kind}s", f"{self.kind} objects by phase", labels=["phase"]
        )
        counts: dict[str, int] = {}
        for phase in list(self.phases.values()):
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in sorted(counts.items()):
            family.add_metric([phase], count)
        yield family


def register_phases(kind: str, phases: MutableMapping[str, str]) -> None:
    REGISTRY.register(PhaseCollector(kind, phases))
