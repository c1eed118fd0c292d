"""The MLflow client's pure parts: credentials, URLs, filters, retry classification, error messages."""

from __future__ import annotations

import base64

import aiohttp
import pytest

from mlplatform.tracking import (
    Credentials,
    Delivery,
    MlflowClient,
    MlflowUnavailable,
    delivery_of,
    error_from_response,
    may_retry,
    quote_key,
    quote_value,
    retry_delay,
    run_from_json,
    run_url,
)


def test_credentials_from_the_standard_variables_never_show_their_secrets() -> None:
    token = Credentials.from_env({"MLFLOW_TRACKING_TOKEN": "s3cr3t-token"})
    basic = Credentials.from_env(
        {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "hunter2", "OTHER": "x"}
    )
    assert token is not None and basic is not None
    assert token.authorization() == "Bearer s3cr3t-token"
    assert basic.authorization() == "Basic " + base64.b64encode(b"admin:hunter2").decode()
    for shown in (repr(token), str(token), repr(basic), str(basic), f"{[token, basic]}"):
        assert "s3cr3t" not in shown and "hunter2" not in shown
    assert "admin" in repr(basic)
    assert Credentials.from_env({}) is None


def test_basic_auth_wins_over_a_token_and_needs_both_halves() -> None:
    both = Credentials.from_env(
        {"MLFLOW_TRACKING_TOKEN": "t", "MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p"}
    )
    assert both is not None and both.authorization().startswith("Basic ")
    with pytest.raises(ValueError, match="set both or neither") as raised:
        Credentials.from_env({"MLFLOW_TRACKING_PASSWORD": "hunter2"})
    assert "hunter2" not in str(raised.value)


def test_run_url() -> None:
    assert run_url("http://mlflow.example", "3", "abc") == "http://mlflow.example/#/experiments/3/runs/abc"
    assert run_url("http://mlflow.example/", "3", "abc") == "http://mlflow.example/#/experiments/3/runs/abc"


def test_a_create_retries_only_what_never_reached_the_server() -> None:
    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None), OSError(111, "refused")
    )
    assert delivery_of(refused) is Delivery.NOT_SENT
    assert delivery_of(aiohttp.ConnectionTimeoutError()) is Delivery.NOT_SENT
    assert delivery_of(aiohttp.SocketTimeoutError()) is Delivery.UNKNOWN
    assert delivery_of(aiohttp.ServerDisconnectedError()) is Delivery.UNKNOWN
    assert delivery_of(TimeoutError()) is Delivery.UNKNOWN
    assert may_retry(Delivery.NOT_SENT, creates=True)
    assert not may_retry(Delivery.UNKNOWN, creates=True)
    assert not may_retry(Delivery.REFUSED, creates=True)
    assert all(may_retry(delivery, creates=False) for delivery in Delivery)


def test_back_off_doubles_with_bounded_jitter() -> None:
    assert [retry_delay(n, 0.5, jitter=0) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert retry_delay(2, 0.5, jitter=1) == 1.25
    assert all(0.5 <= retry_delay(1, 0.5) <= 0.625 for _ in range(100))


def test_filter_quoting() -> None:
    assert quote_key("mlplatform.dev/uid") == "`mlplatform.dev/uid`"
    assert quote_value("abc") == "'abc'"
    assert quote_value("it's") == '"it\'s"'
    with pytest.raises(ValueError, match="backtick"):
        quote_key("a`b")
    with pytest.raises(ValueError, match="both kinds"):
        quote_value("'\"")


def test_errors_name_the_call_and_mlflows_code_on_one_line() -> None:
    error = error_from_response(
        "GET runs/get", 404, '{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run \'x\'\\nnot found"}'
    )
    assert (error.status, error.code) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert str(error) == "MLflow GET runs/get: RESOURCE_DOES_NOT_EXIST: Run 'x' not found"
    server = error_from_response("POST runs/create", 500, "<html>Internal Server Error</html>")
    assert isinstance(server, MlflowUnavailable) and server.code is None and "HTTP 500" in str(server)


def test_the_display_url_drops_credentials_and_other_schemes_are_refused() -> None:
    assert MlflowClient("http://user:pw@mlflow:5000/").display_url == "http://mlflow:5000"
    with pytest.raises(ValueError, match="http"):
        MlflowClient("databricks")


def test_a_run_from_its_json() -> None:
    run = run_from_json(
        {
            "info": {"run_id": "r", "experiment_id": "1", "status": "RUNNING", "start_time": 5},
            "data": {"metrics": [{"key": "rmse", "value": 1.5}], "params": [{"key": "a", "value": "1"}]},
        }
    )
    assert (run.start_time, run.end_time, run.metrics, run.params, run.tags) == (
        5,
        None,
        {"rmse": 1.5},
        {"a": "1"},
        {},
    )
