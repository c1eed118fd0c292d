"""The minimal trainer: logs a parameter, a tag and a PNG artifact to MLflow.

It follows the trainer contract (../README.md) and runs the same three ways:
    python train.py --message "hi"                       plain Python, anywhere
    mlflow run . -P message=hi --env-manager local       as an MLflow project
    in a TrainingRun                                     parameters arrive in MLPLATFORM_PARAMETERS
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import tempfile
from pathlib import Path

import mlflow
from PIL import Image, ImageDraw


def platform_parameters() -> dict[str, str]:
    """The TrainingRun's parameters (a JSON object of strings); command-line flags override them."""
    parameters = json.loads(os.environ.get("MLPLATFORM_PARAMETERS") or "{}")
    return {str(k): str(v) for k, v in parameters.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = platform_parameters()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--message", default=defaults.get("message", "hello from the minimal trainer"))
    return parser.parse_args(argv)


def says(logged: str, value: object) -> bool:
    """Whether a logged parameter already says `value`, perhaps spelled otherwise ("1e-3", "'a b'")."""
    text = str(value)
    if logged in (text, shlex.quote(text)):
        return True
    try:
        return float(logged) == float(text)
    except ValueError:
        return False


def log_new_params(params: dict[str, object]) -> None:
    """Log what the run does not say yet. The operator or `mlflow run` may have logged a parameter
    already, and MLflow refuses to change one: a real conflict still fails, with MLflow's message."""
    run = mlflow.active_run()
    assert run is not None
    logged = mlflow.get_run(run.info.run_id).data.params
    mlflow.log_params({k: v for k, v in params.items() if k not in logged or not says(logged[k], v)})


def badge(message: str) -> Image.Image:
    """A small PNG that shows the message: an artifact anyone can open in the MLflow UI."""
    image = Image.new("RGB", (max(160, 8 * len(message) + 20), 40), "white")
    ImageDraw.Draw(image).text((10, 14), message, fill="black")
    return image


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Resumes the run in MLFLOW_RUN_ID if set, otherwise starts one in MLFLOW_EXPERIMENT_NAME.
    with mlflow.start_run() as run:
        log_new_params({"message": args.message})
        mlflow.set_tag("mlplatform.trainer", "minimal")
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "badge.png"
            badge(args.message).save(path)
            mlflow.log_artifact(str(path), artifact_path="images")
        print(json.dumps({"run_id": run.info.run_id, "experiment_id": run.info.experiment_id}))


if __name__ == "__main__":
    main()
