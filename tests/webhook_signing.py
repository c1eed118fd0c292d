"""Signs a registry webhook delivery as MLflow does (tests/unit/test_webhooks.py checks it against the
receiver; the end-to-end tests send genuine and forged deliveries with it)."""

from __future__ import annotations

import time
import uuid

from mlplatform.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature


def signed_headers(secret: str, body: str) -> dict[str, str]:
    delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
    return {
        "Content-Type": "application/json",
        DELIVERY_HEADER: delivery,
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: signature(secret, delivery, stamp, body.encode()),
    }
