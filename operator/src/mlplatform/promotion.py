"""Whether a new model version takes over an alias or stage: the promotion gate of a TrainingRun.

Pure: the operator fetches the run's metrics and those of the current holder, and this decides. The
reason and message go to the TrainingRun's status and an event, numbers included, so a user sees why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mlplatform.api.base import SpecError
from mlplatform.api.trainingrun import Promote, TrainingRunSpec
from mlplatform.gate import GateSyntaxError, compare, evaluate, parse_gate

PROMOTED = "Promoted"
NOT_PROMOTED = "NotPromoted"


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    message: str


def check_gate(promote: Promote | None) -> None:
    """Refuse a gate that does not parse before the run starts, not after it trained for an hour."""
    if promote is not None and promote.when:
        try:
            parse_gate(promote.when)
        except GateSyntaxError as exc:
            raise SpecError(f"spec.model.promote.when: {exc}") from None


def decide(
    promote: Promote,
    version: str,
    metrics: Mapping[str, float],
    params: Mapping[str, str],
    holder: tuple[str, float | None] | None,
) -> Decision:
    """Promote `version` when the `when` gate holds and it beats the holder (version, its metric value)."""
    reasons: list[str] = []
    if promote.when:
        verdict = evaluate(parse_gate(promote.when), metrics, params)
        if not verdict.passed:
            return Decision(False, NOT_PROMOTED, f"gate failed: {verdict.explanation}")
        reasons.append(f"gate holds: {verdict.explanation}")
    if promote.better_than is not None:
        metric = promote.better_than.metric
        holder_value = holder[1] if holder is not None else None
        verdict = compare(metrics.get(metric), holder_value, metric, promote.better_than.direction)
        against = f" (version {holder[0]})" if holder is not None else ""
        if not verdict.passed:
            return Decision(
                False, NOT_PROMOTED, f"not better than the current holder{against}: {verdict.explanation}"
            )
        reasons.append(verdict.explanation + against)
    because = "; ".join(reasons) or "no gate"
    return Decision(True, PROMOTED, f"version {version} promoted to {promote.target}: {because}")


def key_metric(spec: TrainingRunSpec, metrics: Mapping[str, float]) -> str | None:
    """The metric `kubectl get` shows: spec.keyMetric, else the one the gate names, else the first logged."""
    if spec.key_metric:
        return spec.key_metric
    promote = spec.model.promote if spec.model else None
    if promote is not None and promote.better_than is not None:
        return promote.better_than.metric
    if promote is not None and promote.when:
        named = parse_gate(promote.when).metrics_referenced()
        if named:
            return named[0]
    return min(metrics) if metrics else None


def format_metric(name: str | None, metrics: Mapping[str, float]) -> str | None:
    if name is None or name not in metrics:
        return None
    return f"{name}={metrics[name]:.4g}"
