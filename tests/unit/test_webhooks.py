"""MLflow registry webhooks: deliveries signed as MLflow signs them are taken, anything else is refused
and changes nothing; the webhook the operator registers asks for the events that move a ModelDeployment."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mlplatform import webhooks
from mlplatform.metrics import MLFLOW_CALLS
from mlplatform.tracking import MlflowClient
from mlplatform.webhooks import (
    DELIVERY_HEADER,
    EVENTS,
    MAX_AGE_SECONDS,
    MAX_BODY_BYTES,
    RECEIVER_PATH,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_NAME,
    WebhookSettings,
    model_name,
    receiver,
    signature,
    verify,
    webhook_body,
)
from webhook_signing import signed_headers

SECRET = "whsec-7f3a9c1e5b"
DELIVERY = "5b0e6a3c-0d6f-4d8e-9a51-2f7c1e8b9d40"
NOW = 1_800_000_000


def mlflow_payload(entity: str, action: str, data: dict[str, Any]) -> bytes:
    """A delivery body as MLflow builds it (mlflow/webhooks/delivery.py: json.dumps of this dict)."""
    return json.dumps(
        {"entity": entity, "action": action, "timestamp": "2026-12-01T10:00:00.000000+00:00", "data": data}
    ).encode()


VERSION_CREATED = mlflow_payload(
    "model_version",
    "created",
    {
        "name": "wine",
        "version": "4",
        "source": "models:/m-0123456789abcdef",
        "run_id": "abcd1234abcd5678",
        "tags": {"mlplatform.dev/image": "img:1"},
        "description": None,
    },
)


def mlflow_signature(secret: str, delivery_id: str, timestamp: str, payload: str) -> str:
    """MLflow's own algorithm, written out again: HMAC-SHA256 over `<id>.<timestamp>.<payload>`, base64."""
    signed = f"{delivery_id}.{timestamp}.{payload}".encode()
    return "v1," + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()


def headers_for(
    body: bytes, secret: str = SECRET, timestamp: int = NOW, delivery_id: str = DELIVERY
) -> dict[str, str]:
    return {
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: mlflow_signature(secret, delivery_id, str(timestamp), body.decode()),
    }


# --- signatures ----------------------------------------------------------------------------------------


def test_the_signature_is_mlflows() -> None:
    body = VERSION_CREATED.decode()
    assert signature(SECRET, DELIVERY, str(NOW), VERSION_CREATED) == mlflow_signature(
        SECRET, DELIVERY, str(NOW), body
    )
    assert signature(SECRET, DELIVERY, str(NOW), VERSION_CREATED).startswith("v1,")
    non_ascii = json.dumps({"data": {"name": "vin-rosé"}}, ensure_ascii=False)
    assert signature(SECRET, "d", "1", non_ascii.encode()) == mlflow_signature(SECRET, "d", "1", non_ascii)


def test_the_signature_covers_the_delivery_id_timestamp_body_and_secret() -> None:
    base = signature(SECRET, DELIVERY, str(NOW), VERSION_CREATED)
    assert signature(SECRET, "other", str(NOW), VERSION_CREATED) != base
    assert signature(SECRET, DELIVERY, str(NOW + 1), VERSION_CREATED) != base
    assert signature(SECRET, DELIVERY, str(NOW), VERSION_CREATED + b" ") != base
    assert signature("other", DELIVERY, str(NOW), VERSION_CREATED) != base


def test_a_good_delivery_verifies() -> None:
    assert verify(SECRET, headers_for(VERSION_CREATED), VERSION_CREATED, now=NOW) is None
    assert verify(SECRET, headers_for(VERSION_CREATED), VERSION_CREATED, now=NOW + MAX_AGE_SECONDS) is None


def test_a_delivery_signed_now_verifies_against_the_clock() -> None:
    assert verify(SECRET, headers_for(VERSION_CREATED, timestamp=int(time.time())), VERSION_CREATED) is None


@pytest.mark.parametrize("missing", [DELIVERY_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER])
def test_a_delivery_without_a_header_is_unsigned(missing: str) -> None:
    headers = headers_for(VERSION_CREATED)
    del headers[missing]
    assert verify(SECRET, headers, VERSION_CREATED, now=NOW) == "unsigned"
    assert verify(SECRET, {**headers, missing: ""}, VERSION_CREATED, now=NOW) == "unsigned"


def test_a_delivery_with_a_bad_signature_is_refused() -> None:
    headers = headers_for(VERSION_CREATED)
    forged = {**headers, SIGNATURE_HEADER: "v1," + base64.b64encode(b"\0" * 32).decode()}
    assert verify(SECRET, forged, VERSION_CREATED, now=NOW) == "bad signature"
    other_version = {**headers, SIGNATURE_HEADER: headers[SIGNATURE_HEADER].replace("v1,", "v2,")}
    assert verify(SECRET, other_version, VERSION_CREATED, now=NOW) == "bad signature"
    bare = {**headers, SIGNATURE_HEADER: headers[SIGNATURE_HEADER].removeprefix("v1,")}
    assert verify(SECRET, bare, VERSION_CREATED, now=NOW) == "bad signature"


def test_a_tampered_body_is_refused() -> None:
    tampered = VERSION_CREATED.replace(b'"wine"', b'"fraud"')
    assert tampered != VERSION_CREATED
    assert verify(SECRET, headers_for(VERSION_CREATED), tampered, now=NOW) == "bad signature"


def test_a_delivery_signed_with_another_secret_is_refused() -> None:
    headers = headers_for(VERSION_CREATED, secret="not-the-secret")
    assert verify(SECRET, headers, VERSION_CREATED, now=NOW) == "bad signature"


def test_a_replayed_delivery_is_refused() -> None:
    headers = headers_for(VERSION_CREATED)
    assert verify(SECRET, headers, VERSION_CREATED, now=NOW + MAX_AGE_SECONDS + 1) == "stale timestamp"
    assert verify(SECRET, headers, VERSION_CREATED, now=NOW - MAX_AGE_SECONDS - 1) == "stale timestamp"


def test_a_changed_timestamp_breaks_the_signature() -> None:
    headers = {**headers_for(VERSION_CREATED), TIMESTAMP_HEADER: str(NOW + 10)}
    assert verify(SECRET, headers, VERSION_CREATED, now=NOW) == "bad signature"


@pytest.mark.parametrize("stamp", ["yesterday", "1.8e9", "2026-12-01T10:00:00Z"])
def test_a_timestamp_that_is_no_number_is_refused(stamp: str) -> None:
    headers = {**headers_for(VERSION_CREATED), TIMESTAMP_HEADER: stamp}
    assert verify(SECRET, headers, VERSION_CREATED, now=NOW) == "bad timestamp"


# --- payloads ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        VERSION_CREATED,
        mlflow_payload(
            "model_version_alias", "created", {"name": "wine", "alias": "champion", "version": "4"}
        ),
        mlflow_payload("model_version_alias", "deleted", {"name": "wine", "alias": "champion"}),
        mlflow_payload(
            "model_version_tag", "set", {"name": "wine", "version": "4", "key": "k", "value": "v"}
        ),
    ],
)
def test_the_model_name_of_each_mlflow_payload(body: bytes) -> None:
    assert model_name(body) == "wine"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"null",
        b"[]",
        b'"wine"',
        b'{"name": "wine"}',
        b'{"data": null}',
        b'{"data": ["wine"]}',
        b'{"data": {"version": "4"}}',
        b'{"data": {"name": ""}}',
        b'{"data": {"name": 4}}',
        b'{"data": {"name": ["wine"]}}',
    ],
)
def test_junk_has_no_model_name(body: bytes) -> None:
    assert model_name(body) is None


# --- the registered webhook ----------------------------------------------------------------------------

SETTINGS = WebhookSettings(
    url="http://mlplatform-operator.mlplatform-system.svc:8443/webhooks/mlflow",
    secret=SECRET,
    listen_address="0.0.0.0",
    port=8443,
)


def test_the_webhook_asks_for_the_events_that_move_a_modeldeployment() -> None:
    body = webhook_body(SETTINGS)
    # MLflow's proto enums (mlflow/protos/webhooks.proto: WebhookEntity, WebhookAction), as the REST API
    # spells them in JSON.
    assert body["events"] == [
        {"entity": "MODEL_VERSION", "action": "CREATED"},
        {"entity": "MODEL_VERSION_ALIAS", "action": "CREATED"},
        {"entity": "MODEL_VERSION_ALIAS", "action": "DELETED"},
        {"entity": "MODEL_VERSION_TAG", "action": "SET"},
    ]
    assert len(EVENTS) == len(body["events"])
    assert (body["name"], body["url"], body["status"]) == (WEBHOOK_NAME, SETTINGS.url, "ACTIVE")


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def test_the_secret_is_only_in_the_secret_field() -> None:
    body = webhook_body(SETTINGS)
    assert body["secret"] == SECRET
    rest = {key: value for key, value in body.items() if key != "secret"}
    assert not any(SECRET in text for text in strings(rest))


# --- the receiver --------------------------------------------------------------------------------------


def post(
    body: bytes,
    headers: dict[str, str],
    on_model: Callable[[str], None],
    method: str = "POST",
    path: str = RECEIVER_PATH,
) -> tuple[int, Any]:
    """One request to the receiver app, served on a local port for the test."""

    async def scenario() -> tuple[int, Any]:
        client: TestClient[web.Request, web.Application]
        async with TestClient(TestServer(receiver(SECRET, on_model))) as client:
            response = await client.request(method, path, data=body, headers=headers)
            answer = await response.json() if response.content_type == "application/json" else None
            return response.status, answer

    return asyncio.run(scenario())


def signed_now(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", **headers_for(body, secret, timestamp=int(time.time()))}


def test_a_signed_delivery_names_its_model() -> None:
    models: list[str] = []
    status, answer = post(VERSION_CREATED, signed_now(VERSION_CREATED), models.append)
    assert (status, answer) == (200, {"model": "wine"})
    assert models == ["wine"]


def test_header_names_are_case_insensitive() -> None:
    models: list[str] = []
    headers = {name.lower(): value for name, value in signed_now(VERSION_CREATED).items()}
    assert post(VERSION_CREATED, headers, models.append)[0] == 200
    assert models == ["wine"]


def test_a_forged_delivery_is_refused_and_changes_nothing() -> None:
    models: list[str] = []
    status, answer = post(VERSION_CREATED, signed_now(VERSION_CREATED, secret="guessed"), models.append)
    assert (status, answer) == (401, {"error": "bad signature"})
    assert models == []


def test_a_tampered_delivery_is_refused() -> None:
    models: list[str] = []
    tampered = VERSION_CREATED.replace(b'"wine"', b'"fraud"')
    assert post(tampered, signed_now(VERSION_CREATED), models.append)[0] == 401
    assert models == []


def test_an_unsigned_delivery_is_refused() -> None:
    """MLflow sends a webhook without a secret unsigned: the receiver takes none of those."""
    models: list[str] = []
    headers = signed_now(VERSION_CREATED)
    del headers[SIGNATURE_HEADER]
    assert post(VERSION_CREATED, headers, models.append) == (401, {"error": "unsigned"})
    assert post(VERSION_CREATED, {"Content-Type": "application/json"}, models.append)[0] == 401
    assert models == []


def test_a_replayed_delivery_is_refused_by_the_receiver() -> None:
    models: list[str] = []
    old = headers_for(VERSION_CREATED, timestamp=int(time.time()) - MAX_AGE_SECONDS - 60)
    assert post(VERSION_CREATED, old, models.append) == (401, {"error": "stale timestamp"})
    assert models == []


def test_a_signed_delivery_without_a_model_name_is_a_bad_request() -> None:
    models: list[str] = []
    body = json.dumps({"entity": "model_version", "action": "created", "data": {}}).encode()
    status, _ = post(body, signed_now(body), models.append)
    assert status == 400
    assert models == []


def test_the_receiver_takes_only_posts_on_its_path() -> None:
    models: list[str] = []
    assert post(b"", {}, models.append, method="GET")[0] == 405
    assert post(VERSION_CREATED, signed_now(VERSION_CREATED), models.append, path="/other")[0] == 404
    assert models == []


def test_an_oversized_delivery_is_refused_unread() -> None:
    models: list[str] = []
    body = b'{"data": {"name": "wine", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}}'
    assert post(body, signed_now(body), models.append)[0] == 413
    assert models == []


def test_the_shared_test_signer_makes_deliveries_the_receiver_takes() -> None:
    """tests/webhook_signing.py signs the end-to-end tests' deliveries."""
    models: list[str] = []
    body = VERSION_CREATED.decode()
    assert post(VERSION_CREATED, signed_headers(SECRET, body), models.append)[0] == 200
    assert post(VERSION_CREATED, signed_headers("guessed", body), models.append)[0] == 401
    assert models == ["wine"]


def test_registration_keeps_trying_while_mlflow_is_out_of_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens on the discard port: each attempt really fails to connect, and the registration
    task keeps trying rather than ending (or taking the operator down with it)."""
    monkeypatch.setattr(webhooks, "RETRY_SECONDS", 0.05)
    before = MLFLOW_CALLS.labels("GET webhooks", "unreachable")._value.get()

    async def scenario() -> bool:
        client = MlflowClient("http://127.0.0.1:9", attempts=1)
        task = asyncio.create_task(webhooks.keep_registered(client, SETTINGS))
        await asyncio.sleep(0.6)
        still_trying = not task.done()
        task.cancel()
        await client.close()
        return still_trying

    assert asyncio.run(scenario())
    assert MLFLOW_CALLS.labels("GET webhooks", "unreachable")._value.get() - before >= 3
