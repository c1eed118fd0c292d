"""What every spec model shares: camelCase field names as in the CRD, and errors that name the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

M = TypeVar("M", bound="SpecModel")


class SpecError(ValueError):
    """A spec the CRD schema let through but the operator cannot act on; the message names the field."""


class SpecModel(BaseModel):
    """A part of a resource's spec. Unknown fields are ignored: the CRD schema prunes them already, and
    an operator older than its CRD must not reject what a newer one added."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")


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
