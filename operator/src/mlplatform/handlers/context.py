"""What every handler of one operator process shares: settings, clients, and the wake-up signals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from mlplatform.kube import Kube
from mlplatform.registry import Registry
from mlplatform.settings import OperatorSettings
from mlplatform.tracking import MlflowClient

ObjectKey = tuple[str, str]  # (namespace, name as in the labels of its children)


@dataclass
class OperatorContext:
    settings: OperatorSettings
    mlflow: MlflowClient
    registry: Registry
    kube: Kube
    # A daemon waits on its event; the Job and pod watches set it when the object's children change.
    wakers: dict[ObjectKey, asyncio.Event] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)  # uid -> phase, for the metrics
    models: dict[ObjectKey, str] = field(default_factory=dict)  # ModelDeployment -> the model it serves

    def waker(self, key: ObjectKey) -> asyncio.Event:
        return self.wakers.setdefault(key, asyncio.Event())

    def wake(self, key: ObjectKey) -> None:
        if (event := self.wakers.get(key)) is not None:
            event.set()

    def wake_model(self, model: str) -> int:
        """Wake every ModelDeployment of `model` (a registry webhook named it); how many."""
        keys = [key for key, name in list(self.models.items()) if name == model]
        for key in keys:
            self.wake(key)
        return len(keys)
