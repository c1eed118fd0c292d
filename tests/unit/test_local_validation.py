"""The node's one validation pass: every pod field it cannot honour is named, nothing else is."""

from __future__ import annotations

from typing import Any

import pytest

from mlplatform.local.node.validation import refusal_message, refused_fields

Manifest = dict[str, Any]


def pod(container: Manifest | None = None, **spec: Any) -> Manifest:
    main = {"name": "main", "image": "python:3.11", **(container or {})}
    return {"metadata": {"name": "p", "namespace": "n"}, "spec": {"containers": [main], **spec}}


def fields(manifest: Manifest) -> list[str]:
    return [r.field for r in refused_fields(manifest)]


def test_a_pod_the_node_can_run_is_accepted_whatever_it_honours() -> None:
    honoured = pod(
        {
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"ephemeral-storage": "1Gi"}},
            "securityContext": {
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
                "allowPrivilegeEscalation": False,
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
                "appArmorProfile": {"type": "Unconfined"},
                "procMount": "Default",
            },
            "livenessProbe": {"httpGet": {"path": "/", "port": 8080}},
            "readinessProbe": {"tcpSocket": {"port": 8080}},
            "startupProbe": {"exec": {"command": ["true"]}},
            "lifecycle": {"preStop": {"sleep": {"seconds": 1}}},
            "volumeMounts": [
                {"name": "data", "mountPath": "/data", "subPath": "x", "mountPropagation": "None"}
            ],
        },
        initContainers=[{"name": "sidecar", "image": "python", "restartPolicy": "Always"}],
        securityContext={"fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
        volumes=[
            {"name": "data", "emptyDir": {"medium": "Memory"}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "c"}},
            {"name": "host", "hostPath": {"path": "/srv", "type": "DirectoryOrCreate"}},
            {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}},
        ],
        affinity={"nodeAffinity": {}},
        tolerations=[{"operator": "Exists"}],
    )
    assert refused_fields(honoured) == []
    assert refusal_message(honoured) is None


def test_a_host_port_is_refused_unless_host_network_makes_it_the_container_port() -> None:
    port = {"ports": [{"containerPort": 80, "hostPort": 8080}]}
    assert fields(pod(port)) == ["spec.containers[0].ports[0].hostPort"]
    defaulted = {"ports": [{"containerPort": 80, "hostPort": 80}]}
    assert fields(pod(defaulted, hostNetwork=True)) == []
    assert fields(pod(port, hostNetwork=True)) == ["spec.containers[0].ports[0].hostPort"]


@pytest.mark.parametrize(
    ("container", "field"),
    [
        ({"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}, "securityContext.capabilities.add"),
        ({"securityContext": {"privileged": True}}, "securityContext.privileged"),
        ({"securityContext": {"procMount": "Unmasked"}}, "securityContext.procMount"),
        (
            {"securityContext": {"seccompProfile": {"type": "Localhost"}}},
            "securityContext.seccompProfile.type",
        ),
        (
            {"securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}},
            "securityContext.appArmorProfile.type",
        ),
        ({"securityContext": {"seLinuxOptions": {"level": "s0"}}}, "securityContext.seLinuxOptions"),
        ({"securityContext": {"windowsOptions": {"hostProcess": True}}}, "securityContext.windowsOptions"),
        ({"livenessProbe": {"grpc": {"port": 9000}}}, "livenessProbe.grpc"),
        ({"readinessProbe": {"grpc": {"port": 9000}}}, "readinessProbe.grpc"),
        ({"startupProbe": {"grpc": {"port": 9000}}}, "startupProbe.grpc"),
        (
            {"livenessProbe": {"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 3}},
            "livenessProbe.terminationGracePeriodSeconds",
        ),
        ({"ports": [{"containerPort": 80, "hostIP": "10.0.0.1"}]}, "ports[0].hostIP"),
        ({"resources": {"limits": {"ephemeral-storage": "1Gi"}}}, "resources.limits.ephemeral-storage"),
        ({"resources": {"claims": [{"name": "gpu"}]}}, "resources.claims"),
        ({"volumeDevices": [{"name": "d", "devicePath": "/dev/xvda"}]}, "volumeDevices"),
        (
            {"volumeMounts": [{"name": "d", "mountPath": "/d", "mountPropagation": "HostToContainer"}]},
            "volumeMounts[0].mountPropagation",
        ),
        (
            {"volumeMounts": [{"name": "d", "mountPath": "/d", "subPathExpr": "$(POD)"}]},
            "volumeMounts[0].subPathExpr",
        ),
        (
            {"volumeMounts": [{"name": "d", "mountPath": "/d", "recursiveReadOnly": "Enabled"}]},
            "volumeMounts[0].recursiveReadOnly",
        ),
        ({"lifecycle": {"stopSignal": "SIGUSR1"}}, "lifecycle.stopSignal"),
        ({"restartPolicy": "Always"}, "restartPolicy"),
        ({"restartPolicyRules": [{"action": "Restart"}]}, "restartPolicyRules"),
        ({"stdin": True}, "stdin"),
        ({"tty": True}, "tty"),
        (
            {"env": [{"name": "A", "valueFrom": {"fileKeyRef": {"path": "f", "key": "k"}}}]},
            "env[0].valueFrom.fileKeyRef",
        ),
    ],
)
def test_each_container_field_the_node_cannot_honour_is_named(container: Manifest, field: str) -> None:
    assert fields(pod(container)) == [f"spec.containers[0].{field}"]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"hostPID": True}, "spec.hostPID"),
        ({"hostIPC": True}, "spec.hostIPC"),
        ({"shareProcessNamespace": True}, "spec.shareProcessNamespace"),
        ({"hostUsers": False}, "spec.hostUsers"),
        ({"runtimeClassName": "gvisor"}, "spec.runtimeClassName"),
        ({"setHostnameAsFQDN": True}, "spec.setHostnameAsFQDN"),
        ({"os": {"name": "windows"}}, "spec.os.name"),
        ({"resourceClaims": [{"name": "gpu"}]}, "spec.resourceClaims"),
        ({"resources": {"limits": {"memory": "1Gi"}}}, "spec.resources.limits"),
        (
            {"securityContext": {"sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]}},
            "spec.securityContext.sysctls",
        ),
        (
            {"securityContext": {"seccompProfile": {"type": "Localhost"}}},
            "spec.securityContext.seccompProfile.type",
        ),
        (
            {"securityContext": {"appArmorProfile": {"type": "Localhost"}}},
            "spec.securityContext.appArmorProfile.type",
        ),
        (
            {"securityContext": {"windowsOptions": {"runAsUserName": "x"}}},
            "spec.securityContext.windowsOptions",
        ),
        ({"volumes": [{"name": "v", "nfs": {"server": "s", "path": "/"}}]}, "spec.volumes[0].nfs"),
        ({"volumes": [{"name": "v", "ephemeral": {}}]}, "spec.volumes[0].ephemeral"),
        ({"volumes": [{"name": "v", "image": {"reference": "x"}}]}, "spec.volumes[0].image"),
        (
            {"volumes": [{"name": "v", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}]},
            "spec.volumes[0].emptyDir.sizeLimit",
        ),
        (
            {"volumes": [{"name": "v", "hostPath": {"path": "/f", "type": "File"}}]},
            "spec.volumes[0].hostPath.type",
        ),
        (
            {"volumes": [{"name": "v", "projected": {"sources": [{"clusterTrustBundle": {}}]}}]},
            "spec.volumes[0].projected.sources[0].clusterTrustBundle",
        ),
    ],
)
def test_each_pod_field_the_node_cannot_honour_is_named(spec: Manifest, field: str) -> None:
    assert fields(pod(**spec)) == [field]


def test_init_containers_are_checked_and_may_be_sidecars() -> None:
    init = {
        "name": "setup",
        "image": "python",
        "restartPolicy": "Always",
        "ports": [{"containerPort": 1, "hostPort": 2}],
    }
    assert fields(pod(initContainers=[init])) == ["spec.initContainers[0].ports[0].hostPort"]


def test_the_message_names_every_refused_field_and_is_the_same_each_time() -> None:
    manifest = pod(
        {"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}, "livenessProbe": {"grpc": {"port": 1}}},
        hostPID=True,
    )
    message = refusal_message(manifest)
    assert message == (
        "spec.hostPID: sharing the host's process namespace is not supported by the local node; "
        "spec.containers[0].livenessProbe.grpc: gRPC probes are not supported by the local node; "
        "spec.containers[0].securityContext.capabilities.add: adding capabilities is not supported by the "
        "local node"
    )
    assert refusal_message(manifest) == message
