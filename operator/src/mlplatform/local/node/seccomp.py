"""seccomp `RuntimeDefault`: the container runtimes' default profile, as a filter the container shim loads.

The reference is containerd's default profile (contrib/seccomp/seccomp_default.go, what `RuntimeDefault`
means on most clusters; moby's profiles/seccomp/default.json is alike) for a container with the CRI's
default capabilities, which lack CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_SYS_TIME … That profile
is an allow-list with EPERM for the rest; this filter is its complement for x86: every syscall libseccomp
2.5.4 knows on x86_64, x86 and x32 that the profile does not allow such a container fails with EPERM, clone
with a namespace flag too, and clone3 with ENOSYS (so glibc falls back to clone, whose flags a filter can
read). Everything else is allowed, also what the allow-list refuses only because it predates it: syscalls
newer than it (fchmodat2, futex_wait/wake/requeue, cachestat, map_shadow_stack, and those libseccomp does
not know yet) and the unprivileged pkey_* calls; personality is not narrowed to the profile's few personas.

pyseccomp (a ctypes binding of libseccomp.so.2) is imported only when a container asks for the profile:
its import looks the library up, which costs a shim tens of milliseconds.
"""

from __future__ import annotations

import errno
from typing import Any, Protocol, cast

Manifest = dict[str, Any]
RUNTIME_DEFAULT = "RuntimeDefault"
UNKNOWN_SYSCALL = -1  # libseccomp's __NR_SCMP_ERROR (a name of another architecture only: a pseudo number)

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


class SyscallFilter(Protocol):
    def load(self) -> None: ...


def effective_profile(pod: Manifest, container: Manifest) -> str | None:
    """The profile a container of `pod` runs under: its securityContext's seccompProfile, else the pod's;
    RuntimeDefault, or None for none at all (Unconfined, as the kubelet runs a pod that names none)."""
    for context in (container.get("securityContext"), pod["spec"].get("securityContext")):
        if profile := (context or {}).get("seccompProfile"):
            return RUNTIME_DEFAULT if profile.get("type") == RUNTIME_DEFAULT else None
    return None


def filter_for(profile: str | None) -> SyscallFilter | None:
    """The filter for `profile`, built in the shim so the container's child only loads it."""
    return runtime_default_filter() if profile == RUNTIME_DEFAULT else None


def runtime_default_filter() -> SyscallFilter:
    try:
        import pyseccomp  # noqa: PLC0415  # only here: see the module's docstring
    except (ImportError, RuntimeError) as exc:  # RuntimeError: libseccomp.so.2 is missing
        raise OSError(f"seccomp profile {RUNTIME_DEFAULT} needs libseccomp: {exc}") from exc
    syscall_filter = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    # As runc: no_new_privs only when allowPrivilegeEscalation is false, and the shim sets it then.
    syscall_filter.set_attr(pyseccomp.Attr.CTL_NNP, 0)
    if pyseccomp.system_arch() == pyseccomp.Arch.X86_64:  # 32-bit and x32 calls, as the runtimes filter
        for arch in (pyseccomp.Arch.X86, pyseccomp.Arch.X32):
            syscall_filter.add_arch(arch)
    for name in DENIED:
        if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name) != UNKNOWN_SYSCALL:  # older libseccomp
            syscall_filter.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
    for flag in NAMESPACE_FLAGS:
        syscall_filter.add_rule(
            pyseccomp.ERRNO(errno.EPERM), "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag)
        )
    syscall_filter.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    return cast(SyscallFilter, syscall_filter)
