"""MLflow's model registry for the operator: register a run's model once, find versions by alias or stage.

It goes through the same MlflowClient (and so the same retries) as tracking; shapes checked against the
MLflow 3.17.2 server (tests/platform/test_tracking_client.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from mlplatform.tracking import (
    SEARCH_PAGE_SIZE,
    MlflowClient,
    MlflowError,
    ModelVersion,
    as_key_values,
    model_version_from_json,
    quote_value,
)

READY = "READY"
FAILED_REGISTRATION = "FAILED_REGISTRATION"
READY_TIMEOUT = 120.0  # seconds a new version may take to become READY (MLflow copies nothing: quick)
READY_POLL = 0.5
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
INVALID = "INVALID_PARAMETER_VALUE"
LOGGED_MODEL_READY = "LOGGED_MODEL_READY"
FORGET_AFTER = 3600.0  # seconds after which an answer nobody asked for again is dropped

Question = tuple[str, ...]  # (model name, how it is selected, ...)


class ModelNotLogged(MlflowError):  # noqa: N818 - reads as what happened
    """The run logged no model of the name asked for: there is nothing to register."""


def oldest(versions: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return min(versions, key=lambda version: int(version["version"]), default=None)


def failed(task: asyncio.Task[Any]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


class RecentAnswers:
    """Registry answers shared by everyone asking the same question within a while: a thousand
    ModelDeployments of one model cost one registry call per while, not a thousand. A question asked
    while its answer is on the way waits for that answer; a failed call is not remembered."""

    def __init__(self) -> None:
        self._answers: dict[Question, tuple[float, asyncio.Task[ModelVersion | None]]] = {}

    async def ask(
        self, question: Question, max_age: float, call: Callable[[], Awaitable[ModelVersion | None]]
    ) -> ModelVersion | None:
        now = time.monotonic()
        asked = self._answers.get(question)
        if asked is None or now - asked[0] >= max_age or failed(asked[1]):
            self._forget_older_than(now - FORGET_AFTER)
            asked = (now, asyncio.ensure_future(call()))
            self._answers[question] = asked
        return await asyncio.shield(asked[1])

    def forget_model(self, model: str) -> None:
        """The registry said model `model` changed: its next answers come from the registry."""
        for question in [question for question in self._answers if question[0] == model]:
            del self._answers[question]

    def _forget_older_than(self, oldest: float) -> None:
        for question in [q for q, (asked, _) in self._answers.items() if asked < oldest]:
            del self._answers[question]


class Registry:
    """The model registry calls the operator makes."""

    def __init__(self, client: MlflowClient, *, ready_timeout: float = READY_TIMEOUT) -> None:
        self.client = client
        self.ready_timeout = ready_timeout
        self.answers = RecentAnswers()

    async def get_version(self, name: str, version: str) -> ModelVersion:
        found = await self.client.request(
            "GET", "model-versions/get", params={"name": name, "version": version}
        )
        return model_version_from_json(found["model_version"])

    async def find_version(self, name: str, version: str) -> ModelVersion | None:
        """The version; None when it or its model does not exist."""
        try:
            return await self.get_version(name, version)
        except MlflowError as error:
            if error.code == NOT_FOUND:
                return None
            raise

    async def _full(self, version: Mapping[str, Any] | None) -> ModelVersion | None:
        """The version as model-versions/get tells it: searches and stage lists leave out its aliases."""
        return None if version is None else await self.get_version(version["name"], str(version["version"]))

    async def find_version_for_run(self, name: str, run_id: str) -> ModelVersion | None:
        """The oldest version of model `name` registered from the run, if any."""
        params = {
            "filter": f"name={quote_value(name)} and run_id={quote_value(run_id)}",
            "max_results": str(SEARCH_PAGE_SIZE),
        }
        found = await self.client.request("GET", "model-versions/search", params=params)
        return await self._full(oldest(found.get("model_versions", ())))

    async def logged_model_id(self, experiment_id: str, run_id: str, artifact_name: str) -> str | None:
        """The id of the LoggedModel that run `run_id` logged as `artifact_name` (MLflow 3), if any."""
        body: dict[str, Any] = {
            "experiment_ids": [experiment_id],
            "filter": f"source_run_id = {quote_value(run_id)}",
            "max_results": 100,
        }
        models: list[dict[str, Any]] = []
        while True:
            page = await self.client.request("POST", "logged-models/search", body=body)
            models += [model["info"] for model in page.get("models", ()) if "info" in model]
            if not page.get("next_page_token"):
                break
            body["page_token"] = page["next_page_token"]
        named = [model for model in models if model.get("name") == artifact_name]
        # A run that logged the same name twice: the newest finished one is the model it means.
        named.sort(
            key=lambda model: (
                model.get("status") == LOGGED_MODEL_READY,
                model.get("creation_timestamp_ms", 0),
            )
        )
        return str(named[-1]["model_id"]) if named else None

    async def register(
        self, name: str, run_id: str, artifact_name: str, experiment_id: str, tags: Mapping[str, str]
    ) -> ModelVersion:
        """The READY version of model `name` for the run, registered once however often this is called."""
        await self._ensure_registered_model(name)
        existing = await self.find_version_for_run(name, run_id)
        if existing is None:
            existing = await self._create_version(name, run_id, artifact_name, experiment_id, tags)
        return await self._wait_until_ready(existing)

    async def _ensure_registered_model(self, name: str) -> None:
        try:
            await self.client.request("POST", "registered-models/create", body={"name": name})
        except MlflowError as error:
            if error.code != "RESOURCE_ALREADY_EXISTS":
                raise

    async def _create_version(
        self, name: str, run_id: str, artifact_name: str, experiment_id: str, tags: Mapping[str, str]
    ) -> ModelVersion:
        model_id = await self.logged_model_id(experiment_id, run_id, artifact_name)
        if model_id is None:
            # MLflow would register a `runs:/` source that holds nothing, and mark it READY.
            raise ModelNotLogged(f"run {run_id} logged no model named {artifact_name!r}")
        body: dict[str, Any] = {
            "name": name,
            "run_id": run_id,
            "tags": as_key_values(tags),
            "source": f"models:/{model_id}",
            "model_id": model_id,
        }
        # Not retried once sent: a lost answer is found by find_version_for_run on the next call.
        created = await self.client.request("POST", "model-versions/create", body=body, creates=True)
        return model_version_from_json(created["model_version"])

    async def _wait_until_ready(self, version: ModelVersion) -> ModelVersion:
        deadline = asyncio.get_running_loop().time() + self.ready_timeout
        while version.status != READY:
            if version.status == FAILED_REGISTRATION:
                raise MlflowError(
                    f"MLflow model {version.name!r} version {version.version}: registration failed",
                    code=FAILED_REGISTRATION,
                )
            if asyncio.get_running_loop().time() > deadline:
                raise MlflowError(
                    f"MLflow model {version.name!r} version {version.version} is still {version.status} "
                    f"after {self.ready_timeout:g}s"
                )
            await asyncio.sleep(READY_POLL)
            version = await self.get_version(version.name, version.version)
        return version

    async def version_by_alias(self, name: str, alias: str) -> ModelVersion | None:
        """The version the alias points at; None when the model or the alias does not exist."""
        try:
            found = await self.client.request(
                "GET", "registered-models/alias", params={"name": name, "alias": alias}
            )
        except MlflowError as error:
            # A missing model is RESOURCE_DOES_NOT_EXIST, but a missing alias INVALID_PARAMETER_VALUE.
            if error.code == NOT_FOUND or (error.code == INVALID and not await self._has_alias(name, alias)):
                return None
            raise
        return model_version_from_json(found["model_version"])

    async def _has_alias(self, name: str, alias: str) -> bool:
        found = await self.client.request("GET", "registered-models/get", params={"name": name})
        return any(entry.get("alias") == alias for entry in found["registered_model"].get("aliases", ()))

    async def set_alias(self, name: str, alias: str, version: str) -> None:
        body = {"name": name, "alias": alias, "version": version}
        await self.client.request("POST", "registered-models/alias", body=body)

    async def latest_in_stage(self, name: str, stage: str) -> ModelVersion | None:
        """The newest version in `stage` (deprecated in MLflow 3, still served); None if none or no model."""
        try:
            found = await self.client.request(
                "POST", "registered-models/get-latest-versions", body={"name": name, "stages": [stage]}
            )
        except MlflowError as error:
            if error.code == NOT_FOUND:
                return None
            raise
        versions = found.get("model_versions", ())
        return await self._full(max(versions, key=lambda version: int(version["version"]), default=None))

    async def transition_stage(
        self, name: str, version: str, stage: str, archive_existing: bool = True
    ) -> ModelVersion:
        body = {
            "name": name,
            "version": version,
            "stage": stage,
            "archive_existing_versions": archive_existing,
        }
        moved = await self.client.request("POST", "model-versions/transition-stage", body=body)
        return model_version_from_json(moved["model_version"])
