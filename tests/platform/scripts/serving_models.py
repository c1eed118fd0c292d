"""Save the models the model-server tests serve into the folder argv[1] (run in the sklearn environment):

- regressor: scikit-learn ElasticNet on the diabetes data, with a signature and an input example;
- classifier: scikit-learn LogisticRegression on iris (integer predictions), with a signature;
- pyfunc: a python_function model of plain Python code (another flavor), with a signature of doubles;
- unsigned: the regressor without a signature, which MLflow's own handling serves.
"""

import sys
from pathlib import Path

import mlflow.pyfunc
import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import ElasticNet, LogisticRegression


class Scaled(mlflow.pyfunc.PythonModel):
    """A weighted sum of the columns, and whether it is positive: a DataFrame of two columns."""

    def predict(self, context, model_input, params=None):
        score = model_input["a"] * 0.5 + model_input["b"] * 2 - model_input["c"]
        return pd.DataFrame({"score": score, "positive": score > 0})


def main(folder: Path) -> None:
    x, y = load_diabetes(return_X_y=True, as_frame=True)
    regressor = ElasticNet(alpha=0.05, l1_ratio=0.5, random_state=0).fit(x, y)
    signature = infer_signature(x.head(), regressor.predict(x.head()))
    mlflow.sklearn.save_model(regressor, folder / "regressor", signature=signature, input_example=x.head(2))
    mlflow.sklearn.save_model(regressor, folder / "unsigned")
    xi, yi = load_iris(return_X_y=True, as_frame=True)
    classifier = LogisticRegression(max_iter=500).fit(xi, yi)
    mlflow.sklearn.save_model(
        classifier, folder / "classifier", signature=infer_signature(xi.head(), classifier.predict(xi.head()))
    )
    example = pd.DataFrame({"a": [1.0, -2.5], "b": [0.25, 3.0], "c": [4.0, 0.5]})
    mlflow.pyfunc.save_model(
        folder / "pyfunc",
        python_model=Scaled(),
        signature=infer_signature(example, Scaled().predict(None, example)),
        input_example=example,
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
