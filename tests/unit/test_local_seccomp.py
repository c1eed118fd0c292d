"""seccomp `RuntimeDefault` on the local node: which profile a container runs under (its own security
context's, else the pod's). What the profile refuses is tested in tests/cluster/test_node_runtime.py,
loaded by runc in a real container."""

from __future__ import annotations

from typing import Any

from mlplatform.local.node.seccomp import RUNTIME_DEFAULT, effective_profile

Manifest = dict[str, Any]

RUNTIME = {"seccompProfile": {"type": "RuntimeDefault"}}
UNCONFINED = {"seccompProfile": {"type": "Unconfined"}}


def profile(pod_context: Manifest | None, container_context: Manifest | None) -> str | None:
    """The profile of a container with `container_context` in a pod with `pod_context` (None: no context)."""
    pod = {"spec": {} if pod_context is None else {"securityContext": pod_context}}
    return effective_profile(pod, {} if container_context is None else {"securityContext": container_context})


def test_the_containers_profile_overrides_the_pods() -> None:
    assert profile(UNCONFINED, RUNTIME) == RUNTIME_DEFAULT
    assert profile(RUNTIME, UNCONFINED) is None


def test_a_container_without_a_profile_takes_the_pods() -> None:
    assert profile(RUNTIME, {"runAsUser": 1000}) == RUNTIME_DEFAULT
    assert profile(RUNTIME, None) == RUNTIME_DEFAULT
    assert profile(UNCONFINED, {}) is None


def test_no_profile_anywhere_is_unconfined_as_the_kubelet_runs_it() -> None:
    assert profile(None, None) is None
    assert profile({"runAsNonRoot": True}, {"readOnlyRootFilesystem": True}) is None
