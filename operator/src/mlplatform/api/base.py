"""What every spec model shares: camelCase field names as in the CRD, and errors that name the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

M = TypeVar("M", bound="SpecModel")


class SpecError(ValueError):
    """A spec the CRD schema let through but the operator cannot act on; the message names the field."""


class SpecModel(BaseModel):
    """A part of a resource's spec. Unknown fields are ignored: the CRD schema prunes them already, and
    an operator older than its CRD must not reject what a newer one added."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")


Manifest = dict[str, Any]


class NamedRef(SpecModel):
    name: str = Field(min_length=1)


class PodOptions(SpecModel):
    """How and where a resource's pods run: the fields both resources pass through to their pods (the
    Kubernetes types themselves are validated by the apiserver when the pod is made)."""

    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    resources: Manifest | None = None
    env: list[Manifest] = Field(default_factory=list)
    env_from: list[Manifest] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Manifest] = Field(default_factory=list)
    affinity: Manifest | None = None
    service_account_name: str | None = None
    pod_security_context: Manifest | None = None
    security_context: Manifest | None = None
    image_pull_secrets: list[NamedRef] = Field(default_factory=list)


def field_path(location: tuple[int | str, ...], prefix: str) -> str:
    """`('model', 'promote', 'alias')` -> `spec.model.promote.alias`; list indexes as `[0]`."""
    path = prefix
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{to_camel(part)}"
    return path


def parse(model: type[M], data: Mapping[str, Any] | None, prefix: str = "spec") -> M:
    """Validate `data` as `model`, or raise SpecError naming every wrong field."""
    try:
        return model.model_validate(dict(data or {}))
    except ValidationError as exc:
        problems = [f"{field_path(e['loc'], prefix)}: {e['msg']}" for e in exc.errors()]
        raise SpecError("; ".join(problems)) from None
