"""The model server of ModelDeployment pods: MLflow's scoring protocol, with less work per request.

It answers exactly as `mlflow models serve` does (/invocations, /ping, /health, /version; the same
status codes and bodies, errors included) and takes one of three paths for each request:

- `native`: a scikit-learn model whose signature is named double columns, given one of the plain JSON
  forms (`dataframe_split` without an index, `dataframe_records`, `instances` or `inputs` as records or
  columns) of finite numbers: the rows go straight into a float64 array laid out as MLflow's schema
  enforcement would lay it out, and into the estimator's own `predict`.
- `pyfunc`: any other model with such a signature and such input: a DataFrame built as MLflow's schema
  enforcement would build it, handed to the model's predict function.
- `mlflow`: everything else (CSV, parquet, params, other schemas or flavors, anything malformed or
  unusual): MLflow's own request handling, called in-process, so its answers and errors are MLflow's.

At start the fast path answers the model's input example and a few batches made from it both ways; it is
used only if every answer is byte-for-byte MLflow's. The path is logged, returned by GET /metadata and
sent with each /invocations answer in the X-MLplatform-Path header.

This file is the whole server: it runs in the image that trained the model and needs only what MLflow
itself needs (uvicorn comes with MLflow); httptools, uvloop and orjson speed it up where installed. The
operator mounts it into the pod from a ConfigMap.

    python mlplatform_serving.py --model-dir /var/lib/mlplatform/model --port 8080 [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import io
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import uvicorn
from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel
from mlflow.pyfunc import scoring_server as mlflow_scoring
from mlflow.types import DataType, Schema
from mlflow.version import VERSION as MLFLOW_VERSION

try:
    import orjson

    decode_json: Callable[[bytes], Any] = orjson.loads
except ImportError:  # the standard library's decoder: slower, same result
    decode_json = json.loads

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("mlplatform.serving")

PATH_HEADER = b"x-mlplatform-path"
MODEL_DIR_ENV = "MLPLATFORM_MODEL_DIR"
FAST_PATH_ENV = "MLPLATFORM_FAST_PATH"  # "false" serves every request through MLflow's own handling
JSON = "application/json"
# Numbers a float64 holds exactly: an integer beyond them would round differently on MLflow's int64 path.
EXACT_INT = 2**53
# A request with more rows than this predicts in a thread, so that probes are answered meanwhile.
INLINE_ROWS = 256
WORKER_START_SECONDS = 300  # the longest a worker may take to load the model (the pod's probes decide)


class NotFastError(Exception):
    """The request is not one the fast path takes: MLflow's own handling answers it."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    path: str


# ---- reading requests the fast path takes ---------------------------------------------------------


def number(value: Any) -> float:
    """`value` as the float64 MLflow's schema enforcement makes of it, or NotFastError."""
    kind = type(value)
    if kind is float and math.isfinite(value):
        return float(value)
    if kind is int and -EXACT_INT <= value <= EXACT_INT:
        return float(value)
    raise NotFastError("not a finite number")  # bool, None, strings, NaN, big integers: MLflow decides


def rows_of_split(frame: Any, columns: Sequence[str]) -> list[list[float]]:
    if type(frame) is not dict or frame.keys() != {"columns", "data"} or frame["columns"] != columns:
        raise NotFastError("dataframe_split with an index or other columns")
    data = frame["data"]
    if type(data) is not list or not data:
        raise NotFastError("no rows")
    width = len(columns)
    rows = []
    for row in data:
        if type(row) is not list or len(row) != width:
            raise NotFastError("a row of another width")
        rows.append([number(v) for v in row])
    return rows


def rows_of_records(records: Any, columns: Sequence[str]) -> list[list[float]]:
    if type(records) is not list or not records:
        raise NotFastError("no records")
    names = set(columns)
    rows = []
    for record in records:
        if type(record) is not dict or record.keys() != names:
            raise NotFastError("a record with other fields")
        rows.append([number(record[c]) for c in columns])
    return rows


def rows_of_columns(table: Any, columns: Sequence[str]) -> list[list[float]]:
    if type(table) is not dict or table.keys() != set(columns):
        raise NotFastError("columns other than the signature's")
    values = [table[c] for c in columns]
    if any(type(v) is not list for v in values) or len({len(v) for v in values}) != 1 or not values[0]:
        raise NotFastError("columns of different lengths")
    return [[number(v) for v in row] for row in zip(*values, strict=True)]


def rows_of(request: Any, columns: Sequence[str]) -> list[list[float]]:
    """The rows of a JSON request in one of the plain forms, in signature column order, or NotFastError."""
    if type(request) is not dict or len(request) != 1:
        raise NotFastError("not exactly one input field")  # params, extra keys, LLM-style payloads
    ((form, value),) = request.items()
    if form == "dataframe_split":
        return rows_of_split(value, columns)
    if form == "dataframe_records":
        return rows_of_records(value, columns)
    if form in ("instances", "inputs"):
        return rows_of_columns(value, columns) if type(value) is dict else rows_of_records(value, columns)
    raise NotFastError("another input field")


def is_plain_json(content_type: str | None) -> bool:
    """application/json, perhaps with charset=utf-8, exactly as MLflow's server parses the header."""
    if content_type is None:
        return False
    mime, *parameters = (part.strip() for part in content_type.split(";"))
    if mime != JSON or len(parameters) > 1:
        return False
    key, _, value = parameters[0].partition("=") if parameters else ("charset", "=", "utf-8")
    return key == "charset" and value.lower() == "utf-8"


# ---- predicting ----------------------------------------------------------------------------------


def double_columns(schema: Schema | None) -> list[str] | None:
    """The column names of a signature of required, named float64 columns; None for any other (other
    types are converted by MLflow's schema enforcement in ways the fast path does not repeat)."""
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return None
    if not all(getattr(c, "required", True) and c.type == DataType.double for c in schema.inputs):
        return None
    return [str(c.name) for c in schema.inputs]


@dataclass(frozen=True)
class FastPath:
    """How the fast path predicts for one model: `name` is `native` or `pyfunc`."""

    name: str
    columns: list[str]
    predict_rows: Callable[[list[list[float]]], Any]


def sklearn_estimator(model: PyFuncModel) -> Any | None:
    """The scikit-learn estimator behind a pyfunc model that predicts with `predict`, else None."""
    flavor = model.metadata.flavors.get("python_function", {})
    if flavor.get("loader_module") != "mlflow.sklearn" or flavor.get("predict_fn", "predict") != "predict":
        return None
    return getattr(model._model_impl, "sklearn_model", None)


def plain_pyfunc(model: PyFuncModel) -> bool:
    """Whether PyFuncModel.predict does nothing but enforce the schema before the predict function (no
    type hints, no example-shaped conversion, no dependency schemas)."""
    meta = model.metadata
    return not (
        meta._is_signature_from_type_hint()
        or meta._is_type_hint_from_example()
        or (meta.metadata or {}).get("dependencies_schemas")
    )


def fast_path(model: PyFuncModel) -> tuple[FastPath | None, str]:
    """The fast path this model can take, or None with the reason."""
    columns = double_columns(model.metadata.get_input_schema())
    if columns is None:
        return None, "its signature is not named double columns"
    if model.metadata.get_params_schema() is not None:
        return None, "it takes params"
    if not plain_pyfunc(model):
        return None, "its predict is typed or example-shaped"
    estimator = sklearn_estimator(model)
    if estimator is not None:
        return FastPath("native", columns, native_predictor(estimator)), "scikit-learn on double columns"
    return FastPath("pyfunc", columns, pyfunc_predictor(model, columns)), "named double columns"


def native_predictor(estimator: Any) -> Callable[[list[list[float]]], Any]:
    # Fitted on a DataFrame, the estimator warns of an array without feature names; the columns are the
    # signature's, in its order, so the warning says nothing here.
    warnings.filterwarnings("ignore", message="X does not have valid feature names")

    def predict(rows: list[list[float]]) -> Any:
        # Column-major, as a DataFrame's float64 block hands it to scikit-learn: the same layout gives the
        # same floating-point sums.
        return estimator.predict(np.array(rows, dtype=np.float64, order="F"))

    return predict


def pyfunc_predictor(model: PyFuncModel, columns: list[str]) -> Callable[[list[list[float]]], Any]:
    predict_fn = model._predict_fn
    takes_params = "params" in inspect.signature(predict_fn).parameters

    def predict(rows: list[list[float]]) -> Any:
        frame = pd.DataFrame(np.array(rows, dtype=np.float64, order="F"), columns=columns)
        return predict_fn(frame, params=None) if takes_params else predict_fn(frame)

    return predict


def predictions_json(predictions: Any) -> bytes:
    out = io.StringIO()
    mlflow_scoring.predictions_to_json(predictions, out)
    return out.getvalue().encode()


# ---- answering -----------------------------------------------------------------------------------


class Scorer:
    """Answers /invocations for one loaded model, by the fast path where it can."""

    def __init__(self, model: PyFuncModel, fast: FastPath | None, reason: str) -> None:
        self.model = model
        self.fast = fast
        self.reason = reason  # why this path
        self.input_schema = model.metadata.get_input_schema()
        self.timeout = float(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get())

    @property
    def path(self) -> str:
        return self.fast.name if self.fast else "mlflow"

    def fast_rows(self, body: bytes, content_type: str | None) -> list[list[float]]:
        if self.fast is None or not is_plain_json(content_type):
            raise NotFastError("no fast path")
        try:
            request = decode_json(body)
        except ValueError:  # MLflow's decoder words the error
            raise NotFastError("not JSON the fast decoder reads") from None
        return rows_of(request, self.fast.columns)

    def fast_answer(self, rows: list[list[float]]) -> Answer:
        assert self.fast is not None
        return Answer(200, predictions_json(self.fast.predict_rows(rows)), JSON, self.fast.name)

    def mlflow_answer(self, body: bytes, content_type: str | None) -> Answer:
        """MLflow's own handling, and its own error bodies."""
        try:
            result = mlflow_scoring.invocations(body, content_type, self.model, self.input_schema)
        except MlflowException as error:
            return Answer(error.get_http_status_code(), error.serialize_as_json().encode(), JSON, "mlflow")
        except Exception:  # as MLflow's server (Starlette) answers an error it did not expect
            log.exception("error while handling a request")
            return Answer(500, b"Internal Server Error", "text/plain", "mlflow")
        return Answer(result.status, result.response.encode(), result.mimetype, "mlflow")

    async def answer(self, body: bytes, content_type: str | None) -> Answer:
        try:
            rows = self.fast_rows(body, content_type)
        except NotFastError:
            return await self.in_thread(self.mlflow_answer, body, content_type)
        try:
            if len(rows) <= INLINE_ROWS:  # a few rows predict faster than a thread starts
                return self.fast_answer(rows)
            return await self.in_thread(self.fast_answer, rows)
        except Exception:
            return await self.in_thread(self.mlflow_answer, body, content_type)

    async def in_thread(self, work: Callable[..., Answer], *args: Any) -> Answer:
        """As MLflow's server: the work in a thread, with its request timeout."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(work, *args), timeout=self.timeout)
        except TimeoutError:
            return Answer(504, b"Request processing time exceeded limit", JSON, "mlflow")


def self_check(scorer: Scorer, examples: Iterable[bytes]) -> str | None:
    """Why the fast path must not serve this model (an answer differing from MLflow's), or None."""
    for body in examples:
        try:
            fast = scorer.fast_answer(scorer.fast_rows(body, JSON))
        except Exception as error:
            return f"the fast path failed on a check request: {error!r}"
        slow = scorer.mlflow_answer(body, JSON)
        if (fast.status, fast.body) != (slow.status, slow.body):
            return f"the fast path answered {fast.body[:200]!r} where MLflow answers {slow.body[:200]!r}"
    return None


def check_requests(model: PyFuncModel, columns: list[str]) -> list[bytes]:
    """Requests to compare both paths on: the model's input example as rows, records and columns, and
    batches of its rows scaled, in the dataframe_split form."""
    example = model.input_example
    if isinstance(example, pd.DataFrame) and list(example.columns) == columns and len(example):
        rows = example.to_numpy(dtype=np.float64).tolist()
    else:
        rows = [[float(i + 1) / 7 for i in range(len(columns))]]
    batches = [rows, [[v * 1.37 for v in row] for row in rows] * 3, [[-v for v in rows[0]]]]
    requests: list[dict[str, Any]] = [{"dataframe_split": {"columns": columns, "data": b}} for b in batches]
    requests.append({"dataframe_records": [dict(zip(columns, row, strict=True)) for row in rows]})
    requests.append({"inputs": {c: [row[i] for row in rows] for i, c in enumerate(columns)}})
    return [json.dumps(r).encode() for r in requests]


def load(model_dir: str, allow_fast: bool = True) -> Scorer:
    model = mlflow_scoring.load_model_with_mlflow_config(model_dir)
    fast, reason = fast_path(model) if allow_fast else (None, f"{FAST_PATH_ENV} is false")
    scorer = Scorer(model, fast, reason)
    if fast is not None and (refused := self_check(scorer, check_requests(model, fast.columns))):
        scorer = Scorer(model, None, refused)
    log.info("serving %s on the %s path (%s)", model_dir, scorer.path, scorer.reason)
    return scorer


# ---- HTTP (a bare ASGI application: routing for five paths needs no framework) -----------------------


def metadata(scorer: Scorer) -> dict[str, Any]:
    return {
        "server": "mlplatform",
        "mlflowVersion": MLFLOW_VERSION,
        "path": scorer.path,
        "reason": scorer.reason,
        "flavors": sorted(scorer.model.metadata.flavors),
        "python": sys.version.split()[0],
        "http": http_implementation(),
        "json": "orjson" if decode_json is not json.loads else "json",
    }


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def respond(
    send: Send, status: int, body: bytes, content_type: str, *extra: tuple[bytes, bytes]
) -> None:
    if content_type.startswith("text/"):  # as Starlette's Response words it
        content_type += "; charset=utf-8"
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", content_type.encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def content_type_of(scope: Scope) -> str | None:
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"), None)


def create_app(scorer: Scorer) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    version = MLFLOW_VERSION.encode()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan: nothing to start or stop
        path, method = scope["path"], scope["method"]
        if path == "/invocations" and method == "POST":
            answer = await scorer.answer(await read_body(receive), content_type_of(scope))
            path_header = (PATH_HEADER, answer.path.encode())
            await respond(send, answer.status, answer.body, answer.content_type, path_header)
        elif path in ("/ping", "/health", "/version", "/metadata") and method == "GET":
            body = {"/version": version, "/metadata": json.dumps(metadata(scorer)).encode()}.get(path, b"\n")
            await respond(send, 200, body, JSON)
        elif path in ("/invocations", "/ping", "/health", "/version", "/metadata"):
            allow = b"POST" if path == "/invocations" else b"GET"
            await respond(send, 405, b'{"detail":"Method Not Allowed"}', JSON, (b"allow", allow))
        else:
            await respond(send, 404, b'{"detail":"Not Found"}', JSON)

    return app


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def http_implementation() -> str:
    return "httptools" if installed("httptools") else "h11"


def app_from_environment() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The application of one worker process (uvicorn's factory: each worker loads the model)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # As MLflow's server: models may behave differently when told they serve.
    os.environ["_MLFLOW_IS_IN_SERVING_ENVIRONMENT"] = "true"
    scorer = load(os.environ[MODEL_DIR_ENV], os.environ.get(FAST_PATH_ENV, "true").lower() != "false")
    return create_app(scorer)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a server in a pod
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    os.environ[MODEL_DIR_ENV] = args.model_dir
    options: dict[str, Any] = {}
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        # With several workers, uvicorn restarts one that does not answer its supervisor within this;
        # each loads the model first, which takes longer than uvicorn's 5 s on a busy node.
        options["timeout_worker_healthcheck"] = WORKER_START_SECONDS
    uvicorn.run(
        f"{Path(__file__).stem}:app_from_environment",  # each worker imports this file by its name
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        http=http_implementation(),
        loop="uvloop" if installed("uvloop") else "asyncio",
        lifespan="off",
        access_log=False,
        # Kubernetes has stopped sending traffic by now (preStop); the held requests finish first.
        timeout_graceful_shutdown=20,
        **options,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
