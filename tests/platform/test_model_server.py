"""The platform's model server against `mlflow models serve`, differentially: the same models, in the
same image environment, sent the same corpus of valid and invalid requests, must answer with the same
status, content type and body, byte for byte. Each server runs as the serving container runs it.

The corpus covers every input MLflow takes (dataframe_split, dataframe_records, instances, inputs,
params, CSV, parquet) and the ways requests go wrong (malformed JSON, wrong fields, wrong types, schema
violations, content types, charsets). The fast path must really be taken where it applies: the path
header of each answer is checked too, so a server that sent everything to MLflow's handling would fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from mlplatform import serving
from mlplatform.versions import MLFLOW_VERSION
from operator_process import free_port

if TYPE_CHECKING:  # the fixtures' types, from tests/platform/conftest.py
    from conftest import Image

pytestmark = pytest.mark.platform
SCRIPTS = Path(__file__).parent / "scripts"
SERVER_SOURCE = Path(serving.__file__).parent / "server.py"
JSON = "application/json"
# The models of scripts/serving_models.py: the path the platform's server takes for plain JSON input.
MODELS = {"regressor": "native", "classifier": "native", "pyfunc": "pyfunc", "unsigned": "mlflow"}


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    content_type: str | None = JSON
    fast: bool = False  # plain JSON of finite numbers: the fast path takes it (if the model has one)


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def corpus(columns: list[str], rows: list[list[float]]) -> list[Case]:
    """Requests for a model whose signature (if any) is `columns`, `rows` being valid rows for it."""
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    table = {c: [row[i] for row in rows] for i, c in enumerate(columns)}
    many = [[v * (1 + k / 10) for v in rows[k % len(rows)]] for k in range(300)]
    first, width = rows[0], len(columns)

    def split(data: Any, cols: Any = columns, **extra: Any) -> bytes:
        return as_json({"dataframe_split": {"columns": cols, "data": data, **extra}})

    def with_first(value: Any) -> list[list[Any]]:
        return [[value, *first[1:]]]

    csv = ",".join(columns) + "\n" + "\n".join(",".join(repr(v) for v in row) for row in rows) + "\n"
    valid = [
        Case("split, one row", split([first]), fast=True),
        Case("split, the example rows", split(rows), fast=True),
        Case("split, 300 rows", split(many), fast=True),
        Case("split, integers", split([[int(v * 10) for v in first]]), fast=True),
        Case("split, integers and floats", split(with_first(3)), fast=True),
        Case(
            "split, negative zero and extremes", split([[-0.0, *[1e-300, 1e300] * width][:width]]), fast=True
        ),
        Case("records", as_json({"dataframe_records": records}), fast=True),
        Case(
            "records, fields in another order",
            as_json({"dataframe_records": [dict(reversed(r.items())) for r in records]}),
            fast=True,
        ),
        Case("instances as records", as_json({"instances": records}), fast=True),
        Case("inputs as records", as_json({"inputs": records}), fast=True),
        Case("inputs as columns", as_json({"inputs": table}), fast=True),
        Case("instances as columns", as_json({"instances": table}), fast=True),
        Case("charset utf-8", split(rows), f"{JSON}; charset=utf-8", fast=True),
        Case("charset UTF-8, spaced", split(rows), f"{JSON};  charset=UTF-8", fast=True),
        Case("split with an index", split(rows, index=list(range(len(rows))))),
        Case("params", as_json({"dataframe_split": {"columns": columns, "data": rows}, "params": {"k": 1}})),
        Case("an extra top-level field", as_json({"dataframe_records": records, "extra": 1})),
        Case("CSV", csv.encode(), "text/csv"),
        Case(
            "CSV, columns reversed",
            (",".join(reversed(columns)) + "\n" + ",".join(repr(v) for v in reversed(first)) + "\n").encode(),
            "text/csv",
        ),
        Case("a big integer", split(with_first(2**60))),
        Case("a bool", split(with_first(True))),
        Case("a numeric string", split(with_first("1.5"))),
    ]
    invalid = [
        Case("malformed JSON", b'{"dataframe_split": '),
        Case("a JSON list", b"[1, 2]"),
        Case("a JSON string", b'"rows"'),
        Case("an empty body", b""),
        Case("no input field", as_json({"data": rows})),
        Case("two input fields", as_json({"dataframe_records": records, "inputs": table})),
        Case("a column missing", split([row[1:] for row in rows], columns[1:])),
        Case("an extra column", split([[*row, 1.0] for row in rows], [*columns, "extra"])),
        Case("a short row", split([first[:-1]])),
        Case("a word", split(with_first("word"))),
        Case("a null", split(with_first(None))),
        Case("NaN", split([first]).replace(repr(first[0]).encode(), b"NaN", 1)),
        Case("Infinity", split([first]).replace(repr(first[0]).encode(), b"-Infinity", 1)),
        Case("a nested list", split(with_first([1.0, 2.0]))),
        Case(
            "a record missing a field", as_json({"dataframe_records": [dict(list(records[0].items())[1:])]})
        ),
        Case("records that are lists", as_json({"dataframe_records": rows})),
        Case("no rows", split([])),
        Case("no records", as_json({"dataframe_records": []})),
        Case("columns of unequal length", as_json({"inputs": {**table, columns[0]: []}})),
        Case("columns as a string", split(rows, ",".join(columns))),
        Case("text/plain", split(rows), "text/plain"),
        Case("no content type", split(rows), None),
        Case("charset latin-1", split(rows), f"{JSON}; charset=latin-1"),
        Case("a capitalised content type", split(rows), "Application/JSON"),
        Case("a spaced charset parameter", split(rows), f"{JSON}; charset = utf-8"),
        Case("an empty content type parameter", split(rows), f"{JSON};"),
        Case("an unknown content type parameter", split(rows), f"{JSON}; format=pandas-split"),
        Case("parquet that is not", b"not parquet", "application/vnd.apache.parquet"),
        Case("bytes that are not UTF-8", b'{"inputs": "\xff\xfe"}'),
        Case("bad CSV", b'a,b\n1,"2\n', "text/csv"),
    ]
    return valid + invalid


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str | None
    body: bytes
    path: str | None

    @classmethod
    def of(cls, answer: requests.Response) -> Reply:
        headers = answer.headers
        return cls(
            answer.status_code, headers.get("content-type"), answer.content, headers.get("x-mlplatform-path")
        )


def post(url: str, case: Case) -> Reply:
    headers = {} if case.content_type is None else {"Content-Type": case.content_type}
    return Reply.of(requests.post(f"{url}/invocations", data=case.body, headers=headers, timeout=60))


@dataclass(frozen=True)
class Servers:
    """One model served both ways."""

    model: Path
    script: Path  # the platform's server, as the pod mounts it
    ours: str
    mlflow: str
    columns: list[str]
    rows: list[list[float]]


def start(command: list[str], image: Image, stopper: list[Any], env: Mapping[str, str] | None = None) -> None:
    # MLflow's messages print a set of the input fields, in an order that changes with each process's
    # string hash seed: one seed for both servers, so that any byte that differs is a real difference.
    proc = subprocess.Popen(
        command,
        env=image.environ({"PYTHONHASHSEED": "0", **(env or {})}),
        cwd=image.environment.context,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    stopper.append(proc)


def wait_ready(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} was not ready within {timeout}s")


def example_rows(image: Image, model: Path) -> tuple[list[str], list[list[float]]]:
    """The model's input columns and two rows of it (the columns of the unsigned model: the regressor's)."""
    signed = model.parent / "regressor" if model.name == "unsigned" else model
    script = (
        "import json, sys, mlflow.pyfunc\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "print(json.dumps(m.metadata.get_input_schema().input_names()))\n"
    )
    columns = json.loads(image.python("-c", script, str(signed)).strip().splitlines()[-1])
    rows = [[round(0.01 * (i + 1) * (1 if k else -1), 4) for i in range(len(columns))] for k in range(2)]
    return columns, rows


@pytest.fixture(scope="module")
def stopper_module() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:  # each in its own session: `mlflow models serve` runs uvicorn as a child
        os.killpg(proc.pid, 15)
    for proc in started:
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def served(
    images: dict[str, Image], tmp_path_factory: pytest.TempPathFactory, stopper_module: list[Any]
) -> dict[str, Servers]:
    """Every model of scripts/serving_models.py, served by the platform's server and by MLflow's."""
    image = images["trainer-sklearn"]
    folder = tmp_path_factory.mktemp("serving")
    image.python(str(SCRIPTS / "serving_models.py"), str(folder / "models"))
    script = folder / "server" / serving.SCRIPT_NAME  # as the pod mounts it
    script.parent.mkdir()
    shutil.copy(SERVER_SOURCE, script)
    python = str(image.venv / "bin/python")
    found: dict[str, Servers] = {}
    for name in MODELS:
        model = folder / "models" / name
        ours, theirs = free_port(), free_port()
        start([python, str(script), "--model-dir", str(model), "--host", "127.0.0.1", "--port", str(ours)],
              image, stopper_module)  # fmt: skip
        start(image.command(["mlflow", "models", "serve", "-m", str(model), "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(theirs)]), image, stopper_module)  # fmt: skip
        columns, rows = example_rows(image, model)
        urls = f"http://127.0.0.1:{ours}", f"http://127.0.0.1:{theirs}"
        found[name] = Servers(model, script, *urls, columns, rows)
    for servers in found.values():
        wait_ready(servers.ours)
        wait_ready(servers.mlflow)
    return found


def differences(servers: Servers, cases: list[Case]) -> Iterator[str]:
    with ThreadPoolExecutor(4) as pool:
        ours = pool.map(lambda c: post(servers.ours, c), cases)
        theirs = pool.map(lambda c: post(servers.mlflow, c), cases)
        for case, mine, reference in zip(cases, ours, theirs, strict=True):
            if (mine.status, mine.content_type, mine.body) != (
                reference.status,
                reference.content_type,
                reference.body,
            ):
                yield f"{case.name}: ours {mine} != mlflow's {reference}"


@pytest.mark.parametrize("name", MODELS)
def test_every_answer_is_mlflows_byte_for_byte(served: dict[str, Servers], name: str) -> None:
    servers = served[name]
    cases = corpus(servers.columns, servers.rows)
    assert len(cases) >= 40
    found = list(differences(servers, cases))
    assert not found, "\n".join(found)


@pytest.mark.parametrize("name", MODELS)
def test_the_fast_path_serves_plain_input_and_mlflow_the_rest(served: dict[str, Servers], name: str) -> None:
    servers, fast_path = served[name], MODELS[name]
    cases = corpus(servers.columns, servers.rows)
    paths = {case.name: post(servers.ours, case).path for case in cases}
    expected = {case.name: fast_path if case.fast else "mlflow" for case in cases}
    assert paths == expected
    metadata = requests.get(f"{servers.ours}/metadata", timeout=10).json()
    assert metadata["path"] == fast_path and metadata["mlflowVersion"] == MLFLOW_VERSION
    assert metadata["http"] == "httptools" and metadata["json"] == "orjson", "the image's fast libraries"


def test_the_other_endpoints_answer_as_mlflows(served: dict[str, Servers]) -> None:
    servers = served["regressor"]
    for method, path in [("GET", "/ping"), ("GET", "/health"), ("GET", "/version"), ("HEAD", "/ping"),
                         ("POST", "/ping"), ("GET", "/invocations"), ("GET", "/nowhere")]:  # fmt: skip
        mine = requests.request(method, f"{servers.ours}{path}", timeout=10)
        reference = requests.request(method, f"{servers.mlflow}{path}", timeout=10)
        assert (mine.status_code, mine.content) == (reference.status_code, reference.content), (method, path)
        assert mine.headers.get("content-type") == reference.headers.get("content-type"), (method, path)
    assert requests.get(f"{servers.ours}/version", timeout=10).text == MLFLOW_VERSION


def test_with_the_fast_path_switched_off_mlflows_handling_serves_everything(
    images: dict[str, Image], served: dict[str, Servers], stopper: list[Any]
) -> None:
    image, servers = images["trainer-sklearn"], served["regressor"]
    port = free_port()
    command = [str(image.venv / "bin/python"), str(servers.script), "--model-dir", str(servers.model)]
    start(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        image,
        stopper,
        {"MLPLATFORM_FAST_PATH": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    case = corpus(servers.columns, servers.rows)[0]
    assert post(url, case).path == "mlflow"
    assert post(url, case).body == post(servers.mlflow, case).body
    assert requests.get(f"{url}/metadata", timeout=10).json()["reason"] == "MLPLATFORM_FAST_PATH is false"
