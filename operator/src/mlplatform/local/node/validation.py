"""Pod fields the local node cannot honour, found in one pass before a pod starts.

The node refuses rather than ignores: a pod that asks for something the node cannot do (an added
capability, a host port, a gRPC probe, a Localhost seccomp profile …) never starts, and its containers
wait with CreateContainerConfigError and a message naming each such field, so a test that passes on the
node never relies on a setting that was silently dropped. Pure: the pod manifest in, the refusals out.

Honoured (and so accepted here): everything else of the pod spec the kubelet acts on, among them
`readOnlyRootFilesystem`, `capabilities.drop`, `allowPrivilegeEscalation`, run-as user and groups,
`fsGroup`, seccomp `RuntimeDefault`/`Unconfined`, cpu and memory limits, exec/httpGet/tcpSocket probes,
lifecycle hooks, native sidecars, hostNetwork, DNS settings, host aliases, and the volume types below.
Fields only the API server or the scheduler act on (affinity, tolerations, priority …) need nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Manifest = dict[str, Any]

SUPPORTED_VOLUMES = frozenset(
    {"configMap", "secret", "downwardAPI", "projected", "emptyDir", "hostPath", "persistentVolumeClaim"}
)
SUPPORTED_PROJECTIONS = frozenset({"configMap", "secret", "downwardAPI", "serviceAccountToken"})
FOLDER_HOST_PATH_TYPES = frozenset({"", "Directory", "DirectoryOrCreate"})
ENFORCED_LIMITS = frozenset({"cpu", "memory"})
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
UNSUPPORTED = "is not supported by the local node"


@dataclass(frozen=True)
class Refusal:
    """One field the node cannot honour: where it is in the pod and why."""

    field: str  # a path in the pod, as the API server names fields: spec.containers[0].ports[1].hostPort
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def refusal_message(pod: Manifest) -> str | None:
    """What every container of a refused pod waits with (CreateContainerConfigError); None: nothing refused.

    One message for the whole pod, its parts always in the same order, so the pod's status and its events
    stay the same from one pass to the next."""
    refusals = refused_fields(pod)
    return "; ".join(str(r) for r in refusals) if refusals else None


def refused_fields(pod: Manifest) -> list[Refusal]:
    spec: Manifest = pod["spec"]
    refusals = [
        *_pod_refusals(spec),
        *_security_refusals("spec.securityContext", spec.get("securityContext")),
    ]
    for index, volume in enumerate(spec.get("volumes") or []):
        refusals += _volume_refusals(f"spec.volumes[{index}]", volume)
    for kind in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(kind) or []):
            refusals += _container_refusals(
                f"spec.{kind}[{index}]", container, spec, init=kind != "containers"
            )
    return refusals


def _pod_refusals(spec: Manifest) -> Iterator[Refusal]:
    if spec.get("hostPID"):
        yield Refusal("spec.hostPID", f"sharing the host's process namespace {UNSUPPORTED}")
    if spec.get("hostIPC"):
        yield Refusal("spec.hostIPC", f"sharing the host's IPC namespace {UNSUPPORTED}")
    if spec.get("shareProcessNamespace"):
        yield Refusal(
            "spec.shareProcessNamespace", f"a process namespace shared by the pod's containers {UNSUPPORTED}"
        )
    if spec.get("hostUsers") is False:
        yield Refusal("spec.hostUsers", f"a user namespace {UNSUPPORTED}")
    if spec.get("runtimeClassName"):
        yield Refusal("spec.runtimeClassName", "runtime classes are not supported by the local node")
    if spec.get("setHostnameAsFQDN"):
        yield Refusal("spec.setHostnameAsFQDN", f"a fully qualified hostname {UNSUPPORTED}")
    if spec.get("hostnameOverride"):
        yield Refusal("spec.hostnameOverride", f"overriding the hostname {UNSUPPORTED}")
    if (system := (spec.get("os") or {}).get("name", "linux")) != "linux":
        yield Refusal("spec.os.name", f"{system} pods are not supported by the local node")
    if spec.get("resourceClaims"):
        yield Refusal("spec.resourceClaims", f"dynamic resource allocation {UNSUPPORTED}")
    if (spec.get("resources") or {}).get("limits"):
        yield Refusal("spec.resources.limits", "pod-level resource limits are not enforced by the local node")


def _security_refusals(path: str, context: Manifest | None) -> Iterator[Refusal]:
    """Refusals in a pod's or a container's securityContext (the fields both have)."""
    context = context or {}
    if context.get("sysctls"):
        yield Refusal(f"{path}.sysctls", f"setting sysctls {UNSUPPORTED}")
    if context.get("seLinuxOptions"):
        yield Refusal(f"{path}.seLinuxOptions", "SELinux labels are not supported by the local node")
    if context.get("windowsOptions"):
        yield Refusal(f"{path}.windowsOptions", "Windows options are not supported by the local node")
    if (context.get("seccompProfile") or {}).get("type") == "Localhost":
        yield Refusal(f"{path}.seccompProfile.type", f"a Localhost seccomp profile {UNSUPPORTED}")
    if (profile := (context.get("appArmorProfile") or {}).get("type", "Unconfined")) != "Unconfined":
        # As the kubelet on a host without AppArmor: it refuses any profile rather than run unconfined.
        yield Refusal(f"{path}.appArmorProfile.type", f"an AppArmor profile ({profile}) {UNSUPPORTED}")
    if (context.get("capabilities") or {}).get("add"):
        yield Refusal(f"{path}.capabilities.add", f"adding capabilities {UNSUPPORTED}")
    if context.get("privileged"):
        yield Refusal(f"{path}.privileged", "privileged containers are not supported by the local node")
    if context.get("procMount", "Default") != "Default":
        yield Refusal(f"{path}.procMount", f"an unmasked /proc {UNSUPPORTED}")


def _volume_refusals(path: str, volume: Manifest) -> Iterator[Refusal]:
    kinds = sorted(set(volume) - {"name"})
    for kind in kinds:
        if kind not in SUPPORTED_VOLUMES:
            yield Refusal(f"{path}.{kind}", f"{kind} volumes are not supported by the local node")
    if (empty_dir := volume.get("emptyDir")) is not None and empty_dir.get("sizeLimit") is not None:
        yield Refusal(f"{path}.emptyDir.sizeLimit", "emptyDir size limits are not enforced by the local node")
    if (host_path := volume.get("hostPath")) is not None and host_path.get("type", "") not in (
        FOLDER_HOST_PATH_TYPES
    ):
        yield Refusal(
            f"{path}.hostPath.type",
            f"a hostPath of type {host_path['type']} {UNSUPPORTED} (folders only)",
        )
    for index, source in enumerate((volume.get("projected") or {}).get("sources") or []):
        for kind in sorted(set(source) - SUPPORTED_PROJECTIONS):
            yield Refusal(f"{path}.projected.sources[{index}].{kind}", f"a {kind} projection {UNSUPPORTED}")


def _container_refusals(path: str, container: Manifest, spec: Manifest, *, init: bool) -> Iterator[Refusal]:
    yield from _port_refusals(path, container, host_network=bool(spec.get("hostNetwork")))
    yield from _resource_refusals(path, container)
    yield from _mount_refusals(path, container)
    yield from _probe_refusals(path, container)
    yield from _security_refusals(f"{path}.securityContext", container.get("securityContext"))
    if container.get("restartPolicy") and not init:
        yield Refusal(f"{path}.restartPolicy", f"a restart policy per container {UNSUPPORTED}")
    if container.get("restartPolicyRules"):
        yield Refusal(
            f"{path}.restartPolicyRules", "container restart rules are not supported by the local node"
        )
    if ((container.get("lifecycle") or {}).get("stopSignal")) is not None:
        yield Refusal(f"{path}.lifecycle.stopSignal", f"a stop signal other than SIGTERM {UNSUPPORTED}")
    for key in ("stdin", "tty"):
        if container.get(key):
            yield Refusal(f"{path}.{key}", f"attaching a terminal or stdin {UNSUPPORTED}")
    for index, variable in enumerate(container.get("env") or []):
        if "fileKeyRef" in (variable.get("valueFrom") or {}):
            yield Refusal(
                f"{path}.env[{index}].valueFrom.fileKeyRef", f"environment from files {UNSUPPORTED}"
            )


def _port_refusals(path: str, container: Manifest, *, host_network: bool) -> Iterator[Refusal]:
    for index, port in enumerate(container.get("ports") or []):
        host_port = port.get("hostPort")
        # With hostNetwork the API server sets hostPort to containerPort: the port is the host's anyway.
        if host_port and not (host_network and host_port == port.get("containerPort")):
            yield Refusal(f"{path}.ports[{index}].hostPort", "host ports are not supported by the local node")
        if port.get("hostIP"):
            yield Refusal(f"{path}.ports[{index}].hostIP", "host ports are not supported by the local node")


def _resource_refusals(path: str, container: Manifest) -> Iterator[Refusal]:
    resources = container.get("resources") or {}
    for name in sorted(set(resources.get("limits") or {}) - ENFORCED_LIMITS):
        yield Refusal(
            f"{path}.resources.limits.{name}", "only cpu and memory limits are enforced by the local node"
        )
    if resources.get("claims"):
        yield Refusal(f"{path}.resources.claims", f"dynamic resource allocation {UNSUPPORTED}")
    if container.get("volumeDevices"):
        yield Refusal(f"{path}.volumeDevices", "raw block devices are not supported by the local node")


def _mount_refusals(path: str, container: Manifest) -> Iterator[Refusal]:
    for index, mount in enumerate(container.get("volumeMounts") or []):
        where = f"{path}.volumeMounts[{index}]"
        if mount.get("mountPropagation", "None") != "None":
            yield Refusal(f"{where}.mountPropagation", f"mount propagation {UNSUPPORTED}")
        if mount.get("subPathExpr"):
            yield Refusal(f"{where}.subPathExpr", f"subPathExpr {UNSUPPORTED} (subPath is)")
        if mount.get("recursiveReadOnly") == "Enabled":
            yield Refusal(f"{where}.recursiveReadOnly", f"a recursively read-only mount {UNSUPPORTED}")


def _probe_refusals(path: str, container: Manifest) -> Iterator[Refusal]:
    for kind in PROBES:
        probe = container.get(kind) or {}
        if "grpc" in probe:
            yield Refusal(f"{path}.{kind}.grpc", "gRPC probes are not supported by the local node")
        if probe.get("terminationGracePeriodSeconds") is not None:
            yield Refusal(
                f"{path}.{kind}.terminationGracePeriodSeconds",
                f"a probe's own grace period {UNSUPPORTED} (the pod's applies)",
            )
