"""A container's environment and argv follow the kubelet: $(VAR) expansion, precedence of service
links < envFrom < env, every valueFrom source, and how command/args combine with the image."""

from __future__ import annotations

from typing import Any

import pytest

from mlplatform.local.node.environment import (
    ContainerConfigError,
    Lookups,
    container_argv,
    container_env,
    expand,
    service_link_env,
)

POD: dict[str, Any] = {
    "metadata": {
        "name": "trainer-0",
        "namespace": "team-a",
        "uid": "0b4e-uid",
        "labels": {"app": "wine", "app.kubernetes.io/name": "trainer"},
        "annotations": {"owner": "ml"},
    },
    "spec": {"nodeName": "mlplatform-local", "serviceAccountName": "runner"},
    "status": {"podIP": "10.244.0.7", "hostIP": "10.244.0.1", "podIPs": [{"ip": "10.244.0.7"}]},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "alpha"),
        ("x-$(A)-$(B)-y", "x-alpha-beta-y"),
        ("$(MISSING)", "$(MISSING)"),
        ("pre $(MISSING) $(A)", "pre $(MISSING) alpha"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$alpha"),
        ("cost: 5$", "cost: 5$"),
        ("$", "$"),
        ("a $ b", "a $ b"),
        ("$A", "$A"),
        ("$(A", "$(A"),
        ("$()", "$()"),
        ("$$", "$"),
    ],
)
def test_expand_follows_kubernetes_variable_syntax(text: str, expected: str) -> None:
    """Defined references expand, undefined ones stay literal, $$ escapes, a lone $ is kept."""
    assert expand(text, {"A": "alpha", "B": "beta"}) == expected


def test_env_precedence_is_service_links_then_env_from_then_env() -> None:
    """A name in env beats envFrom, which beats a service link; the rest of each source survives."""
    container = {
        "envFrom": [
            {"configMapRef": {"name": "settings"}},
            {"secretRef": {"name": "creds"}, "prefix": "S_"},
        ],
        "env": [{"name": "MODE", "value": "from-env"}],
    }
    lookups = Lookups(
        config_maps={"settings": {"MODE": "from-configmap", "WEB_SERVICE_HOST": "overridden", "LEVEL": "3"}},
        secrets={"creds": {"TOKEN": "t0k", "MODE": "secret-mode"}},
    )
    service_env = {"WEB_SERVICE_HOST": "10.96.0.5", "WEB_SERVICE_PORT": "80"}
    env = container_env(POD, container, lookups, service_env)
    assert env["MODE"] == "from-env"
    assert env["WEB_SERVICE_HOST"] == "overridden"
    assert env["WEB_SERVICE_PORT"] == "80"
    assert env["LEVEL"] == "3"
    assert env["S_TOKEN"] == "t0k" and env["S_MODE"] == "secret-mode"
    assert "TOKEN" not in env


def test_later_env_from_sources_override_earlier_ones_and_env_is_applied_in_order() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "one"}}, {"configMapRef": {"name": "two"}}],
        "env": [{"name": "X", "value": "first"}, {"name": "X", "value": "second"}],
    }
    lookups = Lookups(config_maps={"one": {"K": "1"}, "two": {"K": "2"}})
    env = container_env(POD, container, lookups, {})
    assert env == {"K": "2", "X": "second"}


def test_env_from_skips_keys_that_are_not_valid_variable_names() -> None:
    """Keys that are no valid names (even after the prefix) are skipped, as the kubelet does."""
    container = {
        "envFrom": [
            {"configMapRef": {"name": "raw"}},
            {"configMapRef": {"name": "digits"}, "prefix": "P_"},
        ]
    }
    lookups = Lookups(
        config_maps={
            "raw": {"good.name-1": "ok", "1starts-with-digit": "no", "has space": "no", "a=b": "no"},
            "digits": {"1abc": "yes-with-prefix"},
        }
    )
    env = container_env(POD, container, lookups, {})
    assert env == {"good.name-1": "ok", "P_1abc": "yes-with-prefix"}


def test_env_values_expand_references_to_earlier_variables_only() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "base"}}],
        "env": [
            {"name": "HOST", "value": "db"},
            {"name": "URL", "value": "postgres://$(HOST):$(PORT)/$(DB_SERVICE_HOST)/$(LATER)"},
            {"name": "LATER", "value": "too-late"},
            {"name": "ESCAPED", "value": "$$(HOST)"},
        ],
    }
    lookups = Lookups(config_maps={"base": {"PORT": "5432"}})
    env = container_env(POD, container, lookups, {"DB_SERVICE_HOST": "10.96.0.9"})
    assert env["URL"] == "postgres://db:5432/10.96.0.9/$(LATER)"
    assert env["ESCAPED"] == "$(HOST)"


def test_value_from_config_map_and_secret_keys_including_optional_missing_ones() -> None:
    container = {
        "env": [
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {
                "name": "ABSENT_MAP",
                "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}},
            },
            {
                "name": "ABSENT_KEY",
                "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nokey", "optional": True}},
            },
            {"name": "NOT_EXPANDED", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "ref"}}},
        ]
    }
    lookups = Lookups(
        config_maps={"settings": {"mode": "fast", "ref": "$(MODE)"}, "nope": None},
        secrets={"creds": {"password": "s3cr3t"}},
    )
    env = container_env(POD, container, lookups, {})
    assert env == {"MODE": "fast", "PASSWORD": "s3cr3t", "NOT_EXPANDED": "$(MODE)"}


def test_missing_secret_or_key_that_is_not_optional_is_a_config_error() -> None:
    by_name = {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "x", "key": "token"}}}]}
    with pytest.raises(ContainerConfigError) as missing:
        container_env(POD, by_name, Lookups(secrets={"x": None}), {})
    assert str(missing.value) == 'secret "x" not found'
    with pytest.raises(ContainerConfigError, match='configmap "cm" not found'):
        container_env(POD, {"envFrom": [{"configMapRef": {"name": "cm"}}]}, Lookups(), {})
    with pytest.raises(ContainerConfigError, match="couldn't find key token in secret team-a/x"):
        container_env(POD, by_name, Lookups(secrets={"x": {"other": "v"}}), {})
    optional_from = {"envFrom": [{"secretRef": {"name": "gone", "optional": True}}]}
    assert container_env(POD, optional_from, Lookups(), {}) == {}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("metadata.name", "trainer-0"),
        ("metadata.namespace", "team-a"),
        ("metadata.uid", "0b4e-uid"),
        ("spec.nodeName", "mlplatform-local"),
        ("spec.serviceAccountName", "runner"),
        ("status.podIP", "10.244.0.7"),
        ("status.hostIP", "10.244.0.1"),
        ("status.podIPs", "10.244.0.7"),
        ("metadata.labels['app.kubernetes.io/name']", "trainer"),
        ("metadata.labels['absent']", ""),
        ("metadata.annotations['owner']", "ml"),
        ("metadata.labels", 'app="wine"\napp.kubernetes.io/name="trainer"'),
    ],
)
def test_field_ref_paths(path: str, expected: str) -> None:
    container = {"env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": path}}}]}
    assert container_env(POD, container, Lookups(), {})["V"] == expected


def test_unsupported_field_path_is_a_config_error() -> None:
    container = {"env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]}
    with pytest.raises(ContainerConfigError, match=r"spec\.bogus"):
        container_env(POD, container, Lookups(), {})


def test_resource_field_ref_with_divisor_and_the_node_allocatable_default() -> None:
    def ref(resource: str, divisor: str | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"resource": resource}
        if divisor:
            spec["divisor"] = divisor
        return {"resourceFieldRef": spec}

    container = {
        "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}},
        "env": [
            {"name": "CPU_REQUEST", "valueFrom": ref("requests.cpu")},
            {"name": "CPU_REQUEST_M", "valueFrom": ref("requests.cpu", "1m")},
            {"name": "MEM_LIMIT_MI", "valueFrom": ref("limits.memory", "1Mi")},
            {"name": "MEM_LIMIT", "valueFrom": ref("limits.memory")},
            {"name": "MEM_REQUEST_GI", "valueFrom": ref("requests.memory", "1Gi")},
            {"name": "CPU_LIMIT", "valueFrom": ref("limits.cpu")},
            {"name": "CPU_LIMIT_M", "valueFrom": ref("limits.cpu", "1m")},
        ],
    }
    allocatable = {"cpu": "2", "memory": "24Gi"}
    env = container_env(POD, container, Lookups(), {}, allocatable)
    assert env["CPU_REQUEST"] == "1"  # 0.25 cores, rounded up as the kubelet does
    assert env["CPU_REQUEST_M"] == "250"
    assert env["MEM_LIMIT_MI"] == "1024"
    assert env["MEM_LIMIT"] == str(1024**3)
    assert env["MEM_REQUEST_GI"] == "1"  # 64Mi in Gi, rounded up
    assert env["CPU_LIMIT"] == "2"  # no limit: the node's allocatable
    assert env["CPU_LIMIT_M"] == "2000"


@pytest.mark.parametrize(
    ("container", "entrypoint", "cmd", "expected"),
    [
        ({"command": ["python", "train.py"]}, ["/entry.sh"], ["serve"], ["python", "train.py"]),
        ({"command": ["python"], "args": ["-m", "x"]}, ["/entry.sh"], ["serve"], ["python", "-m", "x"]),
        ({"args": ["--alpha", "0.5"]}, ["/entry.sh"], ["serve"], ["/entry.sh", "--alpha", "0.5"]),
        ({"args": ["run"]}, [], ["python3"], ["run"]),
        ({}, ["/entry.sh"], ["serve", "--port", "80"], ["/entry.sh", "serve", "--port", "80"]),
        ({}, [], ["python3"], ["python3"]),
    ],
)
def test_container_argv_combines_command_and_args_with_the_image(
    container: dict[str, Any], entrypoint: list[str], cmd: list[str], expected: list[str]
) -> None:
    """command replaces ENTRYPOINT and drops CMD; args replaces CMD; neither keeps the image's."""
    assert container_argv(container, entrypoint, cmd, {}) == expected


def test_container_argv_expands_variables_and_fails_without_any_command() -> None:
    container = {"command": ["echo", "$(GREETING)", "$$(GREETING)", "$(UNSET)"]}
    assert container_argv(container, [], [], {"GREETING": "hi"}) == ["echo", "hi", "$(GREETING)", "$(UNSET)"]
    with pytest.raises(ContainerConfigError, match="no command specified"):
        container_argv({}, [], [], {})


def test_service_link_env_for_the_kubernetes_service_and_named_ports() -> None:
    services = [
        {
            "metadata": {"name": "kubernetes"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]},
        },
        {
            "metadata": {"name": "mlflow-server"},
            "spec": {
                "clusterIP": "10.96.0.20",
                "ports": [{"name": "http", "port": 80}, {"name": "dns-udp", "port": 53, "protocol": "UDP"}],
            },
        },
        {"metadata": {"name": "headless"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}},
        {"metadata": {"name": "external"}, "spec": {"type": "ExternalName", "externalName": "x.example"}},
    ]
    env = service_link_env(services)
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["KUBERNETES_PORT"] == "tcp://10.96.0.1:443"
    assert env["KUBERNETES_PORT_443_TCP"] == "tcp://10.96.0.1:443"
    assert env["KUBERNETES_PORT_443_TCP_PROTO"] == "tcp"
    assert env["KUBERNETES_PORT_443_TCP_PORT"] == "443"
    assert env["KUBERNETES_PORT_443_TCP_ADDR"] == "10.96.0.1"
    assert env["MLFLOW_SERVER_SERVICE_HOST"] == "10.96.0.20"
    assert env["MLFLOW_SERVER_SERVICE_PORT"] == "80"
    assert env["MLFLOW_SERVER_SERVICE_PORT_DNS_UDP"] == "53"
    assert env["MLFLOW_SERVER_PORT_53_UDP"] == "udp://10.96.0.20:53"
    assert not [name for name in env if name.startswith(("HEADLESS_", "EXTERNAL_"))]
