"""The operator as the end-to-end tests run it: `mlplatform operator` as a host process against the
session cluster, talking to the MLflow stack at its host address and giving pods its in-cluster name."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

from kube import eventually

# Stands in for the MLflow credentials a real deployment gives the operator; the server ignores it, and
# the leak test looks for it everywhere the operator writes.
OPERATOR_TOKEN = "mlp-test-token-5a1d0c2e9b7f"
# Signs the registry webhook's deliveries (the chart takes it from a Secret); leak tests look for it too.
WEBHOOK_SECRET = "mlp-test-webhook-3e9d1f7a2c"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class OperatorProcess:
    kubeconfig: Path
    tracking_uri: str
    pod_tracking_uri: str
    log_path: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    webhooks: bool = True  # receive the registry's webhooks (else ModelDeployments only poll)
    health_port: int = 0
    metrics_port: int = 0
    webhook_port: int = 0
    active_uri: str = ""

    def start(self, tracking_uri: str | None = None) -> None:
        """Start the operator (against `tracking_uri` instead of the stack's, to make MLflow unreachable)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.health_port, self.metrics_port, self.webhook_port = free_port(), free_port(), free_port()
        self.active_uri = tracking_uri or self.tracking_uri
        env = {
            **os.environ,
            **self.extra_env,
            "KUBECONFIG": str(self.kubeconfig),
            "MLPLATFORM_TRACKING_URI": tracking_uri or self.tracking_uri,
            "MLPLATFORM_POD_TRACKING_URI": self.pod_tracking_uri,
            "MLPLATFORM_LISTEN_ADDRESS": "127.0.0.1",
            "MLPLATFORM_HEALTH_PORT": str(self.health_port),
            "MLPLATFORM_METRICS_PORT": str(self.metrics_port),
            "MLPLATFORM_WEBHOOK_PORT": str(self.webhook_port),
            "MLPLATFORM_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
        if self.webhooks:
            env["MLPLATFORM_WEBHOOK_URL"] = self.webhook_url
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlplatform.cli", "operator"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        eventually(self.healthy, timeout=60, what="the operator answers /healthz")

    @property
    def webhook_url(self) -> str:
        """The receiver as the tracking server (a process on this machine) reaches it."""
        return f"http://127.0.0.1:{self.webhook_port}/webhooks/mlflow"

    def healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the operator exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            return requests.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2).ok
        except requests.ConnectionError:
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crashed or evicted operator."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, tracking_uri: str | None = None) -> None:
        self.stop()
        self.start(tracking_uri)

    def metrics(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def wait_stopped(process: OperatorProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while process.process is not None and process.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
