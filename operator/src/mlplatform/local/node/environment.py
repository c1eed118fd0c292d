"""A container's environment and command line, as the kubelet computes them (pure functions).

Order and precedence follow the kubelet: service links first, then `envFrom` in order, then `env` in
order, each `$(VAR)` in a value or in command/args expanded against what is defined before it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity as _parse_quantity

Manifest = dict[str, Any]
_VARIABLE_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def parse_quantity(quantity: str) -> Decimal:
    """A Kubernetes quantity ("500m", "2Gi") as a number."""
    return Decimal(_parse_quantity(quantity))  # type: ignore[no-untyped-call]


class ContainerConfigError(Exception):
    """The container cannot be configured yet (a missing Secret, say): CreateContainerConfigError."""


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes variable expansion: `$(VAR)` becomes its value if defined, `$$` escapes `$`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(" and (end := text.find(")", i + 2)) != -1:
            name = text[i + 2 : end]
            out.append(variables[name] if name in variables else text[i : end + 1])
            i = end + 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class Lookups:
    """Objects a pod's environment refers to, fetched by the caller; None marks one that does not exist."""

    config_maps: Mapping[str, Mapping[str, str] | None] = field(default_factory=dict)
    secrets: Mapping[str, Mapping[str, str] | None] = field(default_factory=dict)


def service_link_env(services: Sequence[Manifest]) -> dict[str, str]:
    """Docker-link style variables for Services (KUBERNETES_SERVICE_HOST and friends)."""
    env: dict[str, str] = {}
    for service in services:
        spec = service.get("spec", {})
        ip = spec.get("clusterIP")
        ports = spec.get("ports") or []
        if not ip or ip == "None" or not ports:
            continue
        name = service["metadata"]["name"].upper().replace("-", "_")
        first = ports[0]
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(first["port"])
        env[f"{name}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for port in ports:
            protocol = port.get("protocol", "TCP")
            if port.get("name"):
                env[f"{name}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
            prefix = f"{name}_PORT_{port['port']}_{protocol}"
            env[prefix] = f"{protocol.lower()}://{ip}:{port['port']}"
            env[f"{prefix}_PROTO"] = protocol.lower()
            env[f"{prefix}_PORT"] = str(port["port"])
            env[f"{prefix}_ADDR"] = ip
    return env


def _source(lookups: Lookups, kind: str, name: str, optional: bool) -> Mapping[str, str] | None:
    table = lookups.config_maps if kind == "configmap" else lookups.secrets
    data = table.get(name)
    if data is None and not optional:
        raise ContainerConfigError(f'{kind} "{name}" not found')
    return data


def field_value(pod: Manifest, path: str) -> str:
    """The value of a downward-API field path of `pod`."""
    metadata, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    if match := re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path):
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs") or []),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs") or []),
    }
    if path in ("metadata.labels", "metadata.annotations"):
        values = metadata.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
    if path not in simple:
        raise ContainerConfigError(f"unsupported fieldRef path {path!r}")
    return str(simple[path] or "")


def resource_value(
    container: Manifest, resource: str, divisor: str | None, node_allocatable: Mapping[str, str]
) -> str:
    """A resourceFieldRef: the container's limit or request, limits defaulting to the node's allocatable."""
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    quantity = (resources.get(kind) or {}).get(name)
    if quantity is None and kind == "limits":
        quantity = node_allocatable.get(name)
    value = parse_quantity(quantity or "0") / parse_quantity(divisor or "1")
    return str(math.ceil(value)) if value != value.to_integral_value() else str(int(value))


def _value_from(
    pod: Manifest, container: Manifest, ref: Manifest, lookups: Lookups, node_allocatable: Mapping[str, str]
) -> str | None:
    if key_ref := ref.get("configMapKeyRef") or ref.get("secretKeyRef"):
        kind = "configmap" if "configMapKeyRef" in ref else "secret"
        optional = bool(key_ref.get("optional"))
        data = _source(lookups, kind, key_ref["name"], optional)
        if data is None:
            return None
        if key_ref["key"] not in data:
            if optional:
                return None
            raise ContainerConfigError(
                f"couldn't find key {key_ref['key']} in {kind} {pod['metadata']['namespace']}/"
                f"{key_ref['name']}"
            )
        return data[key_ref["key"]]
    if field_ref := ref.get("fieldRef"):
        return field_value(pod, field_ref["fieldPath"])
    if resource_ref := ref.get("resourceFieldRef"):
        return resource_value(
            container, resource_ref["resource"], resource_ref.get("divisor"), node_allocatable
        )
    raise ContainerConfigError(f"unsupported valueFrom {sorted(ref)}")


def container_env(
    pod: Manifest,
    container: Manifest,
    lookups: Lookups,
    service_env: Mapping[str, str],
    node_allocatable: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables the container's process gets from its spec (image defaults are applied by the caller)."""
    allocatable = node_allocatable or {}
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef") or source.get("secretRef") or {}
        kind = "configmap" if "configMapRef" in source else "secret"
        data = _source(lookups, kind, ref["name"], bool(ref.get("optional")))
        prefix = source.get("prefix", "")
        for key, value in (data or {}).items():
            if _VARIABLE_NAME.match(prefix + key):
                env[prefix + key] = value
    for variable in container.get("env") or []:
        if "valueFrom" not in variable:
            env[variable["name"]] = expand(variable.get("value", ""), {**service_env, **env})
            continue
        resolved = _value_from(pod, container, variable["valueFrom"], lookups, allocatable)
        if resolved is not None:  # an optional reference to something missing sets nothing
            env[variable["name"]] = resolved
    return {**service_env, **env}


def container_argv(
    container: Manifest, image_entrypoint: Sequence[str], image_cmd: Sequence[str], env: Mapping[str, str]
) -> list[str]:
    """Kubernetes' rule: `command` replaces ENTRYPOINT (and drops CMD), `args` replaces CMD."""
    command = container.get("command")
    args = container.get("args")
    if command:
        argv = [*command, *(args or [])]
    else:
        argv = [*image_entrypoint, *(args if args is not None else image_cmd)]
    if not argv:
        raise ContainerConfigError("no command specified: the container has no command and its image none")
    return [expand(part, env) for part in argv]


def quantity_bytes(quantity: str | None) -> int | None:
    return int(parse_quantity(quantity)) if quantity else None


def quantity_millicores(quantity: str | None) -> int | None:
    return int(parse_quantity(quantity) * Decimal(1000)) if quantity else None
