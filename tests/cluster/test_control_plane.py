"""The local control plane is a real Kubernetes: API, CRDs with CEL, controllers, tokens and RBAC."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kube import eventually, kubectl

pytestmark = pytest.mark.cluster


def test_apiserver_is_ready_and_serves_workload_apis(kubectl_bin: Path, kubeconfig: Path) -> None:
    assert kubectl(kubectl_bin, kubeconfig, "get", "--raw", "/readyz").stdout.strip() == "ok"
    names = kubectl(kubectl_bin, kubeconfig, "api-resources", "-o", "name").stdout.split()
    assert {"jobs.batch", "deployments.apps"} <= set(names)
    for group_version, kind in (("batch/v1", "Job"), ("apps/v1", "Deployment")):
        discovery = json.loads(
            kubectl(kubectl_bin, kubeconfig, "get", "--raw", f"/apis/{group_version}").stdout
        )
        assert kind in {r["kind"] for r in discovery["resources"]}
    server = json.loads(kubectl(kubectl_bin, kubeconfig, "version", "-o", "json").stdout)["serverVersion"]
    client_version = json.loads(kubectl(kubectl_bin, kubeconfig, "version", "-o", "json").stdout)[
        "clientVersion"
    ]
    assert server["gitVersion"] == client_version["gitVersion"]
    assert server["gitVersion"].startswith("v1.")


WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.mlplatform.dev"},
    "spec": {
        "group": "test.mlplatform.dev",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["minReplicas", "maxReplicas"],
                                "properties": {
                                    "minReplicas": {"type": "integer", "minimum": 0},
                                    "maxReplicas": {"type": "integer"},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.minReplicas <= self.maxReplicas",
                                        "message": "minReplicas must not exceed maxReplicas",
                                    }
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def _widget(name: str, low: int, high: int) -> dict[str, Any]:
    return {
        "apiVersion": "test.mlplatform.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"minReplicas": low, "maxReplicas": high},
    }


def test_crd_with_cel_rule_rejects_bad_object(api_client: client.ApiClient, namespace: str) -> None:
    extensions = client.ApiextensionsV1Api(api_client)
    try:
        extensions.create_custom_resource_definition(WIDGET_CRD)
    except ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> bool:
        crd = extensions.read_custom_resource_definition("widgets.test.mlplatform.dev")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    eventually(established, what="CRD established")
    custom = client.CustomObjectsApi(api_client)
    args = ("test.mlplatform.dev", "v1", namespace, "widgets")
    eventually(lambda: _try_create(custom, args, _widget("good", 1, 3)), what="CRD served")
    assert custom.get_namespaced_custom_object(*args, "good")["spec"]["maxReplicas"] == 3

    with pytest.raises(ApiException) as rejected:
        custom.create_namespaced_custom_object(*args, _widget("bad", 5, 2))
    assert rejected.value.status == 422
    assert "minReplicas must not exceed maxReplicas" in rejected.value.body
    with pytest.raises(ApiException) as schema_rejected:
        custom.create_namespaced_custom_object(*args, _widget("negative", -1, 2))
    assert schema_rejected.value.status == 422
    assert "spec.minReplicas" in schema_rejected.value.body


def _try_create(custom: client.CustomObjectsApi, args: tuple[str, ...], body: dict[str, Any]) -> bool:
    try:
        custom.create_namespaced_custom_object(*args, body)
    except ApiException as exc:
        if exc.status == 404:  # the new resource is not served yet
            return False
        raise
    return True


def _deployment(name: str) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="main", image="mlplatform/does-not-exist:0", command=["sleep", "3600"]
                        )
                    ]
                ),
            ),
        ),
    )


def test_deployment_creates_replicaset_and_pods_then_garbage_collects_them(
    api_client: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    apps.create_namespaced_deployment(namespace, _deployment("web"))

    replica_sets = eventually(
        lambda: apps.list_namespaced_replica_set(namespace).items, what="ReplicaSet created"
    )
    assert replica_sets[0].metadata.owner_references[0].kind == "Deployment"
    pods = eventually(
        lambda: (
            list(core.list_namespaced_pod(namespace).items)
            if len(core.list_namespaced_pod(namespace).items) == 2
            else None
        ),
        what="2 pods created",
    )
    assert {p.metadata.owner_references[0].name for p in pods} == {replica_sets[0].metadata.name}
    eventually(
        lambda: all(p.spec.node_name or _unschedulable(p) for p in core.list_namespaced_pod(namespace).items),
        what="the scheduler to place (or report) every pod",
    )

    apps.delete_namespaced_deployment("web", namespace)
    eventually(lambda: not apps.list_namespaced_replica_set(namespace).items, what="ReplicaSet collected")
    eventually(lambda: not core.list_namespaced_pod(namespace).items, timeout=90, what="pods collected")


def _unschedulable(pod: client.V1Pod) -> bool:
    conditions = pod.status.conditions or []
    return any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in conditions)


def test_service_account_gets_a_token_that_authenticates(
    api_client: client.ApiClient, namespace: str, kubeconfig: Path
) -> None:
    core = client.CoreV1Api(api_client)
    eventually(
        lambda: _exists(lambda: core.read_namespaced_service_account("default", namespace)),
        what="default ServiceAccount created by the controller-manager",
    )
    eventually(
        lambda: _exists(lambda: core.read_namespaced_config_map("kube-root-ca.crt", namespace)),
        what="kube-root-ca.crt published",
    )
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="trainer"))
    )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    )
    token = core.create_namespaced_service_account_token("trainer", namespace, request).status.token
    assert token.count(".") == 2  # a signed JWT

    review = client.AuthenticationV1Api(api_client).create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
    )
    assert review.status.authenticated
    assert review.status.user.username == f"system:serviceaccount:{namespace}:trainer"


def _exists(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_rbac_denies_a_user_without_a_role_until_granted(
    kubectl_bin: Path, kubeconfig: Path, api_client: client.ApiClient, namespace: str
) -> None:
    denied = kubectl(kubectl_bin, kubeconfig, "get", "pods", "-n", namespace, "--as=jane", check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert 'User "jane" cannot list resource "pods"' in denied.stderr

    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="pod-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="jane-reads-pods"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"),
            subjects=[client.RbacV1Subject(api_group="rbac.authorization.k8s.io", kind="User", name="jane")],
        ),
    )

    eventually(
        lambda: (
            kubectl(
                kubectl_bin, kubeconfig, "get", "pods", "-n", namespace, "--as=jane", check=False
            ).returncode
            == 0
        ),
        timeout=30,
        what="jane allowed after the binding",
    )
    still_denied = kubectl(
        kubectl_bin, kubeconfig, "delete", "pod", "anything", "-n", namespace, "--as=jane", check=False
    )
    assert still_denied.returncode != 0 and "forbidden" in still_denied.stderr.lower()
