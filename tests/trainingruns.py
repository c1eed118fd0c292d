"""Helpers of the TrainingRun tests: manifests, status, events, and the MLflow side of a run."""

from __future__ import annotations

import uuid
from typing import Any

from kubernetes import client

from kube import custom_object, eventually
from mlplatform import names
from stack import Stack

PHASE_TIMEOUT = 300.0


def trainingrun(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.TRAININGRUN_KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def python_run(name: str, script: str, **spec: Any) -> dict[str, Any]:
    """A TrainingRun whose trainer is a Python one-liner on the plain python image (no MLflow inside)."""
    return trainingrun(name, image="python:3.11", command=["python3", "-c", script], **spec)


def get(api_client: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    return custom_object(api_client, names.TRAININGRUN_PLURAL, namespace, name)


def status(api_client: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    found = get(api_client, namespace, name)
    return dict((found or {}).get("status") or {})


def condition(found: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in found.get("conditions") or [] if c["type"] == kind), {})


def wait_phase(
    api_client: client.ApiClient, namespace: str, name: str, *phases: str, timeout: float = PHASE_TIMEOUT
) -> dict[str, Any]:
    """Wait until the TrainingRun's phase is one of `phases`; return its status."""

    def reached() -> dict[str, Any] | None:
        found = status(api_client, namespace, name)
        return found if found.get("phase") in phases else None

    try:
        result: dict[str, Any] = eventually(reached, timeout=timeout, what=f"{name} {'/'.join(phases)}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstatus: {status(api_client, namespace, name)}") from None
    return result


def events(
    api_client: client.ApiClient, namespace: str, name: str, kind: str = names.TRAININGRUN_KIND
) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the events about one of our objects (a TrainingRun by default)."""
    listed = client.CoreV1Api(api_client).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind={kind}"
    )
    return [(e.type, e.reason, e.message or "") for e in listed.items]


def wait_event(
    api_client: client.ApiClient, namespace: str, name: str, reason: str, kind: str = names.TRAININGRUN_KIND
) -> tuple[str, str, str]:
    def found() -> tuple[str, str, str] | None:
        return next((e for e in events(api_client, namespace, name, kind) if e[1] == reason), None)

    result: tuple[str, str, str] = eventually(found, timeout=30, what=f"event {reason} on {name}")
    return result


def mlflow_run(stack: Stack, run_id: str) -> dict[str, Any]:
    answer = stack.api("GET", "runs/get", params={"run_id": run_id})
    assert answer.ok, answer.text
    run: dict[str, Any] = answer.json()["run"]
    return run


def runs_tagged(stack: Stack, experiment_id: str, uid: str) -> list[dict[str, Any]]:
    answer = stack.api(
        "POST",
        "runs/search",
        json={"experiment_ids": [experiment_id], "filter": f"tags.`{names.TAG_UID}` = '{uid}'"},
    )
    assert answer.ok, answer.text
    return list(answer.json().get("runs") or [])


def tags_of(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags") or []}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
