"""Runs the operator: kopf with deliberate settings, the MLflow and Kubernetes clients, metrics, health.

`mlplatform operator` calls `run()`. Every kopf setting that differs from kopf's default says why.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import kopf
from kopf._core.engines import peering
from prometheus_client import start_http_server

from mlplatform import names, webhooks
from mlplatform.handlers import modeldeployment, trainingrun  # noqa: F401 - importing registers the handlers
from mlplatform.handlers.context import OperatorContext
from mlplatform.kube import Kube, connect
from mlplatform.metrics import register_phases
from mlplatform.registry import Registry
from mlplatform.settings import WEBHOOK_SECRET_ENV, OperatorSettings
from mlplatform.tracking import Credentials, MlflowClient

logger = logging.getLogger("mlplatform.operator")
MEMORY_RETURN_SECONDS = 30.0


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    # Our own domain for kopf's bookkeeping, so `kubectl get -o yaml` reads as one product.
    settings.persistence.finalizer = names.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Watches: a server-side timeout renews every stream within 10 minutes, and a stream with no event
    # nor bookmark for 70 s is taken as silently stalled (a known failure of long watches) and reopened.
    settings.watching.server_timeout = 600
    settings.watching.client_timeout = 660
    settings.watching.connect_timeout = 10
    settings.watching.inactivity_timeout = 70
    # Only the Jobs and pods of TrainingRuns and the Deployments of ModelDeployments, filtered by the
    # apiserver: a big cluster's other pods never reach the operator's memory.
    selector = names.LABEL_TRAININGRUN
    settings.watching.label_selectors["batch", "v1", "jobs"] = selector
    settings.watching.label_selectors["v1", "pods"] = selector
    settings.watching.label_selectors["apps", "v1", "deployments"] = names.LABEL_MODELDEPLOYMENT
    # One worker per object already serialises its handlers; bound the total so a burst of thousands of
    # objects queues instead of opening thousands of concurrent API and MLflow calls.
    settings.queueing.worker_limit = 200
    # A worker waits this long for its object's next event before it ends, holding its slot and the last
    # event's whole body meanwhile. With kopf's 5 s, 200 slots passed under 40 objects/s in a burst (our
    # handlers hand the work to runners and passes and return at once); the bodies queued meanwhile made
    # the operator's peak RSS.
    settings.queueing.idle_timeout = 1.0
    # Events are the user's trail in `kubectl describe`: post them, from INFO up.
    settings.posting.enabled = True
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "mlplatform-operator"
    settings.posting.reporting_instance = os.environ.get("POD_NAME", "mlplatform-operator")
    # One operator replica is the supported layout; no peering objects to install or to clean.
    settings.peering.standalone = True
    # kopf's default retry of a failed API call, kept short: our handlers retry with their own back-off.
    settings.networking.error_backoffs = (1, 2, 4, 8)


def make_startup(operator_settings: OperatorSettings) -> Any:
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure_kopf(settings)
        mlflow = MlflowClient(operator_settings.tracking_uri, credentials=Credentials.from_env(os.environ))
        ctx = OperatorContext(operator_settings, mlflow, Registry(mlflow), Kube(connect()), settings)
        memo["context"] = ctx
        register_phases(trainingrun.KIND, ctx.phases)
        if (hooks := webhook_settings(operator_settings)) is not None:
            memo["webhooks"] = await start_webhooks(ctx, hooks)
        start_http_server(operator_settings.metrics_port, addr=operator_settings.listen_address)
        memo["memory_return"] = asyncio.create_task(return_freed_memory(), name="return freed memory")
        logger.info(
            "operator started: MLflow at %s (pods use %s), namespaces %s",
            operator_settings.tracking_uri,
            operator_settings.trainer_tracking_uri,
            ", ".join(operator_settings.namespaces) or "all",
        )

    return startup


def webhook_settings(settings: OperatorSettings) -> webhooks.WebhookSettings | None:
    if not settings.webhook_url:
        return None
    secret = os.environ[WEBHOOK_SECRET_ENV]
    return webhooks.WebhookSettings(
        settings.webhook_url, secret, settings.listen_address, settings.webhook_port
    )


async def start_webhooks(
    ctx: OperatorContext, hooks: webhooks.WebhookSettings
) -> tuple[Any, asyncio.Task[None]]:
    """Serve the receiver, and keep it registered with MLflow in the background."""

    def on_model(model: str) -> None:
        woken = ctx.wake_model(model)
        logger.info("registry webhook for model %s: %d ModelDeployment(s) re-resolve", model, woken)

    runner = await webhooks.serve(hooks, on_model)
    return runner, asyncio.create_task(
        webhooks.keep_registered(ctx.mlflow, hooks), name="webhook-registration"
    )


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, where the C library has it (not musl, not macOS)."""
    found = ctypes.util.find_library("c")
    libc = ctypes.CDLL(found) if found else None
    trim: Callable[[int], int] | None = getattr(libc, "malloc_trim", None)
    return trim


async def return_freed_memory() -> None:
    """Give the C heap's free pages back to the system now and then: after a burst (thousands of objects
    listed or created at once) glibc keeps what Python freed, and the resident size would stay at the
    burst's peak for the life of the process."""
    trim = malloc_trim()
    if trim is None:
        return
    while True:
        await asyncio.sleep(MEMORY_RETURN_SECONDS)
        trim(0)


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    ctx: OperatorContext | None = memo.get("context")
    if (memory_return := memo.get("memory_return")) is not None:
        memory_return.cancel()
    if (receiver := memo.get("webhooks")) is not None:
        runner, registration = receiver
        registration.cancel()
        await runner.cleanup()
    if ctx is not None:
        if ctx.serving is not None:
            ctx.serving.close()
        if ctx.trainingruns is not None:
            ctx.trainingruns.close()
        await ctx.mlflow.close()
        await ctx.kube.close()


def run(settings: OperatorSettings, log_format: str = "json", verbose: bool = False) -> None:
    """Run the operator until SIGTERM or SIGINT."""
    kopf.configure(
        verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL
    )
    kopf.on.startup()(make_startup(settings))
    kopf.on.cleanup()(cleanup)
    asyncio.run(
        kopf.operator(
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=f"http://{settings.listen_address}:{settings.health_port}/healthz",
            standalone=True,
            # kopf would name itself after the login user, which a container's numeric uid has not.
            identity=peering.Identity(os.environ.get("POD_NAME") or socket.gethostname()),
            memo=kopf.Memo(),
        )
    )
