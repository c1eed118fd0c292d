"""The TrainingRun resource: its spec as the operator reads it, and the phases of its status.

Field names and defaults mirror crds/trainingruns.mlplatform.dev.yaml, the source of truth for what a
user may write; the schema and its CEL rules reject bad input at `kubectl apply`, so these models
mostly document and type it.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, model_validator

from mlplatform.api.base import NamedRef, PodOptions, SpecModel, parse


class Phase(StrEnum):
    """A display summary of the status; the conditions are the truth."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


class GitSource(SpecModel):
    repository: str = Field(min_length=1)
    revision: str = "main"
    path: str | None = None
    credentials_secret: NamedRef | None = None


class Source(SpecModel):
    config_map: NamedRef | None = None
    git: GitSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        if (self.config_map is None) == (self.git is None):
            raise ValueError("exactly one of configMap or git")
        return self


class BetterThan(SpecModel):
    metric: str = Field(min_length=1)
    direction: Literal["lower", "higher"] = "lower"


class Promote(SpecModel):
    alias: str | None = None
    stage: Literal["Staging", "Production", "Archived"] | None = None
    when: str | None = None
    better_than: BetterThan | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Promote:
        if (self.alias is None) == (self.stage is None):
            raise ValueError("exactly one of alias or stage")
        return self

    @property
    def target(self) -> str:
        """How status and events name the target: `alias champion` or `stage Production`."""
        return f"alias {self.alias}" if self.alias else f"stage {self.stage}"

    @property
    def target_name(self) -> str:
        return self.alias or self.stage or ""


class ModelSpec(SpecModel):
    name: str = Field(min_length=1)
    artifact_path: str = "model"
    promote: Promote | None = None


class TrainingRunSpec(PodOptions):
    image: str = Field(min_length=1)
    command: list[str] | None = None
    entry_point: str | None = None
    source: Source | None = None
    parameters: dict[str, str] = Field(default_factory=dict)
    experiment: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    key_metric: str | None = None
    model: ModelSpec | None = None
    backoff_limit: int = Field(default=0, ge=0)
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    suspend: bool = False

    @model_validator(mode="after")
    def _command_or_entry_point(self) -> TrainingRunSpec:
        if self.command is not None and self.entry_point is not None:
            raise ValueError("command and entryPoint exclude each other")
        return self

    def experiment_name(self, namespace: str) -> str:
        """The MLflow experiment: spec.experiment, by default the namespace's name."""
        return self.experiment or namespace


def parse_spec(spec: Mapping[str, Any] | None) -> TrainingRunSpec:
    """The spec of a TrainingRun, or SpecError naming each field that is wrong."""
    return parse(TrainingRunSpec, spec)
