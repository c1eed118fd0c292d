"""The ModelDeployment resource: its spec as the operator reads it, and the shapes of its status.

Field names and defaults mirror crds/modeldeployments.mlplatform.dev.yaml, the source of truth for what
a user may write (its CEL rules reject two selectors, none, or minReplicas > maxReplicas at apply).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mlplatform.api.base import PodOptions, SpecModel, parse

Manifest = dict[str, Any]
HISTORY_LIMIT = 10  # entries of status.history kept, newest last


class ModelSelector(SpecModel):
    """A registered model and which of its versions to serve: exactly one of alias, stage or version."""

    name: str = Field(min_length=1)
    alias: str | None = None
    stage: Literal["Staging", "Production", "Archived", "None"] | None = None
    version: str | None = Field(default=None, pattern=r"^[1-9][0-9]*$")

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSelector:
        if sum(value is not None for value in (self.alias, self.stage, self.version)) != 1:
            raise ValueError("exactly one of alias, stage or version")
        return self

    @property
    def resolved_from(self) -> str:
        """How status names the selector: `alias/champion`, `stage/Production` or `version/3`."""
        if self.alias is not None:
            return f"alias/{self.alias}"
        if self.stage is not None:
            return f"stage/{self.stage}"
        return f"version/{self.version}"


class Autoscaling(SpecModel):
    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(ge=1)
    # Spelled as the HorizontalPodAutoscaler's own field, not as camelCase would.
    target_cpu_utilization_percentage: int = Field(
        default=80, ge=1, le=100, alias="targetCPUUtilizationPercentage"
    )

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        return self


class Rollout(SpecModel):
    max_unavailable: int | str = 0  # a number of pods, or a percentage like "25%"
    max_surge: int | str = 1
    progress_deadline_seconds: int = Field(default=300, ge=10)
    auto_rollback: bool = True

    @field_validator("max_unavailable", "max_surge")
    @classmethod
    def _count_or_percentage(cls, value: int | str) -> int | str:
        """ "1" means 1 pod: a Deployment takes a string only as a percentage."""
        if isinstance(value, str) and value.isdigit():
            return int(value)
        if isinstance(value, str) and not (value.endswith("%") and value[:-1].isdigit()):
            raise ValueError("a number of pods or a percentage like 25%")
        return value


class ModelDeploymentSpec(PodOptions):
    model: ModelSelector
    image: str | None = None  # default: the image the version was trained with (its run's tag)
    replicas: int = Field(default=1, ge=0)
    autoscaling: Autoscaling | None = None
    rollout: Rollout = Field(default_factory=Rollout)
    poll_interval_seconds: int = Field(default=30, ge=5)
    workers: int = Field(default=1, ge=1)
    # mlplatform: the platform's scoring server (MLflow's protocol, faster); mlflow: `mlflow models serve`.
    server: Literal["mlplatform", "mlflow"] = "mlplatform"

    @property
    def min_replicas(self) -> int:
        """The fewest replicas that serve: what a PodDisruptionBudget protects."""
        return self.autoscaling.min_replicas if self.autoscaling else self.replicas


class Outcome(StrEnum):
    """What became of a version in status.history."""

    SERVING = "Serving"
    REPLACED = "Replaced"
    ROLLED_BACK = "RolledBack"  # it did not become ready; the previous version serves again
    FAILED = "Failed"  # it did not become ready and there was nothing to roll back to


def parse_spec(spec: Mapping[str, Any] | None) -> ModelDeploymentSpec:
    """The spec of a ModelDeployment, or SpecError naming each field that is wrong."""
    return parse(ModelDeploymentSpec, spec)


def add_history(
    history: Sequence[Mapping[str, Any]] | None, version: str, outcome: Outcome, at: str, message: str = ""
) -> list[dict[str, Any]]:
    """History with one entry more (bounded, newest last); an entry that repeats the last one is not
    added again. `mark_replaced` turns a Serving entry into Replaced."""
    entries = [dict(entry) for entry in history or []]
    entry: dict[str, Any] = {"version": version, "result": outcome.value, "at": at}
    if message:
        entry["message"] = message
    if entries and entries[-1].get("version") == version and entries[-1].get("result") == outcome.value:
        return entries
    entries.append(entry)
    return entries[-HISTORY_LIMIT:]


def mark_replaced(history: Sequence[Mapping[str, Any]] | None, version: str, at: str) -> list[dict[str, Any]]:
    """The Serving entry of `version` becomes Replaced."""
    entries = [dict(entry) for entry in history or []]
    for entry in reversed(entries):
        if entry.get("version") == version and entry.get("result") == Outcome.SERVING.value:
            entry.update(result=Outcome.REPLACED.value, at=at)
            break
    return entries
