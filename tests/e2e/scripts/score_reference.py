"""What MLflow itself answers for the model at argv[1] (run in the model's image environment):
`mlflow.pyfunc.load_model(...).predict` on diabetes rows, and the scoring server's own answer to each
request in the JSON list on stdin ([{"content_type", "body"}]): its `invocations` on the bytes, with an
MlflowException turned into a response as its /invocations route does. Prints one JSON object."""

import json
import sys

import mlflow.pyfunc
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server
from sklearn.datasets import load_diabetes


def parsed(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


rows = load_diabetes(return_X_y=True, as_frame=True)[0].head(5)
model = mlflow.pyfunc.load_model(sys.argv[1])
schema = model.metadata.get_input_schema()
answers = []
for case in json.load(sys.stdin):
    try:
        answer = scoring_server.invocations(case["body"].encode(), case["content_type"], model, schema)
        answers.append({"status": answer.status, "body": parsed(answer.response)})
    except MlflowException as error:
        answers.append(
            {"status": error.get_http_status_code(), "body": json.loads(error.serialize_as_json())}
        )
print(
    json.dumps(
        {
            "columns": list(rows.columns),
            "rows": rows.to_numpy().tolist(),
            "predictions": [float(v) for v in model.predict(rows)],
            "answers": answers,
        }
    )
)
