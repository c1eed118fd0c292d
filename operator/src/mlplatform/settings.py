"""How one operator process is configured: where MLflow is, which namespaces it watches, its ports.

Each setting is a command-line option of `mlplatform operator` with an environment variable of the same
meaning (the chart sets the variables). Credentials for MLflow come only from the standard MLflow
variables (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD), which the
chart fills from a Secret: never from an option, so they never appear on a command line.
"""

from __future__ import annotations

from dataclasses import dataclass

# The tracking server's Service as the platform chart names it.
DEFAULT_TRACKING_URI = "http://mlflow.mlplatform-system.svc:5000"
DEFAULT_GIT_IMAGE = "alpine/git:2.47.2"
WEBHOOK_SECRET_ENV = "MLPLATFORM_WEBHOOK_SECRET"  # noqa: S105 - the variable's name, not a secret


@dataclass(frozen=True)
class OperatorSettings:
    tracking_uri: str = DEFAULT_TRACKING_URI  # where the operator reaches MLflow
    pod_tracking_uri: str | None = None  # where pods reach it, when that differs (a host-process operator)
    ui_uri: str | None = None  # the base of run links in status; default the operator's tracking URI
    tracking_secret: str | None = None  # a Secret in each namespace with the pods' MLflow credentials
    git_image: str = DEFAULT_GIT_IMAGE
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    listen_address: str = "0.0.0.0"  # noqa: S104 - in a pod, probes and Prometheus come from outside
    health_port: int = 8080
    metrics_port: int = 9090
    webhook_url: str | None = None  # where MLflow reaches the webhook receiver; None: polling only
    webhook_port: int = 9443

    @property
    def trainer_tracking_uri(self) -> str:
        return self.pod_tracking_uri or self.tracking_uri

    @property
    def run_link_base(self) -> str:
        return (self.ui_uri or self.tracking_uri).rstrip("/")
