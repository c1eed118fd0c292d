"""Status conditions in the shape of metav1.Condition, following kstatus: `Ready` says whether the object
reached what it asked for, `Reconciling` that the operator is still working on it, `Stalled` that it
cannot get there without a change. Flux and `kubectl wait --for=condition=Ready` read them as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"

# A condition message is read in `kubectl describe`; the apiserver allows 32 KiB, humans far less.
MESSAGE_LIMIT = 4096


class ReasonedError(Exception):
    """An error a condition and an event report: a reason (CamelCase) and a message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clip(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """A message short enough for a condition or an event, keeping its end (where a log tail says why)."""
    return message if len(message) <= limit else "…" + message[-(limit - 1) :]


def merge_conditions(
    existing: Sequence[Mapping[str, Any]] | None,
    updates: Iterable[Condition],
    generation: int | None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """The condition list with `updates` applied. A condition keeps its lastTransitionTime while its
    status stays the same, as metav1.Condition requires; conditions not updated are kept as they are."""
    stamp = now or now_iso()
    merged = {str(c["type"]): dict(c) for c in existing or []}
    for update in updates:
        previous = merged.get(update.type)
        status = "True" if update.status else "False"
        changed = previous is None or previous.get("status") != status
        merged[update.type] = {
            "type": update.type,
            "status": status,
            "reason": update.reason,
            "message": clip(update.message),
            "lastTransitionTime": stamp if changed else previous.get("lastTransitionTime", stamp),  # type: ignore[union-attr]
            **({"observedGeneration": generation} if generation is not None else {}),
        }
    return list(merged.values())


def in_progress(reason: str, message: str) -> list[Condition]:
    """Working towards Ready: Reconciling, not Stalled."""
    return [
        Condition(READY, False, reason, message),
        Condition(RECONCILING, True, reason, message),
        Condition(STALLED, False, reason, ""),
    ]


def done(reason: str, message: str) -> list[Condition]:
    """Reached what the spec asked for."""
    return [
        Condition(READY, True, reason, message),
        Condition(RECONCILING, False, reason, ""),
        Condition(STALLED, False, reason, ""),
    ]


def stalled(reason: str, message: str) -> list[Condition]:
    """Cannot reach Ready without a change from the user (a failed run, a bad spec)."""
    return [
        Condition(READY, False, reason, message),
        Condition(RECONCILING, False, reason, ""),
        Condition(STALLED, True, reason, message),
    ]
