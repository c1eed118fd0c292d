"""ModelDeployment end to end: a model trained by the TrainingRun example, served from the registry by
alias, stage and version on the local node, answering as MLflow's own scoring server does; alias moves
rolled out with zero failed requests, a broken version rolled back; webhooks verified; deletion."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client

from kube import apply, eventually, finished, fresh_namespace, kubectl, pods_of, python_pod
from mlplatform import names
from mlplatform.local.config import LocalConfig
from mlplatform.local.images import ensure_environment, load_image_map, resolve_image
from mlplatform.versions import MLFLOW_VERSION
from modeldeployments import (
    GET_PATHS,
    IMAGE,
    SCORE_LOOP,
    SCORE_ONCE,
    condition,
    empty_run_source,
    get,
    get_version,
    loop_counts,
    modeldeployment,
    pod_log,
    register_version,
    set_alias,
    set_stage,
    status,
    wait_serving,
    wait_status,
)
from operator_process import WEBHOOK_SECRET, OperatorProcess
from stack import Stack
from trainingruns import events, unique, wait_event, wait_phase
from webhook_signing import signed_headers

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = Path(__file__).resolve().parent / "scripts"
ALIAS = "champion"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there
DIABETES_COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def example(file: str, model: str) -> dict[str, Any]:
    manifest: dict[str, Any] = next(d for d in yaml.safe_load_all((EXAMPLES / file).read_text()) if d)
    manifest["spec"]["model"]["name"] = model  # the registry is shared: a model name of this test's own
    return manifest


@pytest.fixture(scope="module")
def module_namespace(api_client: client.ApiClient) -> Iterator[str]:
    """One namespace for the module's tests, which share the trained model."""
    with fresh_namespace(api_client, "test-md") as name:
        yield name


@pytest.fixture(scope="module")
def trained(
    operator: OperatorProcess,
    api_client: client.ApiClient,
    module_namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
) -> dict[str, str]:
    """The TrainingRun example, trained and promoted to `champion` once for this module."""
    if (
        operator.process is None
        or operator.process.poll() is not None
        or operator.active_uri != operator.tracking_uri
    ):
        operator.restart()
    manifest = next(d for d in yaml.safe_load_all((EXAMPLES / "trainingrun-promotion.yaml").read_text()) if d)
    model = unique("diabetes")
    manifest["spec"]["experiment"] = unique("diabetes")
    manifest["spec"]["model"]["name"] = model
    apply(kubectl_bin, kubeconfig, module_namespace, manifest)
    done = wait_phase(api_client, module_namespace, manifest["metadata"]["name"], "Succeeded", "Failed")
    assert done["phase"] == "Succeeded", json.dumps(done, indent=1)
    assert done["model"].get("promotedTo") == ALIAS, done["model"]
    return {"model": model, "version": str(done["model"]["version"]), "run_id": done["mlflow"]["runId"]}


@pytest.fixture(scope="module")
def reference_python(local_cluster: LocalConfig) -> Path:
    """The Python of the image the model was trained with, as the local node builds it."""
    environment = resolve_image(IMAGE, load_image_map())
    assert environment is not None
    return ensure_environment(environment, local_cluster.cache_dir) / "bin" / "python"


def reference(python: Path, stack: Stack, model_uri: str, cases: list[dict[str, str]]) -> dict[str, Any]:
    """What MLflow itself predicts and answers for the model (tests/e2e/scripts/score_reference.py)."""
    result = subprocess.run(
        [str(python), str(SCRIPTS / "score_reference.py"), model_uri],
        input=json.dumps(cases),
        env={
            "MLFLOW_TRACKING_URI": stack.tracking_uri,
            "HOME": "/tmp",
            "PATH": f"{python.parent}:/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def scoring_cases(columns: list[str], rows: list[list[float]]) -> dict[str, dict[str, str]]:
    """One request per input format MLflow's scoring protocol takes, and malformed ones."""
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    split = {"columns": columns, "data": rows}
    csv = ",".join(columns) + "\n" + "\n".join(",".join(repr(v) for v in row) for row in rows) + "\n"
    as_json = "application/json"
    return {
        "dataframe_split": {"content_type": as_json, "body": json.dumps({"dataframe_split": split})},
        "dataframe_records": {"content_type": as_json, "body": json.dumps({"dataframe_records": records})},
        "instances": {"content_type": as_json, "body": json.dumps({"instances": records})},
        "inputs": {"content_type": as_json, "body": json.dumps({"inputs": records})},
        "params": {
            "content_type": as_json,
            "body": json.dumps({"dataframe_split": split, "params": {"x": 1}}),
        },
        "csv": {"content_type": "text/csv", "body": csv},
        "no format": {"content_type": as_json, "body": json.dumps({"rows": rows})},
        "not json": {"content_type": as_json, "body": "{not json"},
        "wrong columns": {
            "content_type": as_json,
            "body": json.dumps({"dataframe_split": {"columns": ["x"], "data": [[1]]}}),
        },
        "unsupported type": {"content_type": "text/plain", "body": "1,2,3"},
    }


def same_message(got: str, want: str) -> bool:
    """Equal, but for the order of a Python set MLflow prints in some messages (it varies per process)."""

    def normalized(text: str) -> str:
        return re.sub(r"\{([^{}]*)\}", lambda m: "{" + ", ".join(sorted(m.group(1).split(", "))) + "}", text)

    return normalized(got) == normalized(want)


def score_in_cluster(
    api_client: client.ApiClient,
    namespace: str,
    url: str,
    cases: list[dict[str, str]],
    kubectl_args: tuple[Path, Path],
) -> list[dict[str, Any]]:
    """Send each request from a pod in the cluster to `url`; its answers."""
    name = f"scorer-{uuid.uuid4().hex[:6]}"
    apply(*kubectl_args, namespace, python_pod(name, SCORE_ONCE, url, json.dumps(cases)))
    core = client.CoreV1Api(api_client)
    pod = finished(core, namespace, name, timeout=120)
    log = core.read_namespaced_pod_log(name, namespace)
    assert pod.status.phase == "Succeeded", log
    answers: list[dict[str, Any]] = json.loads(log.strip().splitlines()[-1])
    return answers


def test_serves_the_champion_as_mlflow_itself_predicts_in_every_format(
    trained: dict[str, str],
    api_client: client.ApiClient,
    module_namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
    mlflow_stack: Stack,
    reference_python: Path,
) -> None:
    namespace, model = module_namespace, trained["model"]
    manifest = example("modeldeployment-alias.yaml", model)
    name = manifest["metadata"]["name"]
    apply(kubectl_bin, kubeconfig, namespace, manifest)
    found = wait_serving(api_client, namespace, name, trained["version"])
    assert found["resolvedFrom"] == f"alias/{ALIAS}"
    assert found["image"] == IMAGE  # the image the version was trained with (its tag)
    assert found["readyReplicas"] == 2 and found["replicas"] == 2
    assert found["url"] == f"http://{name}.{namespace}.svc.cluster.local/invocations"
    assert [(h["version"], h["result"]) for h in found["history"]] == [(trained["version"], "Serving")]

    # kubectl get shows the model, the selector, the version, readiness and the URL.
    table = kubectl(kubectl_bin, kubeconfig, "get", "md", name, "-n", namespace).stdout
    for shown in (model, f"alias/{ALIAS}", found["url"]):
        assert shown in table, table

    # Serving pods pin the version, run restricted, and are spread over a disruption budget.
    core, policy = client.CoreV1Api(api_client), client.PolicyV1Api(api_client)
    pods = pods_of(core, namespace, f"{names.LABEL_MODELDEPLOYMENT}={name}")
    assert {p.metadata.labels[names.LABEL_MODEL_VERSION] for p in pods} == {trained["version"]}
    assert all(p.spec.security_context.run_as_non_root for p in pods)
    assert policy.read_namespaced_pod_disruption_budget(name, namespace).spec.max_unavailable == 1

    # Every input format, from a pod in the cluster, predicts what mlflow.pyfunc.load_model(...).predict
    # does; malformed input gets MLflow's own status and message.
    uri = f"models:/{model}/{trained['version']}"
    base = reference(reference_python, mlflow_stack, uri, [])
    cases = scoring_cases(base["columns"], base["rows"])
    expected = reference(reference_python, mlflow_stack, uri, list(cases.values()))["answers"]
    answers = score_in_cluster(
        api_client, namespace, found["url"], list(cases.values()), (kubectl_bin, kubeconfig)
    )
    for case, answer, want in zip(cases, answers, expected, strict=True):
        assert answer["status"] == want["status"], (case, answer, want)
        if want["status"] == 200:
            assert answer["body"]["predictions"] == pytest.approx(base["predictions"]), case
        elif isinstance(want["body"], dict):
            assert answer["body"]["error_code"] == want["body"]["error_code"], case
            assert same_message(answer["body"]["message"], want["body"]["message"]), case
        else:
            assert answer["body"] == want["body"], case
    assert sum(want["status"] == 200 for want in expected) == 6  # every format answered, errors too
    # The server's other endpoints, through the Service.
    base_url = found["url"].removesuffix("/invocations")
    name_of = f"paths-{uuid.uuid4().hex[:6]}"
    apply(
        kubectl_bin,
        kubeconfig,
        namespace,
        python_pod(name_of, GET_PATHS, base_url, "/ping", "/health", "/version", "/metadata"),
    )
    pod = finished(core, namespace, name_of, timeout=120)
    log = core.read_namespaced_pod_log(name_of, namespace)
    assert pod.status.phase == "Succeeded", log
    paths = json.loads(log.strip().splitlines()[-1])
    assert [paths[p]["status"] for p in ("/ping", "/health", "/version")] == [200, 200, 200], paths
    assert paths["/version"]["body"].strip() == MLFLOW_VERSION
    # The platform's server took the scikit-learn fast path (its ConfigMap mounted, its libraries there).
    metadata = json.loads(paths["/metadata"]["body"])
    assert (metadata["server"], metadata["path"], metadata["http"]) == ("mlplatform", "native", "httptools")


def test_an_alias_move_rolls_out_with_no_failed_request_and_a_broken_version_rolls_back(
    trained: dict[str, str],
    operator: OperatorProcess,
    api_client: client.ApiClient,
    module_namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
    mlflow_stack: Stack,
) -> None:
    namespace, model, first = module_namespace, trained["model"], trained["version"]
    # A model of its own, so the other tests' aliases stay where they are: a copy of the trained version.
    source = get_version(mlflow_stack, model, first)["source"]
    model = unique("rollout")
    assert mlflow_stack.api("POST", "registered-models/create", json={"name": model}).ok
    first = register_version(mlflow_stack, model, source, trained["run_id"])
    set_alias(mlflow_stack, model, ALIAS, first)
    # Polling alone would take 10 minutes: what moves it within seconds is the webhook.
    manifest = modeldeployment(
        "rolling",
        {"name": model, "alias": ALIAS},
        replicas=1,
        pollIntervalSeconds=600,
        rollout={"progressDeadlineSeconds": 30},
    )
    apply(kubectl_bin, kubeconfig, namespace, manifest)
    url = wait_serving(api_client, namespace, "rolling", first)["url"]

    # A client in the cluster calls the model every 50 ms through all that follows.
    body = json.dumps({"dataframe_split": {"columns": DIABETES_COLUMNS, "data": [[0.01] * 10]}})
    apply(kubectl_bin, kubeconfig, namespace, python_pod("client", SCORE_LOOP, url, body))
    eventually(
        lambda: loop_counts(pod_log(api_client, namespace, "client"))[0] > 10,
        timeout=60,
        what="the client's first answers",
    )

    # A new version: the alias moves, the webhook wakes the operator, the version rolls out.
    second = register_version(mlflow_stack, model, source, trained["run_id"])
    moved = time.monotonic()
    set_alias(mlflow_stack, model, ALIAS, second)
    wait_status(
        api_client,
        namespace,
        "rolling",
        "rollout started",
        lambda s: s.get("targetVersion") == second,
        timeout=20,
    )
    started = time.monotonic() - moved
    found = wait_serving(api_client, namespace, "rolling", second)
    serving = time.monotonic() - moved
    print(f"alias move -> rollout started {started:.1f}s, -> version {second} serving {serving:.1f}s")
    assert [(h["version"], h["result"]) for h in found["history"]][-2:] == [
        (first, "Replaced"),
        (second, "Serving"),
    ]

    # A version whose artifacts are missing never becomes ready: the previous one keeps serving.
    broken = register_version(mlflow_stack, model, *empty_run_source(mlflow_stack))
    set_alias(mlflow_stack, model, ALIAS, broken)
    found = wait_status(
        api_client,
        namespace,
        "rolling",
        "rolled back",
        lambda s: s.get("failedVersion") == broken,
        timeout=120,
    )
    assert found["modelVersion"] == second
    degraded = condition(found, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "RolledBack", degraded
    assert f"version {broken} did not become ready" in degraded["message"]
    assert "fetch-model" in degraded["message"] or "server" in degraded["message"], (
        degraded
    )  # the container that failed
    assert condition(found, "Ready")["status"] == "True"
    assert (broken, "RolledBack") in [(h["version"], h["result"]) for h in found["history"]]
    wait_event(api_client, namespace, "rolling", "RolledBack", names.MODELDEPLOYMENT_KIND)
    # ...and is not retried while the alias stays on it.
    time.sleep(3)
    assert status(api_client, namespace, "rolling")["targetVersion"] == second

    # Moving the alias to a good version recovers.
    set_alias(mlflow_stack, model, ALIAS, second)
    found = wait_status(
        api_client,
        namespace,
        "rolling",
        "recovered",
        lambda s: condition(s, "Degraded").get("status") == "False",
        timeout=60,
    )
    assert found["modelVersion"] == second and "failedVersion" not in found

    # The registry out of reach (the operator restarted against a port where nothing listens): what
    # runs keeps serving, and Degraded says why.
    operator.restart(tracking_uri=UNREACHABLE)
    try:
        found = wait_status(
            api_client,
            namespace,
            "rolling",
            "registry unreachable",
            lambda s: condition(s, "Degraded").get("reason") == "RegistryUnavailable",
            timeout=90,
        )
        assert condition(found, "Ready")["status"] == "True" and found["modelVersion"] == second
    finally:
        operator.restart()

    ok, failed, failures = loop_counts(pod_log(api_client, namespace, "client"))
    assert ok > 100 and failed == 0, (ok, failures)
    print(f"the client's requests through two rollouts and an outage: {ok} answered, {failed} failed")


def test_a_missing_model_is_reported_and_a_forged_webhook_changes_nothing(
    operator: OperatorProcess,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
) -> None:
    if operator.process is None or operator.process.poll() is not None:
        operator.start()
    model = unique("missing")
    apply(kubectl_bin, kubeconfig, namespace, modeldeployment("ghost", {"name": model, "alias": ALIAS}))
    found = wait_status(
        api_client,
        namespace,
        "ghost",
        "not found",
        lambda s: condition(s, "Ready").get("reason") == "ModelNotFound",
    )
    assert condition(found, "Ready")["status"] == "False"
    assert condition(found, "Degraded")["status"] == "True"
    assert model in condition(found, "Ready")["message"]
    assert client.AppsV1Api(api_client).list_namespaced_deployment(namespace).items == []

    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "data": {"name": model, "alias": ALIAS, "version": "1"},
        }
    )
    forged = signed_headers("not-the-secret", body)
    answer = requests.post(operator.webhook_url, data=body, headers=forged, timeout=10)
    assert answer.status_code == 401
    assert f"registry webhook for model {model}" not in operator.log_text()
    genuine = signed_headers(WEBHOOK_SECRET, body)
    answer = requests.post(operator.webhook_url, data=body, headers=genuine, timeout=10)
    assert answer.status_code == 200
    eventually(
        lambda: f"registry webhook for model {model}: 1 ModelDeployment" in operator.log_text(),
        timeout=10,
        what="the genuine delivery woke the ModelDeployment",
    )
    metrics = operator.metrics()
    assert 'mlplatform_webhook_deliveries_total{result="refused"}' in metrics


def test_a_spec_change_is_acted_on_at_once_not_at_the_next_poll(
    operator: OperatorProcess,
    api_client: client.ApiClient,
    namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
) -> None:
    """The operator tells a spec change by the generation its status last observed (kopf writes no
    diff-base annotation on a ModelDeployment): with a 10-minute poll, only the change itself can bring the
    new model into the status within seconds."""
    if operator.process is None or operator.process.poll() is not None:
        operator.start()
    first, second = unique("missing"), unique("missing")
    for model in (first, second):
        manifest = modeldeployment("renamed", {"name": model, "alias": ALIAS}, pollIntervalSeconds=600)
        apply(kubectl_bin, kubeconfig, namespace, manifest)
        found = wait_status(
            api_client,
            namespace,
            "renamed",
            f"{model} not found",
            lambda s, model=model: model in condition(s, "Ready").get("message", ""),
            timeout=30,
        )
    assert found["observedGeneration"] == 2
    assert condition(found, "Ready")["observedGeneration"] == 2
    metadata = (get(api_client, namespace, "renamed") or {})["metadata"]
    assert names.LAST_HANDLED_ANNOTATION not in (metadata.get("annotations") or {})


def test_stage_and_version_examples_serve_and_deletion_removes_everything(
    trained: dict[str, str],
    api_client: client.ApiClient,
    module_namespace: str,
    kubectl_bin: Path,
    kubeconfig: Path,
    mlflow_stack: Stack,
) -> None:
    namespace, model, version = module_namespace, trained["model"], trained["version"]
    set_stage(mlflow_stack, model, version, "Production")
    by_stage = example("modeldeployment-stage.yaml", model)
    by_version = example("modeldeployment-version.yaml", model)
    by_version["spec"]["model"]["version"] = version
    for manifest in (by_stage, by_version):
        apply(kubectl_bin, kubeconfig, namespace, manifest)
    stage_status = wait_serving(api_client, namespace, by_stage["metadata"]["name"], version)
    assert stage_status["resolvedFrom"] == "stage/Production"
    name = by_version["metadata"]["name"]
    version_status = wait_serving(api_client, namespace, name, version)
    assert version_status["resolvedFrom"] == f"version/{version}"

    autoscaling = client.AutoscalingV2Api(api_client)
    hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler(name, namespace)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 4)
    assert hpa.spec.metrics[0].resource.target.average_utilization == 70

    kubectl(kubectl_bin, kubeconfig, "delete", "md", name, "-n", namespace, "--wait=true")
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    selector = f"{names.LABEL_MODELDEPLOYMENT}={name}"

    def all_gone() -> bool:
        return not (
            apps.list_namespaced_deployment(namespace, label_selector=selector).items
            or core.list_namespaced_service(namespace, label_selector=selector).items
            or autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace, label_selector=selector).items
            or pods_of(core, namespace, selector)
        )

    eventually(
        all_gone, timeout=90, what="the Deployment, Service, HPA and pods of the deleted ModelDeployment gone"
    )
    assert any(
        reason == "RolledOut"
        for _, reason, _ in events(
            api_client, namespace, by_stage["metadata"]["name"], names.MODELDEPLOYMENT_KIND
        )
    )
