"""The scikit-learn trainer: an ElasticNet on scikit-learn's bundled diabetes data set, tracked in MLflow.

It logs its parameters, rmse / mae / r2, the coefficients (coefficients.csv), a predicted-versus-actual
plot, and the model with a signature and an input example; given --registered-model-name it also
registers a model version. The data ships inside scikit-learn: nothing is downloaded at run time.

It follows the trainer contract (../README.md) and runs the same three ways:
    python train.py --alpha 0.3                          plain Python, anywhere
    mlflow run . -P alpha=0.3 --env-manager local        as an MLflow project
    in a TrainingRun                                     parameters arrive in MLPLATFORM_PARAMETERS
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex

import mlflow
import mlflow.sklearn
import pandas as pd
from matplotlib.figure import Figure
from mlflow.models import infer_signature
from sklearn.datasets import load_diabetes
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split


def platform_parameters() -> dict[str, str]:
    """The TrainingRun's parameters (a JSON object of strings); command-line flags override them."""
    parameters = json.loads(os.environ.get("MLPLATFORM_PARAMETERS") or "{}")
    return {str(k): str(v) for k, v in parameters.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = platform_parameters()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alpha", type=float, default=float(defaults.get("alpha", "0.001")))
    parser.add_argument("--l1-ratio", type=float, default=float(defaults.get("l1_ratio", "0.5")))
    parser.add_argument("--test-size", type=float, default=float(defaults.get("test_size", "0.25")))
    parser.add_argument("--random-state", type=int, default=int(defaults.get("random_state", "42")))
    parser.add_argument(
        "--registered-model-name",
        default=defaults.get("registered_model_name") or None,
        help="register the logged model under this name (a new version each run)",
    )
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


def scores(actual: pd.Series, predicted: pd.Series) -> dict[str, float]:
    return {
        "rmse": math.sqrt(mean_squared_error(actual, predicted)),
        "mae": float(mean_absolute_error(actual, predicted)),
        "r2": float(r2_score(actual, predicted)),
    }


def plot(actual: pd.Series, predicted: pd.Series) -> Figure:
    figure = Figure(figsize=(5, 5))  # no pyplot: no display backend needed
    axes = figure.subplots()
    axes.scatter(actual, predicted, s=12, alpha=0.7)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    axes.plot([low, high], [low, high], color="grey", linestyle="--")
    axes.set(xlabel="actual", ylabel="predicted", title="ElasticNet on diabetes (test split)")
    return figure


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    features, target = load_diabetes(return_X_y=True, as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=args.test_size, random_state=args.random_state
    )
    model = ElasticNet(alpha=args.alpha, l1_ratio=args.l1_ratio, random_state=args.random_state)

    # Resumes the run in MLFLOW_RUN_ID if set, otherwise starts one in MLFLOW_EXPERIMENT_NAME.
    with mlflow.start_run() as run:
        log_new_params(
            {
                "alpha": args.alpha,
                "l1_ratio": args.l1_ratio,
                "test_size": args.test_size,
                "random_state": args.random_state,
            }
        )
        mlflow.set_tag("mlplatform.trainer", "sklearn")
        model.fit(x_train, y_train)
        predicted = pd.Series(model.predict(x_test), index=y_test.index)
        metrics = scores(y_test, predicted)
        mlflow.log_metrics(metrics)

        coefficients = pd.DataFrame({"feature": features.columns, "coefficient": model.coef_})
        mlflow.log_text(coefficients.to_csv(index=False), "coefficients.csv")
        mlflow.log_figure(plot(y_test, predicted), "plots/predicted_vs_actual.png")

        logged = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x_test, predicted.to_numpy()),
            input_example=x_test.head(3),
            registered_model_name=args.registered_model_name,
        )
        summary = {"run_id": run.info.run_id, "model_uri": logged.model_uri, **metrics}
        if logged.registered_model_version is not None:
            summary["registered_model_version"] = str(logged.registered_model_version)
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
