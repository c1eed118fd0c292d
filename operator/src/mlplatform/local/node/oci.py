"""The OCI runtime config (`config.json`) runc runs a container from, built from the shim's ContainerSpec.

Pure, so unit tests read what a container gets. What runc is told matches what containerd's CRI plugin
tells it for a Kubernetes container: its default capabilities, masked and read-only /proc paths, a
devices cgroup that allows the usual character devices only, and for `RuntimeDefault` the seccomp
profile of seccomp.py. The bundle's root is the pod's root (the sandbox's mount namespace, bound into
the bundle by the shim), so the container sees the pod's files, /dev, /tmp and /etc/hosts; runc adds its
own PID and mount namespaces, a /proc of its own, the container's mounts, identity and limits.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from mlplatform.local.node import linux, seccomp
from mlplatform.local.node.sandbox import POD_PRIVATE

if TYPE_CHECKING:  # the shim imports this module
    from mlplatform.local.node.shim import ContainerSpec

Manifest = dict[str, Any]
OCI_VERSION = "1.0.2"
# containerd's defaults for a CRI container (pkg/oci/spec.go, pkg/cri/opts/spec_linux.go).
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    POD_PRIVATE,
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
PROC_OPTIONS = ["nosuid", "noexec", "nodev"]
DENY_ALL_DEVICES = {"allow": False, "access": "rwm"}  # runc appends its allowed ones (null, zero, tty …)
SECCOMP_ARCHITECTURES = ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")


def capabilities(drop: list[str]) -> list[str]:
    """The default capabilities without those `drop` names (as a securityContext names them; ALL: all)."""
    dropped = {name.upper().removeprefix("CAP_") for name in drop}
    if "ALL" in dropped:
        return []
    if unknown := sorted(dropped - set(linux.CAPABILITIES)):
        raise ValueError(f"unknown capability {unknown[0]!r} in securityContext.capabilities.drop")
    return [name for name in DEFAULT_CAPABILITIES if name.removeprefix("CAP_") not in dropped]


def seccomp_profile() -> Manifest:
    """`RuntimeDefault` as an OCI seccomp section: seccomp.DENIED fail with EPERM, clone with a namespace
    flag too, clone3 with ENOSYS (glibc then falls back to clone, whose flags a filter can read)."""
    clone_rules = [
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": errno.EPERM,
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
        }
        for flag in seccomp.NAMESPACE_FLAGS
    ]
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": list(SECCOMP_ARCHITECTURES),
        "syscalls": [
            {"names": list(seccomp.DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
            *clone_rules,
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
        ],
    }


def _mount(source: str, target: str, readonly: bool) -> Manifest:
    return {
        "destination": target,
        "type": "bind",
        "source": source,
        "options": ["rbind", "ro" if readonly else "rw"],
    }


def config(spec: ContainerSpec, *, rootfs: str, read_only_paths: list[str], cgroup_path: str) -> Manifest:
    """The config runc creates the container from; `read_only_paths` are the pod root's mount points a
    read-only root makes read-only besides the root itself."""
    identity = spec.identity
    caps = capabilities(identity.drop_capabilities)
    linux: Manifest = {
        # The network, UTS and IPC namespaces are the sandbox's: runc is started inside them.
        "namespaces": [{"type": "pid"}, {"type": "mount"}],
        "cgroupsPath": cgroup_path,
        "resources": {"devices": [DENY_ALL_DEVICES]},
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": [*READONLY_PATHS, *(read_only_paths if spec.read_only_root else [])],
    }
    if spec.seccomp == seccomp.RUNTIME_DEFAULT:
        linux["seccomp"] = seccomp_profile()
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {
                "uid": identity.uid or 0,
                "gid": identity.gid or 0,
                "additionalGids": list(identity.groups),
            },
            "args": list(spec.argv),
            "env": [f"{key}={value}" for key, value in spec.env.items()],
            "cwd": spec.working_dir,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": identity.no_new_privs,
        },
        "root": {"path": rootfs, "readonly": spec.read_only_root},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": PROC_OPTIONS},
            *(_mount(m.source, m.target, m.readonly) for m in spec.mounts),
        ],
        "linux": linux,
    }
