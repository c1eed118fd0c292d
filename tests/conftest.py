"""Fixtures shared by every test tier.

The session's local cluster comes from `mlplatform local`:
- MLPLATFORM_TEST_CLUSTER=reuse  test against the running cluster in $MLPLATFORM_STATE_DIR (or the default
                                 state directory) and leave it running;
- MLPLATFORM_TEST_CLUSTER=external test the control-plane tier against the cluster of $KUBECONFIG (kind, a
                                 real cluster) with the kubectl on PATH; tests that need the local node or
                                 the local MLflow stack are skipped;
- otherwise (the default)        bring a cluster up in a temporary state directory and take it down after.
MLPLATFORM_TEST_PORT_OFFSET moves the ports of an own cluster; MLPLATFORM_TEST_NO_NODE=1 leaves the node out.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from kube import fresh_namespace
from mlplatform.local import cluster
from mlplatform.local.config import (
    LocalConfig,
    Ports,
    StateLayout,
    default_cache_dir,
    default_state_dir,
    load_config,
)
from mlplatform.local.platform import is_root
from mlplatform.local.stack import endpoints
from mlplatform.local.stack.credentials import load_credentials
from stack import Stack


def _own_cluster_config(state_dir: Path) -> LocalConfig:
    offset = int(os.environ.get("MLPLATFORM_TEST_PORT_OFFSET", "0"))
    node = is_root() and os.environ.get("MLPLATFORM_TEST_NO_NODE") != "1"
    return LocalConfig(
        state_dir=state_dir, cache_dir=default_cache_dir(), node=node, ports=Ports().shifted(offset)
    )


def external() -> bool:
    return os.environ.get("MLPLATFORM_TEST_CLUSTER") == "external"


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalConfig]:
    """A running local cluster for the whole test session."""
    if external():
        pytest.skip("needs the local cluster (MLPLATFORM_TEST_CLUSTER=external)")
    if os.environ.get("MLPLATFORM_TEST_CLUSTER") == "reuse":
        saved = load_config(default_state_dir())
        if saved is None or any(s.pid is None for s in cluster.status(saved)):
            pytest.fail(
                f"MLPLATFORM_TEST_CLUSTER=reuse, but no complete cluster runs in {default_state_dir()}"
            )
        yield saved
        return
    config = cluster.up(_own_cluster_config(tmp_path_factory.mktemp("local-cluster")))
    try:
        yield config
    finally:
        cluster.down(config)


@pytest.fixture
def local_node(local_cluster: LocalConfig) -> None:
    """Skips a test that needs the local node, which runs only as root."""
    if not local_cluster.node:
        pytest.skip("the local node needs root")


@pytest.fixture(scope="session")
def mlflow_stack(local_cluster: LocalConfig) -> Stack:
    """The session cluster's MLflow stack: where it listens and its credentials (read from their files)."""
    assert local_cluster.stack, "the session cluster runs without its MLflow stack"
    return Stack(
        local_cluster, endpoints(local_cluster), load_credentials(StateLayout(local_cluster.state_dir))
    )


@pytest.fixture
def experiment() -> str:
    """A fresh experiment name for one test."""
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def kubeconfig(request: pytest.FixtureRequest) -> Path:
    """The admin kubeconfig of the session cluster (external: $KUBECONFIG)."""
    if external():
        return Path(os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")
    local: LocalConfig = request.getfixturevalue("local_cluster")
    return StateLayout(local.state_dir).admin_kubeconfig


@pytest.fixture(scope="session")
def kubectl_bin(request: pytest.FixtureRequest) -> Path:
    """The session cluster's kubectl, of its own Kubernetes version (external: the one on PATH)."""
    if external():
        found = shutil.which("kubectl")
        if found is None:
            pytest.fail("MLPLATFORM_TEST_CLUSTER=external needs kubectl on PATH")
        return Path(found)
    local: LocalConfig = request.getfixturevalue("local_cluster")
    return StateLayout(local.state_dir).bin / "kubectl"


@pytest.fixture(scope="session")
def helm_bin(kubectl_bin: Path) -> Path:
    """helm of the local cluster's tools (beside its kubectl), else the one on PATH."""
    beside = kubectl_bin.with_name("helm")
    found = beside if beside.exists() else shutil.which("helm")
    assert found, "helm is neither beside kubectl nor on PATH"
    return Path(found)


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> client.ApiClient:
    """A Kubernetes client configured from the cluster's admin kubeconfig."""
    return config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted after it."""
    with fresh_namespace(api_client) as name:
        yield name


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (MLPLATFORM_FAIL_ON_SKIP=1) a skipped test fails the run: a tier must not vanish silently."""
    if os.environ.get("MLPLATFORM_FAIL_ON_SKIP") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and exitstatus == 0:
        reporter.write_line(
            f"MLPLATFORM_FAIL_ON_SKIP: {len(skipped)} test(s) skipped; failing the run", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
