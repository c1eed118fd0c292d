"""seccomp `RuntimeDefault`: which system calls the container runtimes' default profile refuses.

The reference is containerd's default profile (contrib/seccomp/seccomp_default.go, what `RuntimeDefault`
means on most clusters; moby's profiles/seccomp/default.json is alike) for a container with the CRI's
default capabilities, which lack CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_SYS_TIME … That profile
is an allow-list with EPERM for the rest; this is its complement for x86: every syscall libseccomp 2.5.4
knows on x86_64, x86 and x32 that the profile does not allow such a container, clone with a namespace
flag, and clone3 (oci.py turns these into the OCI seccomp section runc loads). Everything else is allowed,
also what the allow-list refuses only because it predates it: syscalls newer than it (fchmodat2,
futex_wait/wake/requeue, cachestat, map_shadow_stack) and the unprivileged pkey_* calls; personality is
not narrowed to the profile's few personas.
"""

from __future__ import annotations

from typing import Any

Manifest = dict[str, Any]
RUNTIME_DEFAULT = "RuntimeDefault"

# CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET: the
# flags the profile refuses in clone's first argument without CAP_SYS_ADMIN.
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)

# fmt: off
DENIED = (
    # granted by the profile only with CAP_SYS_ADMIN (mounts, namespaces, hostnames, kernel probes)
    "bpf", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "lookup_dcookie", "mount",
    "mount_setattr", "move_mount", "name_to_handle_at", "open_tree", "perf_event_open", "quotactl",
    "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount", "umount2", "unshare",
    # … with CAP_DAC_READ_SEARCH, CAP_SYS_BOOT, CAP_SYS_MODULE, CAP_SYS_PACCT, CAP_SYS_RAWIO
    "open_by_handle_at", "reboot", "delete_module", "finit_module", "init_module", "acct", "ioperm", "iopl",
    # … with CAP_SYS_PTRACE (ptrace itself is allowed from kernel 4.8 on), CAP_SYS_TIME, CAP_SYS_TTY_CONFIG
    "kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev",
    "clock_settime", "clock_settime64", "settimeofday", "stime", "vhangup",
    # never allowed: the kernel keyring, NUMA placement, swap, kexec, pivot_root, userfaultfd …
    "add_key", "keyctl", "request_key", "get_mempolicy", "mbind", "migrate_pages", "move_pages",
    "set_mempolicy", "set_mempolicy_home_node", "kexec_file_load", "kexec_load", "pivot_root",
    "swapoff", "swapon", "userfaultfd", "_sysctl", "sysfs", "uselib", "ustat", "nfsservctl",
    "create_module", "get_kernel_syms", "query_module",
    # … and the obsolete or unimplemented ones, most of them x86 (32-bit) only
    "afs_syscall", "bdflush", "break", "ftime", "getpmsg", "gtty", "idle", "lock", "mpx", "nice",
    "oldfstat", "oldlstat", "oldolduname", "oldstat", "olduname", "prof", "profil", "putpmsg", "readdir",
    "security", "sgetmask", "sigaction", "signal", "sigpending", "sigsuspend", "ssetmask", "stty",
    "tuxcall", "ulimit", "vm86", "vm86old", "vserver",
)
# fmt: on


def effective_profile(pod: Manifest, container: Manifest) -> str | None:
    """The profile a container of `pod` runs under: its securityContext's seccompProfile, else the pod's;
    RuntimeDefault, or None for none at all (Unconfined, as the kubelet runs a pod that names none)."""
    for context in (container.get("securityContext"), pod["spec"].get("securityContext")):
        if profile := (context or {}).get("seccompProfile"):
            return RUNTIME_DEFAULT if profile.get("type") == RUNTIME_DEFAULT else None
    return None
