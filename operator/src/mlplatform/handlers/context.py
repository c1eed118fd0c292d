"""What every handler of one operator process shares: settings, clients, and the wake-up signals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import kopf

from mlplatform.kube import Kube
from mlplatform.registry import Registry
from mlplatform.settings import OperatorSettings
from mlplatform.tracking import MlflowClient

if TYPE_CHECKING:
    from mlplatform.handlers.passes import PassScheduler
    from mlplatform.handlers.runners import Runners

ObjectKey = tuple[str, str]  # (namespace, name as in the labels of its children)
# How far this host's clock may run behind the apiserver's without an older object passing for a newer one.
CLOCK_SKEW = timedelta(seconds=5)


@dataclass
class OperatorContext:
    settings: OperatorSettings
    mlflow: MlflowClient
    registry: Registry
    kube: Kube
    kopf_settings: kopf.OperatorSettings
    # A runner waits on its event; the Job and pod watches set it when the object's children change.
    wakers: dict[ObjectKey, asyncio.Event] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)  # uid -> phase, for the metrics
    models: dict[ObjectKey, str] = field(default_factory=dict)  # ModelDeployment -> the model it serves
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    # TrainingRuns (uid) this process has asked MLflow to create a run for, until status records it.
    creating_runs: set[str] = field(default_factory=set)
    # The passes of the ModelDeployments, once the first one is seen (it brings kopf's indexes).
    serving: PassScheduler | None = None
    # The runners of the TrainingRuns that can change, once the first one is seen (in kopf's context).
    trainingruns: Runners | None = None

    def may_have_a_run(self, uid: str, created: datetime) -> bool:
        """Whether an MLflow run may exist for a TrainingRun whose status records none: one this process
        asked for, or one an earlier operator process made for an object older than this process (one
        operator acts at a time; a second, started later, waits for the first to stop)."""
        return uid in self.creating_runs or created < self.started + CLOCK_SKEW

    def waker(self, key: ObjectKey) -> asyncio.Event:
        """A waker of its own for the runner of `key`: a stopped runner still finishing keeps its old one,
        and its exit cannot take away the new runner's."""
        self.wakers[key] = event = asyncio.Event()
        return event

    def drop_waker(self, key: ObjectKey, event: asyncio.Event) -> None:
        if self.wakers.get(key) is event:
            del self.wakers[key]

    def wake(self, key: ObjectKey) -> None:
        if (event := self.wakers.get(key)) is not None:
            event.set()
        if self.serving is not None:
            self.serving.wake(key)

    def wake_model(self, model: str) -> int:
        """Wake every ModelDeployment of `model` (a registry webhook named it); how many."""
        self.registry.answers.forget_model(model)
        keys = [key for key, name in list(self.models.items()) if name == model]
        for key in keys:
            self.wake(key)
        return len(keys)
