"""Helpers of the ModelDeployment tests: manifests, status, registry calls, and clients in the cluster."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from kube import custom_object, eventually
from mlplatform import names
from stack import Stack

READY_TIMEOUT = 240.0
IMAGE = "mlplatform/trainer-sklearn:0.1.0"


def modeldeployment(name: str, model: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.MODELDEPLOYMENT_KIND,
        "metadata": {"name": name},
        "spec": {"model": model, **spec},
    }


def get(api_client: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    return custom_object(api_client, names.MODELDEPLOYMENT_PLURAL, namespace, name)


def status(api_client: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict((get(api_client, namespace, name) or {}).get("status") or {})


def condition(found: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in found.get("conditions") or [] if c["type"] == kind), {})


def wait_status(
    api_client: client.ApiClient,
    namespace: str,
    name: str,
    what: str,
    check: Any,
    timeout: float = READY_TIMEOUT,
) -> dict[str, Any]:
    """Wait until `check(status)` holds; return the status."""

    def reached() -> dict[str, Any] | None:
        found = status(api_client, namespace, name)
        return found if check(found) else None

    result: dict[str, Any] = eventually(reached, timeout=timeout, interval=0.25, what=f"{name}: {what}")
    return result


def wait_serving(
    api_client: client.ApiClient, namespace: str, name: str, version: str, timeout: float = READY_TIMEOUT
) -> dict[str, Any]:
    """Wait until `version` serves and the object is Ready."""
    return wait_status(
        api_client,
        namespace,
        name,
        f"version {version} serving",
        lambda s: s.get("modelVersion") == version and condition(s, "Ready").get("status") == "True",
        timeout,
    )


def register_version(
    stack: Stack, model: str, source: str, run_id: str | None = None, image: str = IMAGE
) -> str:
    """A new version of `model` from `source`, tagged with the image that serves it."""
    body: dict[str, Any] = {
        "name": model,
        "source": source,
        "tags": [{"key": names.TAG_IMAGE, "value": image}],
    }
    if run_id:
        body["run_id"] = run_id
    if source.startswith("models:/"):
        body["model_id"] = source.removeprefix("models:/")  # MLflow 3: a LoggedModel's own id
    answer = stack.api("POST", "model-versions/create", json=body)
    assert answer.ok, answer.text
    return str(answer.json()["model_version"]["version"])


def empty_run_source(stack: Stack) -> tuple[str, str]:
    """(source, run id) of a model that was never logged: a path in a new run's artifacts that holds
    nothing (MLflow registers it; serving it cannot work)."""
    answer = stack.api("POST", "runs/create", json={"experiment_id": "0", "run_name": "no-model"})
    assert answer.ok, answer.text
    info = answer.json()["run"]["info"]
    return f"{info['artifact_uri']}/model", str(info["run_id"])


def get_version(stack: Stack, model: str, version: str) -> dict[str, Any]:
    answer = stack.api("GET", "model-versions/get", params={"name": model, "version": version})
    assert answer.ok, answer.text
    found: dict[str, Any] = answer.json()["model_version"]
    return found


def set_alias(stack: Stack, model: str, alias: str, version: str) -> None:
    answer = stack.api(
        "POST", "registered-models/alias", json={"name": model, "alias": alias, "version": version}
    )
    assert answer.ok, answer.text


def set_stage(stack: Stack, model: str, version: str, stage: str) -> None:
    body = {"name": model, "version": version, "stage": stage, "archive_existing_versions": True}
    answer = stack.api("POST", "model-versions/transition-stage", json=body)
    assert answer.ok, answer.text


# A client in the cluster: POSTs each request of argv[2] (a JSON list of {content_type, body}) to the URL
# argv[1] and prints the answers as one JSON list.
SCORE_ONCE = """
import json, sys, urllib.request, urllib.error
def parsed(text):
    try:
        return json.loads(text)
    except ValueError:
        return text.decode()
answers = []
for case in json.loads(sys.argv[2]):
    request = urllib.request.Request(sys.argv[1], data=case['body'].encode(), method='POST',
                                     headers={'Content-Type': case['content_type']})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answers.append({'status': response.status, 'body': parsed(response.read())})
    except urllib.error.HTTPError as error:
        answers.append({'status': error.code, 'body': parsed(error.read())})
print(json.dumps(answers))
"""

# GETs each path of argv[2:] under the base URL argv[1]; prints {path: {status, body}} as JSON.
GET_PATHS = """
import json, sys, urllib.request, urllib.error
answers = {}
for path in sys.argv[2:]:
    try:
        with urllib.request.urlopen(sys.argv[1] + path, timeout=30) as response:
            answers[path] = {'status': response.status, 'body': response.read().decode()}
    except urllib.error.HTTPError as error:
        answers[path] = {'status': error.code, 'body': error.read().decode()}
print(json.dumps(answers))
"""

# A client in the cluster that never stops: one request every 50 ms to argv[1] with the body argv[2];
# each failure printed as it happens, and a running count every second.
SCORE_LOOP = """
import json, sys, time, urllib.request
ok = failed = 0
last = time.monotonic()
while True:
    request = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method='POST',
                                     headers={'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            json.loads(response.read())['predictions']
            ok += 1
    except Exception as error:
        failed += 1
        print(json.dumps({'failure': repr(error), 'at': time.time()}), flush=True)
    if time.monotonic() - last >= 1:
        print(json.dumps({'ok': ok, 'failed': failed}), flush=True)
        last = time.monotonic()
    time.sleep(0.05)
"""


def pod_log(api_client: client.ApiClient, namespace: str, name: str) -> str:
    """The pod's log; empty while it has not started."""
    try:
        return str(client.CoreV1Api(api_client).read_namespaced_pod_log(name, namespace))
    except ApiException as exc:
        if exc.status in (400, 404):
            return ""
        raise


def loop_counts(log: str) -> tuple[int, int, list[str]]:
    """(requests answered, requests failed, the failures) from the log of a SCORE_LOOP pod."""
    ok = failed = 0
    failures = []
    for line in log.splitlines():
        record = json.loads(line)
        if "failure" in record:
            failures.append(record["failure"])
        else:
            ok, failed = record["ok"], record["failed"]
    return ok, max(failed, len(failures)), failures
