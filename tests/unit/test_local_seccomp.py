"""seccomp `RuntimeDefault` on the local node: which profile a container runs under (its own security
context's, else the pod's), and the filter itself, loaded for real in a child process: what the container
runtimes' default profile refuses fails (unshare and clone with a namespace flag, keyctl: EPERM; clone3:
ENOSYS, so glibc falls back to clone), while ordinary work, fork included, goes on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

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


TRIES_SYSCALLS = """\
import ctypes, errno, json, os, sys
import pyseccomp
from mlplatform.local.node import linux, seccomp

if sys.argv[1] == "filtered":
    seccomp.runtime_default_filter().load()
libc = ctypes.CDLL(None, use_errno=True)
number = {name: pyseccomp.resolve_syscall(0, name) for name in ("keyctl", "clone", "clone3")}  # 0: native

def outcome(result):
    return "ok" if result >= 0 else errno.errorcode[ctypes.get_errno()]

results = {}
try:
    linux.unshare(linux.CLONE_NEWUTS)
    results["unshare"] = "ok"
except OSError as exc:
    results["unshare"] = errno.errorcode[exc.errno]
GET_KEYRING_ID, SESSION_KEYRING = 0, -3
results["keyctl"] = outcome(libc.syscall(number["keyctl"], GET_KEYRING_ID, SESSION_KEYRING, 0))
clone = libc.syscall(number["clone"], linux.CLONE_NEWUTS | 17, 0, 0, 0, 0)  # 17: SIGCHLD, as fork
if clone == 0:
    os._exit(0)  # the child of an unfiltered clone
results["clone with a namespace flag"] = outcome(clone)
results["clone3"] = outcome(libc.syscall(number["clone3"], None, 0))
child = os.fork()
if child == 0:
    os._exit(7)
results["fork"] = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
with open("/proc/self/status") as handle:
    results["Seccomp"] = next(int(line.split()[1]) for line in handle if line.startswith("Seccomp:"))
print(json.dumps(results))
"""


def tries_syscalls(mode: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", TRIES_SYSCALLS, mode], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(os.geteuid() != 0, reason="without root, unshare fails for want of CAP_SYS_ADMIN anyway")
def test_the_runtime_default_filter_refuses_what_the_runtimes_refuse_and_allows_the_rest() -> None:
    unfiltered = tries_syscalls("unfiltered")
    assert unfiltered["unshare"] == unfiltered["clone with a namespace flag"] == "ok", "root may, unfiltered"
    assert unfiltered["Seccomp"] == 0
    assert tries_syscalls("filtered") == {
        "unshare": "EPERM",
        "keyctl": "EPERM",
        "clone with a namespace flag": "EPERM",
        "clone3": "ENOSYS",
        "fork": 7,
        "Seccomp": 2,  # SECCOMP_MODE_FILTER
    }
