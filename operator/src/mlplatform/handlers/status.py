"""The reconciler of one of our objects: what it holds, and how it writes the object's status (only when it
says something new, with conditions that keep their transition times, read back as written: the watch
brings the object's own status back later, and a pass must not act twice on what the last one recorded)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, ClassVar, cast

import kopf

from mlplatform.api.conditions import Condition, merge_conditions
from mlplatform.handlers.context import OperatorContext
from mlplatform.kube import Kube

Logger = logging.Logger | logging.LoggerAdapter[Any]
SHARED_STRING_LENGTH = 64  # longer ones (messages) are seldom the same in two objects
KEPT_METADATA = ("name", "namespace", "uid", "generation", "creationTimestamp", "deletionTimestamp")


def slim_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a reconciler reads of one of our objects (its spec, status and identity), without what the
    operator never reads (managed fields, annotations, labels)."""
    metadata = body.get("metadata") or {}
    slim = {key: body.get(key) for key in ("apiVersion", "kind", "spec", "status")}
    slim["metadata"] = {key: metadata.get(key) for key in KEPT_METADATA}
    return slim


def slim_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The slim fields of an object, as the copy a reconciler holds between events."""
    return cast(dict[str, Any], shared_strings(slim_fields(body)))


def shared_strings(value: Any) -> Any:
    """`value` with every dict key and short string interned: each decoded body brings its own copy of
    every key, condition type and reason (about half of a slim body's memory), while thousands of held
    bodies can share one."""
    if isinstance(value, Mapping):
        return {sys.intern(str(key)): shared_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shared_strings(item) for item in value]
    if isinstance(value, str) and len(value) <= SHARED_STRING_LENGTH:
        return sys.intern(value)
    return value


class Packed:
    """A mapping an index keeps between reads as compact JSON, unpacked (a copy of its own) for each
    read: half the memory of the same mapping as Python objects, for what thousands of objects each hold
    and a reconciler reads once in a while."""

    __slots__ = ("packed",)

    def __init__(self, value: Mapping[str, Any]) -> None:
        self.packed = json.dumps(value, separators=(",", ":"))

    def unpack(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(self.packed))


class StatusWriter:
    def __init__(self, kube: Kube, plural: str, body: kopf.Body) -> None:
        self.kube = kube
        self.plural = plural
        self.body = body
        self.last_said: list[tuple[str, bool, str, str]] = []  # the conditions of the last write
        self.written: dict[str, Any] = {}

    @property
    def status(self) -> Mapping[str, Any]:
        """The object's status with what this writer wrote last laid over it."""
        return {**(self.body.get("status") or {}), **self.written}

    async def write(
        self, fields: Mapping[str, Any], conditions: list[Condition], stamp: Mapping[str, Any] | None = None
    ) -> None:
        """Merge-patch `fields` and `conditions` into the status when they changed (`stamp` fields, such
        as a time of the last check, are written along but are no news on their own)."""
        generation = self.body.metadata.get("generation")
        said = [(c.type, c.status, c.reason, c.message) for c in conditions]
        unchanged = all(self.status.get(key) == value for key, value in fields.items())
        if said == self.last_said and unchanged and self.status.get("observedGeneration") == generation:
            return
        status = {
            **fields,
            **(stamp or {}),
            "observedGeneration": generation,
            "conditions": merge_conditions(self.status.get("conditions"), conditions, generation),
        }
        metadata = self.body.metadata
        await self.kube.patch_status(self.plural, metadata.namespace or "", metadata.name or "", status)
        self.last_said, self.written = said, {**self.written, **status}


class ObjectReconciler:
    """The state kept for one object while it is reconciled: the operator's context, the object, who it
    is, and its status as last written. Subclasses name their resource's plural."""

    plural: ClassVar[str]

    def __init__(self, ctx: OperatorContext, body: kopf.Body, logger: Logger) -> None:
        self.ctx = ctx
        self.body = body
        self.logger = logger
        self.namespace = body.metadata.namespace or ""
        self.name = body.metadata.name or ""
        self.uid = body.metadata.uid or ""
        self.writer = StatusWriter(ctx.kube, self.plural, body)

    @property
    def status(self) -> Mapping[str, Any]:
        return self.writer.status

    def refresh(self, body: kopf.Body) -> None:
        """The object as the watch brought it last, for a reconciler that outlives one pass."""
        self.body = self.writer.body = body

    def memory(self) -> dict[str, Any]:
        """What a reconciler made for each pass must know of the last one (JSON, to be kept packed):
        what it wrote, which the watch may not have brought back yet."""
        return {"uid": self.uid, "said": self.writer.last_said, "written": self.writer.written}

    def recall(self, memory: Mapping[str, Any]) -> bool:
        """Take up what the last pass left (`memory`); False if it was another object's of the same
        name (deleted and made again)."""
        if memory.get("uid") != self.uid:
            return False
        self.writer.last_said = [
            (kind, status, reason, message) for kind, status, reason, message in memory["said"]
        ]
        self.writer.written = dict(memory["written"])
        return True

    async def write(
        self, fields: Mapping[str, Any], conditions: list[Condition], stamp: Mapping[str, Any] | None = None
    ) -> None:
        await self.writer.write(fields, conditions, stamp)
