"""Print diabetes rows and what the model at argv[1] predicts for them (run in the sklearn environment)."""

import json
import sys

import mlflow.pyfunc
from sklearn.datasets import load_diabetes

rows = load_diabetes(return_X_y=True, as_frame=True)[0].head(4)
model = mlflow.pyfunc.load_model(sys.argv[1])
print(
    json.dumps(
        {
            "columns": list(rows.columns),
            "data": rows.to_numpy().tolist(),
            "predictions": [float(v) for v in model.predict(rows)],
        }
    )
)
