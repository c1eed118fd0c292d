"""The local node refuses what it cannot do: a pod with a field it cannot honour never starts, its
container waits with CreateContainerConfigError naming the field, and a Warning event says the same."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from kube import container_state, eventually, pod, python_pod

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_node")]
Manifest = dict[str, Any]

# Pod name: (what the container adds, what the pod's spec adds, the fields the node must name).
REFUSED: dict[str, tuple[Manifest, Manifest, list[str]]] = {
    "capabilities": (
        {"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}},
        {},
        ["spec.containers[0].securityContext.capabilities.add"],
    ),
    "host-port": (
        {"ports": [{"containerPort": 8080, "hostPort": 18080}]},
        {},
        ["spec.containers[0].ports[0].hostPort"],
    ),
    "grpc-probe": (
        {"livenessProbe": {"grpc": {"port": 9000}}},
        {},
        ["spec.containers[0].livenessProbe.grpc"],
    ),
    "memory-limit": (
        {},
        {"volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]},
        ["spec.volumes[0].emptyDir.sizeLimit"],
    ),
    "seccomp": (
        {},
        {"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "audit.json"}}},
        ["spec.securityContext.seccompProfile.type"],
    ),
    "apparmor": (
        {"securityContext": {"appArmorProfile": {"type": "Localhost", "localhostProfile": "strict"}}},
        {},
        ["spec.containers[0].securityContext.appArmorProfile.type"],
    ),
    "host-pid": ({}, {"hostPID": True}, ["spec.hostPID"]),
    "shared-pids": ({}, {"shareProcessNamespace": True}, ["spec.shareProcessNamespace"]),
    "unmasked-proc": (
        {"securityContext": {"procMount": "Unmasked"}},
        {"hostUsers": False},
        ["spec.hostUsers", "spec.containers[0].securityContext.procMount"],
    ),
    "sysctls": (
        {},
        {"securityContext": {"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}]}},
        ["spec.securityContext.sysctls"],
    ),
    "nfs": (
        {},
        {"volumes": [{"name": "share", "nfs": {"server": "10.0.0.1", "path": "/"}}]},
        ["spec.volumes[0].nfs"],
    ),
}


def refused_waiting(
    core: client.CoreV1Api, namespace: str, name: str
) -> client.V1ContainerStateWaiting | None:
    state = container_state(pod(core, namespace, name))
    waiting = state.waiting if state is not None else None
    return waiting if waiting is not None and waiting.reason == "CreateContainerConfigError" else None


def test_every_refused_field_keeps_its_pod_from_starting_with_an_error_and_an_event_naming_it(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    for name, (container, spec, _) in REFUSED.items():
        core.create_namespaced_pod(namespace, python_pod(name, "print('ran')", container=container, **spec))

    for name, (_, _, fields) in REFUSED.items():
        waiting = eventually(
            lambda n=name: refused_waiting(core, namespace, n), timeout=90, what=f"{name} refused"
        )
        named = [part.split(":", 1)[0] for part in waiting.message.split("; ")]
        assert named == fields, waiting.message
        assert "not supported by the local node" in waiting.message or "not enforced" in waiting.message
        found = pod(core, namespace, name)
        assert found is not None and found.status.phase == "Pending"
        assert found.status.pod_ip is None  # not even its sandbox was made
        selector = f"involvedObject.name={name},reason=Failed"
        events = core.list_namespaced_event(namespace, field_selector=selector).items
        assert [(e.type, e.message) for e in events] == [("Warning", f"Error: {waiting.message}")]
