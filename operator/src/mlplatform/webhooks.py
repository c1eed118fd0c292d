"""MLflow model-registry webhooks: the operator registers one with the tracking server and receives its
deliveries, each only a hint to re-resolve the ModelDeployments of that model (the registry stays the
truth, and a lost delivery is caught by the next poll).

MLflow signs a delivery with HMAC-SHA256 over `<delivery id>.<timestamp>.<body>` and sends it as
`X-MLflow-Signature: v1,<base64>`; a delivery whose signature does not verify, or whose timestamp is
too old to be fresh, is refused and changes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from mlplatform.metrics import WEBHOOK_DELIVERIES
from mlplatform.tracking import MlflowClient, MlflowError

logger = logging.getLogger("mlplatform.webhooks")

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
MAX_AGE_SECONDS = 300  # a replayed delivery older than this is refused
MAX_BODY_BYTES = 1 << 20
RETRY_SECONDS = 30  # between registration attempts while MLflow is out of reach
RECHECK_SECONDS = 300  # the registration is made again this often: a deleted or changed webhook returns
RECEIVER_PATH = "/webhooks/mlflow"
WEBHOOK_NAME = "mlplatform-operator"
# What moves a ModelDeployment: a new version (stage transitions are tag-like updates MLflow does not
# deliver, so stages are followed by polling), an alias set or removed, a version's tags.
EVENTS = (
    ("MODEL_VERSION", "CREATED"),
    ("MODEL_VERSION_ALIAS", "CREATED"),
    ("MODEL_VERSION_ALIAS", "DELETED"),
    ("MODEL_VERSION_TAG", "SET"),
)


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> str | None:
    """None when the delivery is authentic and fresh, else why it is not."""
    delivery_id = headers.get(DELIVERY_HEADER, "")
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    if not (delivery_id and timestamp and given):
        return "unsigned"
    if not (delivery_id + timestamp + given).isascii():
        return "bad signature"  # MLflow's headers are ASCII; compare_digest refuses anything else
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except ValueError:
        return "bad timestamp"
    if abs(age) > MAX_AGE_SECONDS:
        return "stale timestamp"
    if not hmac.compare_digest(given, signature(secret, delivery_id, timestamp, body)):
        return "bad signature"
    return None


def model_name(body: bytes) -> str | None:
    """The registered model a delivery is about."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    data = payload.get("data") if isinstance(payload, dict) else None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


@dataclass(frozen=True)
class WebhookSettings:
    url: str  # where the tracking server reaches the receiver
    secret: str
    listen_address: str
    port: int


def receiver(secret: str, on_model: Callable[[str], None]) -> web.Application:
    """The web application that takes deliveries and calls `on_model` with each one's model name."""

    async def deliver(request: web.Request) -> web.Response:
        body = await request.read()
        if (problem := verify(secret, request.headers, body)) is not None:
            WEBHOOK_DELIVERIES.labels("refused").inc()
            logger.warning("refused a webhook delivery from %s: %s", request.remote, problem)
            return web.json_response({"error": problem}, status=401)
        if (name := model_name(body)) is None:
            WEBHOOK_DELIVERIES.labels("ignored").inc()
            return web.json_response({"error": "no model name in the payload"}, status=400)
        WEBHOOK_DELIVERIES.labels("accepted").inc()
        on_model(name)
        return web.json_response({"model": name})

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post(RECEIVER_PATH, deliver)
    return app


async def serve(settings: WebhookSettings, on_model: Callable[[str], None]) -> web.AppRunner:
    runner = web.AppRunner(receiver(settings.secret, on_model), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.listen_address, settings.port).start()
    return runner


def webhook_body(settings: WebhookSettings) -> dict[str, Any]:
    return {
        "name": WEBHOOK_NAME,
        "url": settings.url,
        "events": [{"entity": entity, "action": action} for entity, action in EVENTS],
        "description": "ModelDeployments re-resolve their model when the registry changes",
        "secret": settings.secret,
        "status": "ACTIVE",
    }


async def ensure_registered(client: MlflowClient, settings: WebhookSettings) -> str:
    """The id of this operator's webhook, created or brought up to date (URL, events, secret: a secret
    cannot be read back, so it is always written)."""
    body = webhook_body(settings)
    for existing in await list_webhooks(client):
        if existing.get("name") == WEBHOOK_NAME:
            webhook_id = str(existing["webhook_id"])
            await client.request("PATCH", f"webhooks/{webhook_id}", body=body)
            return webhook_id
    created = await client.request("POST", "webhooks", body=body, creates=True)
    return str(created["webhook"]["webhook_id"])


async def keep_registered(client: MlflowClient, settings: WebhookSettings) -> None:
    """Register the webhook and keep it registered, for as long as the operator runs: retried while MLflow
    is out of reach (ModelDeployments poll meanwhile), and made again every few minutes."""
    registered = None
    while True:
        try:
            webhook_id = await ensure_registered(client, settings)
        except MlflowError as exc:
            logger.warning("cannot register the registry webhook yet (polling meanwhile): %s", exc)
            await asyncio.sleep(RETRY_SECONDS)
            continue
        if webhook_id != registered:
            logger.info("registry webhook %s delivers to %s", webhook_id, settings.url)
            registered = webhook_id
        await asyncio.sleep(RECHECK_SECONDS)


async def list_webhooks(client: MlflowClient) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    params = {"max_results": "100"}
    while True:
        page = await client.request("GET", "webhooks", params=params)
        found += page.get("webhooks", [])
        if not (token := page.get("next_page_token")):
            return found
        params = {**params, "page_token": token}
