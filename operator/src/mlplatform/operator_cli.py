"""`mlplatform operator`: run the operator against the cluster of the pod, or of $KUBECONFIG."""

from __future__ import annotations

import os

import click

from mlplatform.settings import (
    DEFAULT_GIT_IMAGE,
    DEFAULT_TRACKING_URI,
    WEBHOOK_SECRET_ENV,
    OperatorSettings,
)


@click.command("operator")
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    envvar="MLPLATFORM_NAMESPACES",
    help="Watch only this namespace (repeat for several; default: all namespaces).",
)
@click.option(
    "--tracking-uri",
    envvar="MLPLATFORM_TRACKING_URI",
    default=DEFAULT_TRACKING_URI,
    show_default=True,
    help="The MLflow tracking server as the operator reaches it.",
)
@click.option(
    "--pod-tracking-uri",
    envvar="MLPLATFORM_POD_TRACKING_URI",
    help="The tracking server as pods reach it, when that differs (default: --tracking-uri).",
)
@click.option(
    "--ui-uri", envvar="MLPLATFORM_UI_URI", help="The base of run links in status (default: --tracking-uri)."
)
@click.option(
    "--tracking-secret",
    envvar="MLPLATFORM_TRACKING_SECRET",
    help="A Secret (in each run's namespace) whose MLFLOW_TRACKING_* keys trainer pods get as environment.",
)
@click.option("--git-image", envvar="MLPLATFORM_GIT_IMAGE", default=DEFAULT_GIT_IMAGE, show_default=True)
@click.option("--listen-address", envvar="MLPLATFORM_LISTEN_ADDRESS", default="0.0.0.0", show_default=True)  # noqa: S104
@click.option("--health-port", envvar="MLPLATFORM_HEALTH_PORT", type=int, default=8080, show_default=True)
@click.option("--metrics-port", envvar="MLPLATFORM_METRICS_PORT", type=int, default=9090, show_default=True)
@click.option(
    "--webhook-url",
    envvar="MLPLATFORM_WEBHOOK_URL",
    help="Where the tracking server reaches this operator's registry-webhook receiver (path "
    "/webhooks/mlflow); unset: no webhook, ModelDeployments follow the registry by polling only. The "
    "signing secret comes from MLPLATFORM_WEBHOOK_SECRET in the environment, never from an option.",
)
@click.option("--webhook-port", envvar="MLPLATFORM_WEBHOOK_PORT", type=int, default=9443, show_default=True)
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True)
@click.option("--verbose", is_flag=True, help="Debug logging.")
def operator(
    *,
    namespaces: tuple[str, ...],
    tracking_uri: str,
    pod_tracking_uri: str | None,
    ui_uri: str | None,
    tracking_secret: str | None,
    git_image: str,
    listen_address: str,
    health_port: int,
    metrics_port: int,
    webhook_url: str | None,
    webhook_port: int,
    log_format: str,
    verbose: bool,
) -> None:
    """Run the MLPlatform operator (TrainingRun, ModelDeployment). MLflow credentials, if the server
    needs them, come from MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in
    the environment."""
    from mlplatform.controller import run  # noqa: PLC0415 - kopf loads only for this command

    if webhook_url and not os.environ.get(WEBHOOK_SECRET_ENV):
        raise click.UsageError(f"--webhook-url needs the signing secret in ${WEBHOOK_SECRET_ENV}")

    run(
        OperatorSettings(
            tracking_uri=tracking_uri,
            pod_tracking_uri=pod_tracking_uri,
            ui_uri=ui_uri,
            tracking_secret=tracking_secret,
            git_image=git_image,
            namespaces=tuple(n for ns in namespaces for n in ns.split(",") if n),
            listen_address=listen_address,
            health_port=health_port,
            metrics_port=metrics_port,
            webhook_url=webhook_url,
            webhook_port=webhook_port,
        ),
        log_format=log_format,
        verbose=verbose,
    )
