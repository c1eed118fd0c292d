"""Every TrainingRun example in examples/ applied as a user would, to success. Model and experiment
names are made unique per test (the registry is shared); nothing else is changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kube import apply, eventually, is_ready, pods_of, python_pod
from operator_process import OperatorProcess
from stack import Stack
from trainingruns import condition, mlflow_run, unique, wait_phase

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Serves a bare repository over git's "dumb" HTTP protocol, built from the ConfigMap of the code example.
GIT_SERVER = """
import os, pathlib, shutil, subprocess, http.server, functools
work, served = pathlib.Path('/tmp/work'), pathlib.Path('/tmp/served')
shutil.copytree('/code', work / 'training', ignore=shutil.ignore_patterns('..*'))
git = ['git', '-c', 'user.name=tests', '-c', 'user.email=tests@example.com']
subprocess.run([*git, 'init', '-q', '-b', 'main', str(work)], check=True)
subprocess.run([*git, '-C', str(work), 'add', '.'], check=True)
subprocess.run([*git, '-C', str(work), 'commit', '-qm', 'training code'], check=True)
subprocess.run([*git, 'clone', '-q', '--bare', str(work), str(served / 'diabetes.git')], check=True)
subprocess.run([*git, '-C', str(served / 'diabetes.git'), 'update-server-info'], check=True)
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
http.server.ThreadingHTTPServer(('', 8080), handler).serve_forever()
"""


def documents(file: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLES / file).read_text()) if d]


def with_unique_names(doc: dict[str, Any], experiment: str, model: str) -> dict[str, Any]:
    if doc["kind"] == "TrainingRun":
        doc["spec"]["experiment"] = experiment
        if "model" in doc["spec"]:
            doc["spec"]["model"]["name"] = model
    return doc


def serve_git(api_client: client.ApiClient, namespace: str, kubectl_args: tuple[Path, Path]) -> None:
    """A pod and Service `git-server` in the namespace, as the git example expects."""
    config_map = next(d for d in documents("trainingrun-sklearn-configmap.yaml") if d["kind"] == "ConfigMap")
    apply(*kubectl_args, namespace, config_map)
    server = python_pod(
        "git-server",
        GIT_SERVER,
        container={
            "env": [{"name": "HOME", "value": "/tmp"}],
            "volumeMounts": [{"name": "code", "mountPath": "/code"}],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        },
        volumes=[{"name": "code", "configMap": {"name": config_map["metadata"]["name"]}}],
    )
    server["metadata"]["labels"] = {"app": "git-server"}
    apply(*kubectl_args, namespace, server)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "git-server"},
        "spec": {"selector": {"app": "git-server"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    apply(*kubectl_args, namespace, service)
    core = client.CoreV1Api(api_client)
    eventually(
        lambda: all(is_ready(p) for p in pods_of(core, namespace, "app=git-server")),
        timeout=60,
        what="the git server ready",
    )


@pytest.mark.parametrize(
    "file",
    [
        "trainingrun-minimal.yaml",
        "trainingrun-sklearn-configmap.yaml",
        "trainingrun-mlproject.yaml",
        "trainingrun-promotion.yaml",
        "trainingrun-git.yaml",
    ],
)
def test_example_succeeds(
    file: str,
    running_operator: OperatorProcess,
    mlflow_stack: Stack,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
    experiment: str,
) -> None:
    if file == "trainingrun-git.yaml":
        serve_git(api_client, namespace, (kubectl_bin, kubeconfig))
    model = unique("model")
    docs = [with_unique_names(d, experiment, model) for d in documents(file)]
    for doc in docs:
        apply(kubectl_bin, kubeconfig, namespace, doc)
    [run] = [d for d in docs if d["kind"] == "TrainingRun"]
    name = run["metadata"]["name"]
    done = wait_phase(api_client, namespace, name, "Succeeded", "Failed")
    assert done["phase"] == "Succeeded", condition(done, "Stalled").get("message")
    tracked = mlflow_run(mlflow_stack, done["mlflow"]["runId"])
    assert tracked["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in tracked["data"].get("params") or []}
    for key, value in (run["spec"].get("parameters") or {}).items():
        assert params.get(key) == value, (key, params)
    if "model" in run["spec"]:
        assert done["model"]["name"] == model and done["model"]["version"] == "1", done
    if file in ("trainingrun-sklearn-configmap.yaml", "trainingrun-mlproject.yaml", "trainingrun-git.yaml"):
        assert "rmse" in done["metrics"], done
    if file == "trainingrun-promotion.yaml":
        assert done["model"]["promotedTo"] == "champion", done
