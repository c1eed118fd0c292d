"""A task for each object that needs one, kept by the operator rather than by kopf's daemons.

kopf keeps the last body of every object of a resource that has a daemon handler, for the life of the
process, whether a daemon runs for it or not: with thousands of finished or suspended TrainingRuns that is
thousands of full bodies. Here only the objects whose task runs are held, as the slim body their runner
reads, refreshed by each watch event.

As kopf does with its daemons: a runner that returns has finished its object, and no event starts it
again (an event can bring an older state of the object after its runner wrote the last one); a runner
stopped from outside (the object was suspended, or is being deleted) starts again when its object needs it;
a runner that fails unexpectedly starts again after a pause, from the object as last seen.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import kopf

from mlplatform.handlers.context import ObjectKey

logger = logging.getLogger("mlplatform.runners")
RESTART_DELAY = 10.0  # after a runner failed unexpectedly


class Runner(Protocol):
    uid: str
    body: kopf.Body

    def refresh(self, body: kopf.Body) -> None: ...

    async def run(self) -> None: ...


MakeRunner = Callable[[kopf.Body], Runner]


@dataclass
class Running:
    runner: Runner
    task: asyncio.Task[None]


class Runners:
    def __init__(self, restart_delay: float = RESTART_DELAY) -> None:
        self.restart_delay = restart_delay
        self._running: dict[ObjectKey, Running] = {}
        self._finished: set[str] = set()  # uids whose runner returned
        # Runners run in a copy of this context (kopf's event queue is there, for the events they post),
        # not in the context of the handler that started them, which holds that event's whole body.
        self._context = contextvars.copy_context()

    def __contains__(self, key: ObjectKey) -> bool:
        return key in self._running

    def ensure(self, key: ObjectKey, body: kopf.Body, make: MakeRunner) -> None:
        """Hand `body` to the runner of `key`, starting one unless its object has finished."""
        uid = body.metadata.uid or ""
        found = self._running.get(key)
        if found is not None and found.runner.uid == uid:
            found.runner.refresh(body)
            return
        if found is not None:  # deleted and made again under the same name
            self.stop(key)
        if uid in self._finished:
            return
        runner = make(body)
        task = asyncio.create_task(
            self._run(key, runner, make), name=f"runner of {key[0]}/{key[1]}", context=self._context.copy()
        )
        self._running[key] = Running(runner, task)

    def stop(self, key: ObjectKey) -> None:
        """Cancel the runner of `key`, if one runs; an event may start it again."""
        if (found := self._running.pop(key, None)) is not None:
            found.task.cancel()

    def forget(self, key: ObjectKey, uid: str) -> None:
        """The object is gone: stop its runner and forget that it finished."""
        self.stop(key)
        self._finished.discard(uid)

    def close(self) -> None:
        for key in list(self._running):
            self.stop(key)

    async def _run(self, key: ObjectKey, runner: Runner, make: MakeRunner) -> None:
        while True:
            try:
                await runner.run()
                break
            except Exception:
                delay = self.restart_delay
                logger.exception("the runner of %s/%s failed; it starts again in %s s", *key, delay)
            await asyncio.sleep(self.restart_delay)
            runner = make(runner.body)
            if (found := self._running.get(key)) is not None:
                found.runner = runner
        self._finished.add(runner.uid)
        if (found := self._running.get(key)) is not None and found.task is asyncio.current_task():
            del self._running[key]
