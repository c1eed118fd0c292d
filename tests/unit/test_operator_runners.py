"""The runners of TrainingRuns, kept by the operator instead of kopf's daemons: one per object that needs
one, fed the object's latest slim body, never started again once it finished, started again after a
stop or an unexpected failure; and the slim body they hold."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, cast

import kopf

from mlplatform.handlers.context import ObjectKey, OperatorContext
from mlplatform.handlers.modeldeployment import ModelDeploymentReconciler
from mlplatform.handlers.runners import Runners
from mlplatform.handlers.status import ObjectReconciler, Packed, slim_body, slim_fields

KEY: ObjectKey = ("team-a", "wine")


def body(uid: str = "uid-1", generation: int = 1) -> kopf.Body:
    raw: Any = {"metadata": {"name": "wine", "namespace": "team-a", "uid": uid, "generation": generation}}
    return kopf.Body(raw)


class FakeRunner:
    """A runner that records what it saw and ends, fails or waits as the test says."""

    def __init__(self, made: list[FakeRunner], seen: kopf.Body, outcome: str = "wait") -> None:
        self.uid = seen.metadata.uid or ""
        self.body = seen
        self.outcome = outcome
        self.refreshed: list[kopf.Body] = []
        self.finish = asyncio.Event()
        made.append(self)

    def refresh(self, seen: kopf.Body) -> None:
        self.body = seen
        self.refreshed.append(seen)

    async def run(self) -> None:
        if self.outcome == "fail":
            raise RuntimeError("unexpected")
        await self.finish.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_one_runner_per_object_fed_each_newer_body() -> None:
    async def scenario() -> None:
        made: list[FakeRunner] = []
        runners = Runners()
        runners.ensure(KEY, body(), lambda seen: FakeRunner(made, seen))
        runners.ensure(KEY, body(generation=2), lambda seen: FakeRunner(made, seen))
        await settle()
        assert len(made) == 1 and KEY in runners
        assert made[0].body.metadata["generation"] == 2
        runners.close()
        await settle()
        assert KEY not in runners

    asyncio.run(scenario())


def test_a_finished_runner_is_not_started_again_by_an_older_event_until_the_object_is_gone() -> None:
    async def scenario() -> None:
        made: list[FakeRunner] = []
        runners = Runners()
        runners.ensure(KEY, body(), lambda seen: FakeRunner(made, seen))
        await settle()
        made[0].finish.set()
        await settle()
        assert KEY not in runners
        runners.ensure(KEY, body(), lambda seen: FakeRunner(made, seen))  # a late event of the same object
        await settle()
        assert len(made) == 1
        runners.forget(KEY, "uid-1")  # deleted; made again under the same name
        runners.ensure(KEY, body(uid="uid-2"), lambda seen: FakeRunner(made, seen))
        await settle()
        assert len(made) == 2 and KEY in runners
        runners.close()

    asyncio.run(scenario())


def test_a_stopped_runner_starts_again_and_a_new_object_of_the_same_name_replaces_the_old_runner() -> None:
    async def scenario() -> None:
        made: list[FakeRunner] = []
        runners = Runners()
        runners.ensure(KEY, body(), lambda seen: FakeRunner(made, seen))
        await settle()
        runners.stop(KEY)  # suspended, say
        await settle()
        assert KEY not in runners
        runners.ensure(KEY, body(), lambda seen: FakeRunner(made, seen))  # resumed
        await settle()
        assert len(made) == 2 and KEY in runners
        runners.ensure(KEY, body(uid="uid-2"), lambda seen: FakeRunner(made, seen))
        await settle()
        assert len(made) == 3 and made[-1].uid == "uid-2"
        runners.close()

    asyncio.run(scenario())


def test_a_failing_runner_starts_again_from_the_last_body_it_was_given() -> None:
    async def scenario() -> None:
        made: list[FakeRunner] = []
        outcomes = iter(["fail", "wait"])
        runners = Runners(restart_delay=0.01)
        runners.ensure(KEY, body(), lambda seen: FakeRunner(made, seen, next(outcomes)))
        await settle()
        runners.ensure(KEY, body(generation=3), lambda seen: FakeRunner(made, seen, next(outcomes)))
        await asyncio.sleep(0.05)
        assert len(made) == 2 and KEY in runners
        assert made[1].body.metadata["generation"] == 3
        runners.close()

    asyncio.run(scenario())


FULL: dict[str, Any] = {
    "apiVersion": "mlplatform.dev/v1alpha1",
    "kind": "TrainingRun",
    "metadata": {
        "name": "wine",
        "namespace": "team-a",
        "uid": "uid-1",
        "generation": 2,
        "creationTimestamp": "2026-12-01T12:00:00Z",
        "managedFields": [{"manager": "kubectl"}],
        "annotations": {"mlplatform.dev/last-handled-configuration": "{}"},
        "finalizers": ["mlplatform.dev/finalizer"],
    },
    "spec": {"image": "trainer-sklearn"},
    "status": {"phase": "Running"},
}


def test_the_slim_body_keeps_what_a_reconciler_reads_and_nothing_else() -> None:
    slim = slim_body(FULL)
    assert slim["spec"] == FULL["spec"] and slim["status"] == FULL["status"]
    assert slim["apiVersion"] == FULL["apiVersion"] and slim["kind"] == "TrainingRun"
    assert set(slim["metadata"]) == {
        "name",
        "namespace",
        "uid",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
    }
    assert slim["metadata"]["deletionTimestamp"] is None


def test_slim_bodies_share_their_keys_and_short_strings() -> None:
    def decoded() -> dict[str, Any]:  # two bodies decoded apart, as two watch events are
        text = '{"spec": {"model": {"pollIntervalSeconds": 30}}, "status": {"phase": "Pending"}}'
        return cast(dict[str, Any], json.loads(text))

    first, second = slim_body(decoded()), slim_body(decoded())
    keys = [next(iter(body["spec"]["model"])) for body in (first, second)]
    assert keys == ["pollIntervalSeconds"] * 2 and keys[0] is keys[1]
    assert first["spec"] == {"model": {"pollIntervalSeconds": 30}}
    assert first["status"]["phase"] == "Pending" and first["status"]["phase"] is second["status"]["phase"]


def test_a_new_runner_keeps_its_waker_when_the_stopped_one_exits() -> None:
    """A runner stopped and one started for the same object at once: the old one's exit must not take the
    new one's wake-ups away (it would then only resync)."""
    unused: Any = None
    ctx = OperatorContext(unused, unused, unused, unused, unused)
    stopped = ctx.waker(KEY)
    started = ctx.waker(KEY)
    assert started is not stopped
    ctx.drop_waker(KEY, stopped)  # the stopped runner ends after the new one began
    ctx.wake(KEY)
    assert started.is_set() and not stopped.is_set()
    ctx.drop_waker(KEY, started)
    assert KEY not in ctx.wakers


def test_a_packed_body_unpacks_to_the_slim_body() -> None:
    packed = Packed(slim_fields(FULL))
    assert isinstance(packed.packed, str) and "managedFields" not in packed.packed
    assert packed.unpack() == slim_body(FULL)
    assert packed.unpack() is not packed.unpack()  # each read gets a copy of its own


def test_a_reconciler_made_for_the_next_pass_recalls_what_the_last_one_wrote() -> None:
    class Reconciler(ObjectReconciler):
        plural = "trainingruns"

    unused: Any = None
    ctx = OperatorContext(unused, unused, unused, unused, unused)

    def made(uid: str = "uid-1") -> Reconciler:
        raw = {**slim_body(FULL), "metadata": {**FULL["metadata"], "uid": uid}}
        return Reconciler(ctx, kopf.Body(cast(kopf.RawBody, raw)), logging.getLogger(__name__))

    last = made()
    last.writer.written = {"phase": "Succeeded"}
    last.writer.last_said = [("Ready", True, "Succeeded", "the trainer finished")]
    memory = Packed(last.memory()).unpack()  # kept packed between passes

    following = made()
    assert following.recall(memory)
    assert following.status["phase"] == "Succeeded"
    assert following.writer.last_said == last.writer.last_said  # tuples again, as a write compares them
    stranger = made(uid="uid-2")  # deleted and made again under the same name
    assert not stranger.recall(memory) and stranger.status == FULL["status"]


def test_a_modeldeployment_pass_recalls_its_pruned_generation_and_images() -> None:
    unused: Any = None
    ctx = OperatorContext(unused, unused, unused, unused, unused)
    raw = {**slim_body(FULL), "kind": "ModelDeployment"}

    def made() -> ModelDeploymentReconciler:
        body = kopf.Body(cast(kopf.RawBody, raw))
        return ModelDeploymentReconciler(ctx, body, logging.getLogger(__name__), unused)

    last = made()
    last.pruned_generation = 2
    last.images[("wine", "3")] = "trainer-sklearn"
    following = made()
    assert following.recall(Packed(last.memory()).unpack())
    assert following.pruned_generation == 2 and following.images == {("wine", "3"): "trainer-sklearn"}
