"""What keeps the operator's memory flat in the number of objects: one scheduler of passes instead of a
daemon per ModelDeployment, registry answers shared by the ModelDeployments asking the same, a
Deployment index that keeps only what a pass reads, and no runner for a suspended TrainingRun."""

from __future__ import annotations

import asyncio

import pytest

from mlplatform.handlers.context import ObjectKey
from mlplatform.handlers.passes import PassScheduler
from mlplatform.handlers.trainingrun import needs_watching
from mlplatform.registry import RecentAnswers
from mlplatform.tracking import MlflowUnavailable, ModelVersion

KEY: ObjectKey = ("team-a", "modeldeployment/wine")


class Recorder:
    """A pass that counts itself and returns the delays it is given, one per pass."""

    def __init__(self, *delays: float | None) -> None:
        self.delays = list(delays)
        self.passes = 0
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, key: ObjectKey) -> float | None:
        self.passes += 1
        await self.release.wait()
        return self.delays.pop(0) if self.delays else None


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_pass_runs_at_once_then_on_its_timer_until_it_returns_none() -> None:
    async def scenario() -> None:
        recorder = Recorder(0.01, None)
        scheduler = PassScheduler(recorder, concurrency=2)
        scheduler.ensure(KEY)
        scheduler.ensure(KEY)  # already scheduled: no second pass
        await settle()
        assert recorder.passes == 1 and KEY in scheduler
        await asyncio.sleep(0.05)
        assert recorder.passes == 2 and KEY not in scheduler

    asyncio.run(scenario())


def test_a_wake_between_passes_runs_one_now_and_during_a_pass_one_right_after() -> None:
    async def scenario() -> None:
        recorder = Recorder(3600, 3600, 3600)
        scheduler = PassScheduler(recorder, concurrency=2)
        scheduler.ensure(KEY)
        await settle()
        scheduler.wake(KEY)  # waiting an hour for its timer: runs now
        await settle()
        assert recorder.passes == 2
        recorder.release.clear()
        scheduler.wake(KEY)
        await settle()
        scheduler.wake(KEY)  # during that pass
        recorder.release.set()
        await settle()
        assert recorder.passes == 4
        scheduler.wake(("team-a", "modeldeployment/unknown"))  # never ensured: nothing runs
        await settle()
        assert recorder.passes == 4
        scheduler.close()

    asyncio.run(scenario())


def test_a_failing_pass_is_retried() -> None:
    async def scenario() -> None:
        calls = 0

        async def failing(key: ObjectKey) -> float | None:
            nonlocal calls
            calls += 1
            raise RuntimeError("boom")

        scheduler = PassScheduler(failing, concurrency=1)
        scheduler.ensure(KEY)
        await settle()
        assert calls == 1 and KEY in scheduler, "scheduled again after the error delay"
        scheduler.close()

    asyncio.run(scenario())


def version(number: str) -> ModelVersion:
    return ModelVersion("wine", number, "run-1", "models:/m-1", "READY", (), "None", {})


def test_recent_answers_are_shared_until_they_age_or_their_model_changes() -> None:
    async def scenario() -> None:
        answers, calls = RecentAnswers(), 0

        async def call() -> ModelVersion | None:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0)
            return version(str(calls))

        question = ("wine", "alias/champion")
        together = await asyncio.gather(*(answers.ask(question, 60, call) for _ in range(50)))
        assert calls == 1 and {found.version for found in together if found} == {"1"}
        assert (await answers.ask(("wine", "alias/other"), 60, call)) == version("2")
        assert (await answers.ask(question, 0, call)) == version("3"), "too old for this asker"
        answers.forget_model("wine")
        assert (await answers.ask(question, 60, call)) == version("4")

    asyncio.run(scenario())


def test_a_failed_registry_call_is_not_remembered() -> None:
    async def scenario() -> None:
        answers = RecentAnswers()

        async def unreachable() -> ModelVersion | None:
            raise MlflowUnavailable("connection refused")

        async def found() -> ModelVersion | None:
            return version("7")

        with pytest.raises(MlflowUnavailable):
            await answers.ask(("wine", "alias/champion"), 60, unreachable)
        assert (await answers.ask(("wine", "alias/champion"), 60, found)) == version("7")

    asyncio.run(scenario())


def ready(reason: str) -> dict[str, object]:
    return {"conditions": [{"type": "Ready", "status": "False", "reason": reason}], "phase": "Pending"}


@pytest.mark.parametrize(
    ("spec", "status", "watched"),
    [
        ({"suspend": True}, {}, True),  # no Job yet: the runner creates it (suspended)
        ({"suspend": True}, ready("Suspended"), False),  # parked until the spec changes
        ({"suspend": False}, ready("Suspended"), True),  # resumed: the runner un-suspends the Job
        ({"suspend": True}, ready("Running"), True),  # the runner still has to suspend the Job
        ({}, {"phase": "Succeeded"}, False),
        ({}, ready("Pending"), True),
    ],
)
def test_only_a_trainingrun_that_can_change_has_a_runner(
    spec: dict[str, object], status: dict[str, object], watched: bool
) -> None:
    assert needs_watching(spec, status) is watched
