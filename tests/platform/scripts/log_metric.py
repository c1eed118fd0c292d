"""Log one metric to a run with MLflow's own client and its retries; print how long it took (JSON)."""

import json
import sys
import time

from mlflow import MlflowClient

run_id, key, value = sys.argv[1:4]
started = time.monotonic()
MlflowClient().log_metric(run_id, key, float(value))
print(json.dumps({"seconds": time.monotonic() - started}))
