"""The operator's MLflow client (tracking, registry) against the real MLflow tracking server."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from mlplatform.registry import ModelNotLogged, Registry
from mlplatform.tracking import MlflowClient, MlflowError, MlflowUnavailable, Run
from mlplatform.versions import MLFLOW_VERSION

if TYPE_CHECKING:  # the fixtures' types, from tests/platform/conftest.py
    from conftest import Image
    from stack import Stack

pytestmark = pytest.mark.platform
UID_TAG = "mlplatform.dev/uid"  # a key with a dot and a slash, as the operator's own tags have


def now_ms() -> int:
    return int(time.time() * 1000)


async def new_run(client: MlflowClient, experiment: str, uid: str) -> Run:
    experiment_id = await client.get_or_create_experiment(experiment)
    return await client.create_run(experiment_id, f"run-{uid}", {UID_TAG: uid}, now_ms())


def test_server_version_and_experiments(mlflow_stack: Stack, experiment: str) -> None:
    async def scenario() -> None:
        async with MlflowClient(mlflow_stack.tracking_uri) as client:
            assert await client.server_version() == MLFLOW_VERSION
            first = await client.get_or_create_experiment(experiment)
            assert await client.get_or_create_experiment(experiment) == first
            # Racing callers all get the one experiment.
            racing = f"{experiment}-race"
            ids = await asyncio.gather(*(client.get_or_create_experiment(racing) for _ in range(4)))
            assert len(set(ids)) == 1

            assert mlflow_stack.api("POST", "experiments/delete", json={"experiment_id": first}).ok
            # The id is remembered (no call per run) until the caller forgets it, as after a failed run.
            assert await client.get_or_create_experiment(experiment) == first
            assert client.forget_experiment(experiment)
            with pytest.raises(MlflowError, match=f"{experiment}.*is deleted"):
                await client.get_or_create_experiment(experiment)

    asyncio.run(scenario())


def test_runs_by_dotted_tag_params_and_termination(mlflow_stack: Stack, experiment: str) -> None:
    async def scenario() -> None:
        async with MlflowClient(mlflow_stack.tracking_uri) as client:
            uid = str(uuid.uuid4())
            run = await new_run(client, experiment, uid)
            assert (run.status, run.tags[UID_TAG], run.end_time) == ("RUNNING", uid, None)
            other = await new_run(client, experiment, str(uuid.uuid4()))
            found = await client.find_runs_by_tag(run.experiment_id, UID_TAG, uid)
            assert [r.run_id for r in found] == [run.run_id]

            params = {f"p{i:03}": str(i) for i in range(150)}  # two log-batch chunks
            await client.log_params(run.run_id, params)
            await client.log_params(run.run_id, {"p001": "1", "p149": "149"})  # the same values: fine
            with pytest.raises(MlflowError, match=r"p007='7' \(not '8'\)") as changed:
                await client.log_params(run.run_id, {"p006": "6", "p007": "8"})
            assert changed.value.code == "INVALID_PARAMETER_VALUE"

            await client.set_tags(run.run_id, {"mlplatform.dev/phase": "training", UID_TAG: uid})
            await client.terminate_run(run.run_id, "FAILED", now_ms())
            await client.terminate_run(run.run_id, "FAILED", now_ms())  # idempotent
            await client.terminate_run(other.run_id, "KILLED", now_ms())
            read = await client.get_run(run.run_id)
            assert read.params == params and read.status == "FAILED"
            assert read.tags["mlplatform.dev/phase"] == "training"
            assert read.end_time is not None and read.start_time is not None
            assert read.end_time >= read.start_time
            assert (await client.get_run(other.run_id)).status == "KILLED"

    asyncio.run(scenario())


def test_unknown_run_is_resource_does_not_exist(mlflow_stack: Stack) -> None:
    async def scenario() -> None:
        async with MlflowClient(mlflow_stack.tracking_uri) as client:
            with pytest.raises(MlflowError) as raised:
                await client.get_run(uuid.uuid4().hex)
            error = raised.value
            assert not isinstance(error, MlflowUnavailable)
            assert (error.status, error.code) == (404, "RESOURCE_DOES_NOT_EXIST")
            assert "runs/get" in str(error)

    asyncio.run(scenario())


def test_an_unreachable_server_fails_in_bounded_time(port: int) -> None:
    url = f"http://127.0.0.1:{port}"  # a free port: nothing listens there

    async def scenario() -> None:
        async with MlflowClient(url, attempts=3, backoff=0.2) as client:
            started = time.monotonic()
            with pytest.raises(MlflowUnavailable, match=f"MLflow at {url} unreachable") as raised:
                await client.create_run("0", "x", {}, now_ms())  # could not connect: a create retries too
            assert time.monotonic() - started < 5
            assert "3 attempts" in str(raised.value) and raised.value.status is None

    asyncio.run(scenario())


def test_registry(mlflow_stack: Stack, images: dict[str, Image], experiment: str) -> None:
    trained = images["trainer-sklearn"].train(mlflow_stack.trainer_env(experiment))
    run_id, model_name = trained["run_id"], f"model-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        async with MlflowClient(mlflow_stack.tracking_uri) as client:
            registry = Registry(client)
            experiment_id = (await client.get_run(run_id)).experiment_id
            model_id = await registry.logged_model_id(experiment_id, run_id, "model")
            assert model_id is not None and model_id.startswith("m-")
            assert await registry.logged_model_id(experiment_id, run_id, "other") is None

            assert await registry.find_version_for_run(model_name, run_id) is None
            tags = {"mlplatform.dev/uid": "abc"}
            first = await registry.register(model_name, run_id, "model", experiment_id, tags)
            again = await registry.register(model_name, run_id, "model", experiment_id, tags)
            assert first == again
            with pytest.raises(ModelNotLogged, match="'other'"):
                await registry.register(f"{model_name}-other", run_id, "other", experiment_id, tags)
            assert (first.version, first.status, first.run_id) == ("1", "READY", run_id)
            assert first.source == f"models:/{model_id}" and first.tags == tags
            assert await registry.find_version_for_run(model_name, run_id) == first
            listed = mlflow_stack.api(
                "GET", "model-versions/search", params={"filter": f"name='{model_name}'"}
            )
            assert len(listed.json()["model_versions"]) == 1

            # Aliases.
            assert await registry.version_by_alias(model_name, "champion") is None
            assert await registry.version_by_alias(f"{model_name}-missing", "champion") is None
            await registry.set_alias(model_name, "champion", first.version)
            champion = await registry.version_by_alias(model_name, "champion")
            assert champion is not None and champion.version == "1" and champion.aliases == ("champion",)
            # Searches and stage lists leave aliases out; the client reads them back.
            found = await registry.find_version_for_run(model_name, run_id)
            assert found is not None and found.aliases == ("champion",)

            # Stages (deprecated in MLflow 3, still served).
            assert await registry.latest_in_stage(model_name, "Production") is None
            moved = await registry.transition_stage(model_name, first.version, "Production")
            assert moved.current_stage == "Production"
            latest = await registry.latest_in_stage(model_name, "Production")
            assert latest is not None and (latest.version, latest.aliases) == ("1", ("champion",))
            assert (await registry.get_version(model_name, "1")).current_stage == "Production"
            assert await registry.latest_in_stage(f"{model_name}-missing", "Production") is None

    asyncio.run(scenario())
