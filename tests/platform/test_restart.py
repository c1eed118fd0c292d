"""PostgreSQL restarts under a running tracking server: clients ride it out, nothing logged is lost."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mlplatform.local.stack import postgres, start_service, stop_service

if TYPE_CHECKING:
    from conftest import Image
    from stack import Stack

pytestmark = pytest.mark.platform
SCRIPTS = Path(__file__).parent / "scripts"


def snapshot(stack: Stack, experiment: str) -> list[tuple[object, ...]]:
    """Every run of the experiment with its status and parameters, straight from PostgreSQL."""
    return stack.query(
        "SELECT r.run_uuid, r.status, p.key, p.value FROM runs r JOIN experiments e USING (experiment_id) "
        "LEFT JOIN params p USING (run_uuid) WHERE e.name = %s ORDER BY r.run_uuid, p.key",
        experiment,
    )


def test_logging_survives_a_postgres_restart(
    mlflow_stack: Stack, images: dict[str, Image], experiment: str
) -> None:
    minimal = images["trainer-minimal"]
    env = mlflow_stack.trainer_env(experiment)
    run_ids = [
        minimal.train(env, ["python", "train.py", "--message", f"before {i}"])["run_id"] for i in (1, 2)
    ]
    before = snapshot(mlflow_stack, experiment)
    assert {row[0] for row in before} == set(run_ids)

    assert stop_service(mlflow_stack.config, postgres.SERVICE)
    try:
        # The tracking server keeps running and reports the outage instead of hanging.
        down = mlflow_stack.api("GET", "runs/get", params={"run_id": run_ids[0]})
        assert down.status_code in (500, 503), down.text
        # A client logs while the database is down: MLflow's own retries carry it over the restart.
        logger = subprocess.Popen(
            [
                str(minimal.venv / "bin/python"),
                str(SCRIPTS / "log_metric.py"),
                run_ids[0],
                "after_restart",
                "7",
            ],
            env=minimal.environ(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(5)
        assert logger.poll() is None, "the client gave up while the database was down"
    finally:
        start_service(mlflow_stack.config, postgres.SERVICE)
    out, err = logger.communicate(timeout=180)
    assert logger.returncode == 0, err
    print(f"\nlogging during the PostgreSQL restart took {json.loads(out)['seconds']:.1f}s (client retries)")

    assert mlflow_stack.query(
        "SELECT value FROM metrics WHERE run_uuid = %s AND key = 'after_restart'", run_ids[0]
    ) == [(7.0,)]
    assert snapshot(mlflow_stack, experiment) == before  # no run logged before the restart is lost
    after = minimal.train(env, ["python", "train.py", "--message", "after"])  # and new runs work as before
    assert after["run_id"] not in run_ids
