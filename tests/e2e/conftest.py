"""Fixtures of the end-to-end tier: the CRDs installed and the operator running against the session
cluster, its node and its MLflow stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crds import install_crds
from mlplatform.local.stack.tracking import in_cluster_uri
from operator_process import OPERATOR_TOKEN, OperatorProcess
from stack import Stack


@pytest.fixture(scope="session")
def operator(
    mlflow_stack: Stack, kubectl_bin: Path, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator, running for the whole session; a test that stops or restarts it starts it again."""
    if not mlflow_stack.config.node:
        pytest.skip("the local node needs root")
    install_crds(kubectl_bin, kubeconfig)
    process = OperatorProcess(
        kubeconfig=kubeconfig,
        tracking_uri=mlflow_stack.tracking_uri,
        pod_tracking_uri=in_cluster_uri(mlflow_stack.config),
        log_path=tmp_path_factory.mktemp("operator") / "operator.log",
        extra_env={"MLFLOW_TRACKING_TOKEN": OPERATOR_TOKEN},
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def running_operator(operator: OperatorProcess) -> OperatorProcess:
    """The session's operator, (re)started against the real stack if an earlier test left it otherwise."""
    if operator.active_uri != operator.tracking_uri:
        operator.restart()
    elif operator.process is None or operator.process.poll() is not None:
        operator.start()
    return operator
