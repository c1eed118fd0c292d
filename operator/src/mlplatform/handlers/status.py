"""Writing the status of one of our objects from its daemon: only when it says something new, with
conditions that keep their transition times, and read back as written (the watch brings the object's
own status back later, and a pass must not act twice on what the last one recorded)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from mlplatform.api.conditions import Condition, merge_conditions
from mlplatform.kube import Kube


class StatusWriter:
    def __init__(self, kube: Kube, plural: str, body: kopf.Body) -> None:
        self.kube = kube
        self.plural = plural
        self.body = body
        self.last_summary: dict[str, Any] = {}
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
        summary = {**fields, "conditions": [(c.type, c.status, c.reason, c.message) for c in conditions]}
        if summary == self.last_summary:
            return
        status = {
            **fields,
            **(stamp or {}),
            "observedGeneration": generation,
            "conditions": merge_conditions(self.status.get("conditions"), conditions, generation),
        }
        metadata = self.body.metadata
        await self.kube.patch_status(self.plural, metadata.namespace or "", metadata.name or "", status)
        self.last_summary, self.written = summary, {**self.written, **status}
