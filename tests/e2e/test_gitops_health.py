"""The Argo CD health checks of gitops/argocd/health/ on live objects: each TrainingRun and
ModelDeployment below is read as it goes and its health evaluated by the Lua script Argo CD would run.

With MLPLATFORM_GITOPS_FIXTURES=<folder>, the object behind each health it passes through is saved
there (tests/unit/fixtures/gitops/ holds the ones the unit tests read)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

import modeldeployments
import trainingruns
from argocd_health import health
from kube import apply, eventually, fresh_namespace, kubectl
from modeldeployments import empty_run_source, modeldeployment, register_version, set_alias
from operator_process import OperatorProcess
from stack import Stack
from trainingruns import python_run, unique, wait_phase

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ALIAS = "champion"
Health = tuple[str, str]


@dataclass
class HealthWatch:
    """The healths an object passed through, in order (each once per change), and its object at each."""

    read: Callable[[], dict[str, Any] | None]
    seen: list[Health] = field(default_factory=list)
    objects: list[dict[str, Any]] = field(default_factory=list)  # the object at each health seen

    def poll(self) -> Health | None:
        found = self.read()
        if found is None:
            return None
        current = health(found)
        if not self.seen or self.seen[-1] != current:
            self.seen.append(current)
            self.objects.append(found)
        return current

    def until(self, wanted: Callable[[Health], bool], what: str, timeout: float = 300) -> Health:
        def reached() -> Health | None:
            current = self.poll()
            return current if current is not None and wanted(current) else None

        try:
            result: Health = eventually(reached, timeout=timeout, interval=0.25, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nhealths seen: {self.seen}") from None
        return result

    def statuses(self) -> list[str]:
        return [status for status, _ in self.seen]


def is_status(*statuses: str) -> Callable[[Health], bool]:
    return lambda current: current[0] in statuses


def save_fixtures(watch: HealthWatch, case: str) -> None:
    """Keep the watched objects as unit-test fixtures when MLPLATFORM_GITOPS_FIXTURES names a folder."""
    folder = os.environ.get("MLPLATFORM_GITOPS_FIXTURES")
    if not folder:
        return
    for step, ((status, _), found) in enumerate(zip(watch.seen, watch.objects, strict=True), start=1):
        metadata = found["metadata"]
        metadata.pop("managedFields", None)
        (metadata.get("annotations") or {}).pop("kubectl.kubernetes.io/last-applied-configuration", None)
        path = Path(folder) / f"{found['kind']}-{case}-{step}-{status}.yaml"
        path.write_text(yaml.safe_dump(found, sort_keys=False))


def trainingrun_watch(api_client: client.ApiClient, namespace: str, name: str) -> HealthWatch:
    return HealthWatch(lambda: trainingruns.get(api_client, namespace, name))


def modeldeployment_watch(api_client: client.ApiClient, namespace: str, name: str) -> HealthWatch:
    return HealthWatch(lambda: modeldeployments.get(api_client, namespace, name))


@pytest.fixture(scope="module")
def module_namespace(api_client: client.ApiClient) -> Iterator[str]:
    with fresh_namespace(api_client, "test-gitops") as name:
        yield name


@pytest.fixture(scope="module")
def trained_model(
    operator: OperatorProcess,
    mlflow_stack: Stack,
    api_client: client.ApiClient,
    module_namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
) -> str:
    """A model of this module's own, trained by the promotion example, its version 1 the champion."""
    if operator.process is None or operator.process.poll() is not None:
        operator.start()
    manifest = next(d for d in yaml.safe_load_all((EXAMPLES / "trainingrun-promotion.yaml").read_text()) if d)
    model = unique("gitops")
    manifest["spec"]["experiment"] = model
    manifest["spec"]["model"]["name"] = model
    apply(kubectl_bin, kubeconfig, module_namespace, manifest)
    watch = trainingrun_watch(api_client, module_namespace, manifest["metadata"]["name"])
    status, message = watch.until(is_status("Healthy", "Degraded"), "the promotion example finished")
    assert status == "Healthy" and f"model {model} version 1" in message, watch.seen
    save_fixtures(watch, "registered")
    return model


def test_a_suspended_run_is_suspended_then_progressing_then_healthy(
    running_operator: OperatorProcess,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
    experiment: str,
) -> None:
    script = "import time; time.sleep(4); print('trained')"
    run = python_run("paused", script, experiment=experiment, suspend=True)
    apply(kubectl_bin, kubeconfig, namespace, run)
    watch = trainingrun_watch(api_client, namespace, "paused")
    assert watch.until(is_status("Suspended"), "Suspended") == (
        "Suspended",
        "The run is suspended (spec.suspend)",
    )
    wait_phase(api_client, namespace, "paused", "Pending")  # the operator took it on, and holds it

    resume = [
        "patch",
        "trainingrun",
        "paused",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"suspend":false}}',
    ]
    kubectl(kubectl_bin, kubeconfig, *resume)
    status, message = watch.until(is_status("Healthy", "Degraded"), "the run finished", timeout=180)
    assert status == "Healthy" and "finished" in message, watch.seen
    statuses = watch.statuses()
    assert "Progressing" in statuses[statuses.index("Suspended") + 1 : -1], watch.seen  # while it ran
    assert any(m.startswith("Running: ") for s, m in watch.seen if s == "Progressing"), watch.seen
    save_fixtures(watch, "resumed")


def test_a_failed_run_is_degraded_with_its_reason(
    running_operator: OperatorProcess,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
    experiment: str,
) -> None:
    script = "import sys, time; time.sleep(3); print('the data set is empty'); sys.exit(3)"
    apply(kubectl_bin, kubeconfig, namespace, python_run("doomed", script, experiment=experiment))
    watch = trainingrun_watch(api_client, namespace, "doomed")
    status, message = watch.until(is_status("Healthy", "Degraded"), "the run finished", timeout=180)
    assert status == "Degraded", watch.seen
    assert message.startswith("Failed: NonZeroExit: ") and "the data set is empty" in message, message
    assert watch.statuses()[:-1] and set(watch.statuses()[:-1]) == {"Progressing"}, watch.seen
    save_fixtures(watch, "failed")


def test_a_deployment_is_progressing_then_healthy_and_degraded_once_rolled_back(
    trained_model: str,
    running_operator: OperatorProcess,
    mlflow_stack: Stack,
    api_client: client.ApiClient,
    module_namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
) -> None:
    model, namespace = trained_model, module_namespace
    manifest = modeldeployment(
        "serving",
        {"name": model, "alias": ALIAS},
        replicas=1,
        pollIntervalSeconds=5,
        rollout={"progressDeadlineSeconds": 30},
    )
    apply(kubectl_bin, kubeconfig, namespace, manifest)
    watch = modeldeployment_watch(api_client, namespace, "serving")
    assert watch.until(is_status("Healthy"), "version 1 serving", timeout=240) == (
        "Healthy",
        "version 1 serves on 1 replica(s)",
    )
    assert watch.statuses()[0] == "Progressing", watch.seen
    save_fixtures(watch, "rollout")

    # A version whose artifacts are missing never becomes ready: rolled back, version 1 still serves.
    broken = register_version(mlflow_stack, model, *empty_run_source(mlflow_stack))
    set_alias(mlflow_stack, model, ALIAS, broken)
    watch = modeldeployment_watch(api_client, namespace, "serving")
    rolled_back = f"RolledBack: version {broken} did not become ready"
    _, message = watch.until(
        lambda h: h[0] == "Degraded" and h[1].startswith(rolled_back), "rolled back", 180
    )
    assert message.endswith("version 1 serves"), message
    assert "Progressing" in watch.statuses(), watch.seen  # the rollout of the broken version
    save_fixtures(watch, "rolledback")


def test_a_deployment_of_a_missing_model_is_degraded(
    running_operator: OperatorProcess,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
) -> None:
    model = unique("missing")
    apply(kubectl_bin, kubeconfig, namespace, modeldeployment("ghost", {"name": model, "alias": ALIAS}))
    watch = modeldeployment_watch(api_client, namespace, "ghost")
    status, message = watch.until(is_status("Degraded", "Healthy"), "Degraded", timeout=120)
    assert status == "Degraded" and message.startswith("ModelNotFound: ") and model in message, watch.seen
    save_fixtures(watch, "missing")
