"""The operator's MLflow client: the few tracking REST calls it makes, typed, retried without duplicates.

It speaks MLflow's REST API (/api/2.0/mlflow/...) with aiohttp rather than importing the `mlflow` package:
the operator needs a dozen calls, not MLflow's dependency tree. Every request and answer shape here was
checked against the MLflow 3.17.2 tracking server (tests/platform/test_tracking_client.py).
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, get_args

import aiohttp
from yarl import URL

from mlplatform.metrics import MLFLOW_CALLS

API_PREFIX = "/api/2.0/mlflow/"
TOKEN_VAR = "MLFLOW_TRACKING_TOKEN"  # noqa: S105 (a variable's name, not a token)
USERNAME_VAR = "MLFLOW_TRACKING_USERNAME"
PASSWORD_VAR = "MLFLOW_TRACKING_PASSWORD"  # noqa: S105 (a variable's name, not a password)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
JITTER = 0.25  # up to +25% on each back-off, so that operator replicas do not retry in lockstep
BATCH_SIZE = 100  # runs/log-batch takes at most 100 params (and 1000 tags) per request
SEARCH_PAGE_SIZE = 1000
MESSAGE_LIMIT = 300  # characters of a server message kept in an error

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]
Json = dict[str, Any]


class MlflowError(Exception):
    """MLflow refused a call: `status` is the HTTP status (None without one), `code` MLflow's error_code."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class MlflowUnavailable(MlflowError):  # noqa: N818 (reads as what happened: "MLflow unavailable")
    """MLflow could not be reached, or kept answering 429/5xx: worth trying again later."""


@dataclass(frozen=True, repr=False)
class Credentials:
    """MLflow's own client credentials: basic auth wins over a token, as in the `mlflow` client."""

    token: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Credentials | None:
        username, password = environ.get(USERNAME_VAR), environ.get(PASSWORD_VAR)
        if username or password:
            if not (username and password):
                raise ValueError(f"{USERNAME_VAR} and {PASSWORD_VAR} go together: set both or neither")
            return cls(username=username, password=password)
        token = environ.get(TOKEN_VAR)
        return cls(token=token) if token else None

    def authorization(self) -> str:
        """The Authorization header's value."""
        if self.username is not None and self.password is not None:
            pair = f"{self.username}:{self.password}".encode()
            return f"Basic {base64.b64encode(pair).decode()}"
        return f"Bearer {self.token}"

    def __repr__(self) -> str:
        if self.username is not None:
            return f"Credentials(username={self.username!r}, password=***)"
        return "Credentials(token=***)"


@dataclass(frozen=True)
class Run:
    run_id: str
    experiment_id: str
    status: str
    start_time: int | None  # milliseconds since the epoch
    end_time: int | None
    params: dict[str, str]
    metrics: dict[str, float]  # each metric's latest value
    tags: dict[str, str]
    artifact_uri: str


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    run_id: str
    source: str
    status: str  # PENDING_REGISTRATION, READY or FAILED_REGISTRATION
    aliases: tuple[str, ...]
    current_stage: str
    tags: dict[str, str]


class Delivery(enum.Enum):
    """How far a failed attempt got, which decides whether sending it again could do something twice."""

    NOT_SENT = "not sent"  # could not connect: the server never saw the request
    UNKNOWN = "unknown"  # timed out or dropped after sending: the server may have acted on it
    REFUSED = "refused"  # answered 429/502/503/504: refused or lost by the server or a proxy


@dataclass(frozen=True)
class Failure:
    """One attempt that failed in a way worth retrying."""

    delivery: Delivery
    reason: str
    status: int | None = None


def delivery_of(error: BaseException) -> Delivery:
    """Classify an exception of one attempt (aiohttp's ClientError or a timeout)."""
    if isinstance(error, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return Delivery.NOT_SENT
    return Delivery.UNKNOWN


def may_retry(delivery: Delivery, *, creates: bool) -> bool:
    """A call that creates something repeats only what never arrived; idempotent calls repeat anything."""
    return delivery is Delivery.NOT_SENT or not creates


def retry_delay(attempt: int, backoff: float, jitter: float | None = None) -> float:
    """Seconds before retry number `attempt` (1, 2, ...): backoff, doubled each time, plus jitter."""
    if jitter is None:
        jitter = random.random()  # noqa: S311 (spreading retries, not cryptography)
    return backoff * 2.0 ** (attempt - 1) * (1 + JITTER * jitter)


def run_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def quote_key(key: str) -> str:
    """A tag key as a search filter identifier: backticks allow dots, slashes, dashes and spaces."""
    if "`" in key:
        raise ValueError(f"a search filter cannot name the key {key!r}: it contains a backtick")
    return f"`{key}`"


def quote_value(value: str) -> str:
    """A string literal for a search filter (MLflow's filter syntax has no escape character)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"a search filter cannot compare with {value!r}: it contains both kinds of quote")


def key_values(items: Sequence[Mapping[str, Any]] | None) -> dict[str, str]:
    """MLflow's [{"key": k, "value": v}, ...] as a dict."""
    return {item["key"]: str(item.get("value", "")) for item in items or ()}


def as_key_values(mapping: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in mapping.items()]


def optional_int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def run_from_json(run: Mapping[str, Any]) -> Run:
    info, data = run["info"], run.get("data", {})
    return Run(
        run_id=info["run_id"],
        experiment_id=str(info["experiment_id"]),
        status=info["status"],
        start_time=optional_int(info.get("start_time")),
        end_time=optional_int(info.get("end_time")),
        params=key_values(data.get("params")),
        metrics={metric["key"]: float(metric["value"]) for metric in data.get("metrics", ())},
        tags=key_values(data.get("tags")),
        artifact_uri=info.get("artifact_uri", ""),
    )


def model_version_from_json(version: Mapping[str, Any]) -> ModelVersion:
    return ModelVersion(
        name=version["name"],
        version=str(version["version"]),
        run_id=version.get("run_id", ""),
        source=version.get("source", ""),
        status=version.get("status", ""),
        aliases=tuple(version.get("aliases", ())),
        current_stage=version.get("current_stage", ""),
        tags=key_values(version.get("tags")),
    )


def chunks(mapping: Mapping[str, str], size: int = BATCH_SIZE) -> Iterator[dict[str, str]]:
    items = list(mapping.items())
    for start in range(0, len(items), size):
        yield dict(items[start : start + size])


def one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MESSAGE_LIMIT else line[: MESSAGE_LIMIT - 1] + "…"


def error_from_response(call: str, status: int, text: str) -> MlflowError:
    """MLflow's {"error_code", "message"} answer as an error; 5xx means the server, not the call, failed."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        code, message = body.get("error_code"), str(body.get("message", ""))
    else:
        code, message = None, text
    kind = MlflowUnavailable if status >= 500 else MlflowError
    return kind(f"MLflow {call}: {code or f'HTTP {status}'}: {one_line(message)}", status=status, code=code)


class MlflowClient:
    """MLflow's tracking REST API for the operator: one lazily created aiohttp session, bounded retries."""

    def __init__(
        self,
        base_url: str,
        *,
        credentials: Credentials | None = None,
        timeout: float = 10,
        attempts: int = 4,
        backoff: float = 0.5,
    ) -> None:
        url = URL(base_url.rstrip("/"))
        if url.scheme not in ("http", "https"):
            raise ValueError(f"the MLflow tracking URI must be http(s)://..., not {url.scheme}://")
        self.base_url = url
        self.display_url = str(url.with_user(None))  # never a password in a message
        self.credentials = credentials
        # A connect that times out raises ConnectionTimeoutError before the total timeout: certainly unsent.
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout / 2)
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.attempts = attempts
        self.backoff = backoff
        self._http: aiohttp.ClientSession | None = None
        # Experiment name -> id: every TrainingRun of a namespace shares an experiment, and its id never
        # changes while it exists; a caller whose request fails forgets the entry (it may be deleted).
        self._experiments: dict[str, str] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            headers = {"Authorization": self.credentials.authorization()} if self.credentials else {}
            self._http = aiohttp.ClientSession(headers=headers, timeout=self.timeout)
        return self._http

    async def _send(
        self, method: str, url: URL, params: Mapping[str, str] | None, body: Json | None
    ) -> tuple[int, str]:
        async with self._session().request(method, url, params=params, json=body) as response:
            return response.status, await response.text()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Json | None = None,
        creates: bool = False,
    ) -> Json:
        """One call to /api/2.0/mlflow/<path>, retried while repeating it cannot do anything twice."""
        text = await self._request_text(method, API_PREFIX + path, params, body, creates)
        answer = json.loads(text) if text.strip() else {}
        if not isinstance(answer, dict):
            raise MlflowError(f"MLflow {method} {path}: expected a JSON object, got {one_line(text)!r}")
        return answer

    async def _request_text(
        self, method: str, path: str, params: Mapping[str, str] | None, body: Json | None, creates: bool
    ) -> str:
        call, url = f"{method} {path.removeprefix(API_PREFIX)}", self.base_url.with_path(path)
        for attempt in range(1, self.attempts + 1):
            outcome = await self._attempt(call, method, url, params, body)
            if isinstance(outcome, str):
                return outcome
            if attempt == self.attempts or not may_retry(outcome.delivery, creates=creates):
                raise self._unavailable(call, outcome, attempt)
            await asyncio.sleep(retry_delay(attempt, self.backoff))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _unavailable(self, call: str, failure: Failure, attempts: int) -> MlflowUnavailable:
        tried = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        message = f"MLflow at {self.display_url} unreachable: {call}: {failure.reason} ({tried})"
        return MlflowUnavailable(message, status=failure.status)

    async def _attempt(
        self, call: str, method: str, url: URL, params: Mapping[str, str] | None, body: Json | None
    ) -> str | Failure:
        """The answer's text, or how the attempt failed; a definite refusal raises MlflowError."""
        try:
            status, text = await self._send(method, url, params, body)
        except (aiohttp.ClientError, TimeoutError) as error:
            MLFLOW_CALLS.labels(call, "unreachable").inc()
            return Failure(delivery_of(error), str(error) or type(error).__name__)
        MLFLOW_CALLS.labels(call, str(status)).inc()
        if status in RETRY_STATUSES:
            return Failure(Delivery.REFUSED, f"HTTP {status}", status)
        if status >= 300:
            raise error_from_response(call, status, text)
        return text

    async def server_version(self) -> str:
        return (await self._request_text("GET", "/version", None, None, False)).strip()

    async def get_or_create_experiment(self, name: str) -> str:
        """The id of the active experiment `name`, created if missing (safe when two callers race);
        remembered, until `forget_experiment`."""
        if name not in self._experiments:
            self._experiments[name] = await self._get_or_create_experiment(name)
        return self._experiments[name]

    def forget_experiment(self, name: str) -> bool:
        """Look `name` up afresh next time; whether it was remembered."""
        return self._experiments.pop(name, None) is not None

    async def _get_or_create_experiment(self, name: str) -> str:
        existing = await self._experiment_by_name(name)
        if existing is None:
            try:
                created = await self.request("POST", "experiments/create", body={"name": name})
                return str(created["experiment_id"])
            except MlflowError as error:
                # Another caller won the race, or our own retried create had landed.
                if error.code != "RESOURCE_ALREADY_EXISTS":
                    raise
            existing = await self._experiment_by_name(name)
            if existing is None:
                raise MlflowError(f"MLflow experiment {name!r} exists, yet cannot be found by its name")
        if existing.get("lifecycle_stage") == "deleted":
            raise MlflowError(
                f"MLflow experiment {name!r} (id {existing['experiment_id']}) is deleted: restore it "
                "(mlflow experiments restore) or delete it for good (mlflow gc), or use another name",
                code="RESOURCE_DELETED",
            )
        return str(existing["experiment_id"])

    async def _experiment_by_name(self, name: str) -> Json | None:
        try:
            found = await self.request("GET", "experiments/get-by-name", params={"experiment_name": name})
        except MlflowError as error:
            if error.code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        experiment: Json = found["experiment"]
        return experiment

    async def find_runs_by_tag(self, experiment_id: str, key: str, value: str) -> list[Run]:
        """The experiment's active runs whose tag `key` is `value`."""
        body: Json = {
            "experiment_ids": [experiment_id],
            "filter": f"tags.{quote_key(key)} = {quote_value(value)}",
            "max_results": SEARCH_PAGE_SIZE,
        }
        runs: list[Run] = []
        while True:
            page = await self.request("POST", "runs/search", body=body)
            runs += [run_from_json(run) for run in page.get("runs", ())]
            if not page.get("next_page_token"):
                return runs
            body["page_token"] = page["next_page_token"]

    async def create_run(
        self, experiment_id: str, run_name: str, tags: Mapping[str, str], start_time_ms: int
    ) -> Run:
        """A new run. Not retried once sent: look for it by tag before creating it again."""
        body = {
            "experiment_id": experiment_id,
            "run_name": run_name,
            "start_time": start_time_ms,
            "tags": as_key_values(tags),
        }
        created = await self.request("POST", "runs/create", body=body, creates=True)
        return run_from_json(created["run"])

    async def get_run(self, run_id: str) -> Run:
        return run_from_json((await self.request("GET", "runs/get", params={"run_id": run_id}))["run"])

    async def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        """Log params; logging one again with its value is fine, with another value an MlflowError."""
        for chunk in chunks(params):
            try:
                await self.request(
                    "POST", "runs/log-batch", body={"run_id": run_id, "params": as_key_values(chunk)}
                )
            except MlflowError as error:
                if error.code == "INVALID_PARAMETER_VALUE":
                    await self._raise_changed_params(run_id, chunk, error)
                raise

    async def _raise_changed_params(self, run_id: str, wanted: Mapping[str, str], error: MlflowError) -> None:
        logged = (await self.get_run(run_id)).params
        changed = [key for key, value in wanted.items() if key in logged and logged[key] != value]
        if changed:
            described = ", ".join(f"{key}={logged[key]!r} (not {wanted[key]!r})" for key in sorted(changed))
            raise MlflowError(
                f"MLflow run {run_id} already has param(s) {described}; MLflow never changes a param",
                status=error.status,
                code=error.code,
            ) from error

    async def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        for chunk in chunks(tags):
            await self.request(
                "POST", "runs/log-batch", body={"run_id": run_id, "tags": as_key_values(chunk)}
            )

    async def terminate_run(self, run_id: str, status: RunStatus, end_time_ms: int) -> None:
        body = {"run_id": run_id, "status": status, "end_time": end_time_ms}
        await self.request("POST", "runs/update", body=body)

    async def end_run(self, run_id: str, status: RunStatus) -> Run:
        """End the run with `status` now, unless it has ended already (its trainer may have ended it);
        return the run as read before."""
        run = await self.get_run(run_id)
        if run.status not in get_args(RunStatus):
            await self.terminate_run(run_id, status, int(time.time() * 1000))
        return run
