"""The status writer: a write that changes nothing is not sent, but a spec change is news on its own (the
status says which generation it reflects, and the ModelDeployment handler tells a spec change by it)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

import kopf

from mlplatform.api.conditions import Condition
from mlplatform.handlers.modeldeployment import spec_unobserved
from mlplatform.handlers.status import StatusWriter

READY = [Condition("Ready", False, "ModelNotFound", "no model wine")]


class RecordingKube:
    """Records the status patches a writer sends, as the apiserver would receive them."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.patches.append(dict(status))


def body(generation: int, status: Mapping[str, Any] | None = None) -> kopf.Body:
    metadata = {"name": "wine", "namespace": "team-a", "generation": generation}
    return kopf.Body(cast(kopf.RawBody, {"metadata": metadata, "status": dict(status or {})}))


def test_a_write_that_changes_nothing_is_not_sent_until_the_generation_changes() -> None:
    async def scenario() -> None:
        kube = RecordingKube()
        writer = StatusWriter(cast(Any, kube), "modeldeployments", body(1))
        await writer.write({"phase": "Pending"}, READY)
        await writer.write({"phase": "Pending"}, READY)
        assert [p["observedGeneration"] for p in kube.patches] == [1]

        writer.body = body(2, kube.patches[0])  # the spec changed; nothing the pass says does
        await writer.write({"phase": "Pending"}, READY)
        await writer.write({"phase": "Pending"}, READY)
        assert [p["observedGeneration"] for p in kube.patches] == [1, 2]
        assert kube.patches[1]["conditions"][0]["observedGeneration"] == 2

    asyncio.run(scenario())


def test_a_spec_change_is_told_by_the_generation_the_status_last_observed() -> None:
    assert spec_unobserved({"generation": 2}, {"observedGeneration": 1})
    assert spec_unobserved({"generation": 1}, {})  # never written: its first pass is due
    assert not spec_unobserved({"generation": 2}, {"observedGeneration": 2})
