"""The local node's container runtime runs processes as a container runtime does: each container in its
own PID namespace with its entrypoint as PID 1, seeing none of the pod's other processes; deletion sends
SIGTERM to that PID 1, which the kernel drops if PID 1 has no handler for it, so SIGKILL ends it after the
grace period (a shell's `trap … TERM`: see test_node_kubelet_parity); `readOnlyRootFilesystem` leaves
only the container's volumes and the runtime's /dev writable; root has the runtimes' default
capabilities, less those dropped; seccomp `RuntimeDefault` refuses what the runtimes' default profile
refuses. (A recorded PID reused by another process is never signalled: see test_local_runtime.py.)
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from typing import Any

import pytest
from kubernetes import client

from kube import container_state, eventually, finished, pod, processes_with, python_pod
from mlplatform.local.node import linux, oci

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_node")]
Manifest = dict[str, Any]


def python_container(name: str, script: str, *args: str, **fields: Any) -> Manifest:
    return {"name": name, "image": "python:3.11", "command": ["python3", "-c", script, *args], **fields}


def reported(core: client.CoreV1Api, namespace: str, name: str, container: str) -> Any:
    """What a container printed last, as JSON."""
    return json.loads(core.read_namespaced_pod_log(name, namespace, container=container).splitlines()[-1])


SLEEPS = "import time; time.sleep(3600)"  # Python installs no SIGTERM handler: as PID 1 it ignores SIGTERM
LISTS_PROCESSES = """\
import json, os, time
time.sleep(2)  # the pod's other container is up by then
processes = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        processes[pid] = handle.read().decode().split("\\0")[:2]
print(json.dumps(processes))
"""


def test_the_entrypoint_is_pid_1_and_sees_none_of_the_pods_other_processes(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    marker = f"marker-{uuid.uuid4().hex}"
    manifest = python_pod("pids", LISTS_PROCESSES, terminationGracePeriodSeconds=1)
    manifest["spec"]["containers"].append(python_container("neighbour", SLEEPS, marker))
    core.create_namespaced_pod(namespace, manifest)
    eventually(lambda: processes_with(marker), timeout=60, what="the neighbour container's process")

    def main_ended() -> bool:
        state = container_state(pod(core, namespace, "pids"), "main")
        return state is not None and state.terminated is not None

    eventually(main_ended, timeout=60, what="main ended")
    assert reported(core, namespace, "pids", "main") == {"1": ["python3", "-c"]}
    assert processes_with(marker), "the neighbour ran beside it all along"


def test_deletion_signals_pid_1_which_ignores_sigterm_without_a_handler_until_sigkill(
    api_client: client.ApiClient, namespace: str
) -> None:
    """As under Docker or containerd: a PID 1 with no SIGTERM handler lives on to the grace period's end."""
    core = client.CoreV1Api(api_client)
    marker = f"marker-{uuid.uuid4().hex}"
    core.create_namespaced_pod(namespace, python_pod("pid1", SLEEPS, marker, terminationGracePeriodSeconds=3))
    [process] = eventually(lambda: processes_with(marker), timeout=60, what="the container's process")
    started = time.monotonic()
    core.delete_namespaced_pod("pid1", namespace)
    time.sleep(1.5)
    assert process.is_running(), "SIGTERM ended a PID 1 that has no handler for it"
    eventually(lambda: not process.is_running(), timeout=30, what="SIGKILL at the grace period's end")
    assert time.monotonic() - started >= 2.5


TRIES_WRITES = """\
import errno, json
results = {}
for path in ("/probe", "/tmp/probe", "/usr/probe", "/etc/probe", "/data/probe", "/dev/shm/probe"):
    try:
        with open(path, "w") as handle:
            handle.write("x")
        results[path] = "ok"
    except OSError as exc:
        results[path] = errno.errorcode[exc.errno]
print(json.dumps(results))
"""


def test_a_read_only_root_filesystem_refuses_writes_but_to_volumes_and_dev(
    api_client: client.ApiClient, namespace: str
) -> None:
    """/tmp is the root's too, as on a cluster; the pod's other container still writes its own root."""
    core = client.CoreV1Api(api_client)
    data = {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    manifest = python_pod(
        "readonly",
        TRIES_WRITES,
        container={**data, "securityContext": {"readOnlyRootFilesystem": True}},
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    manifest["spec"]["containers"].append(python_container("writable", TRIES_WRITES, **data))
    core.create_namespaced_pod(namespace, manifest)
    assert finished(core, namespace, "readonly", timeout=90).status.phase == "Succeeded"
    root = ("/probe", "/tmp/probe", "/usr/probe", "/etc/probe")
    locked = reported(core, namespace, "readonly", "main")
    assert locked == {**dict.fromkeys(root, "EROFS"), "/data/probe": "ok", "/dev/shm/probe": "ok"}
    assert set(reported(core, namespace, "readonly", "writable").values()) == {"ok"}


CHOWNS = """\
import errno, json, os
with open("/tmp/owned", "w"):
    pass
try:
    os.chown("/tmp/owned", 1234, 1234)
    result = "ok"
except OSError as exc:
    result = errno.errorcode[exc.errno]
with open("/proc/self/status") as handle:
    caps = {line.split(":")[0]: int(line.split()[1], 16) for line in handle if line.startswith("Cap")}
print(json.dumps({"chown": result, **caps}))
"""
CAP_CHOWN, CAP_DAC_OVERRIDE = 0, 1
CAPABILITY_NUMBERS = {name: number for number, name in enumerate(linux.CAPABILITIES)}


def test_a_root_container_has_the_runtimes_default_capabilities_less_those_dropped(
    api_client: client.ApiClient, namespace: str
) -> None:
    """containerd's default set (CAP_CHOWN … CAP_AUDIT_WRITE: never CAP_SYS_ADMIN), as runc is told."""
    core = client.CoreV1Api(api_client)
    manifest = python_pod("caps", CHOWNS, container={"securityContext": {"capabilities": {"drop": ["ALL"]}}})
    manifest["spec"]["containers"] += [
        python_container("no-chown", CHOWNS, securityContext={"capabilities": {"drop": ["CHOWN"]}}),
        python_container("all-kept", CHOWNS),
    ]
    core.create_namespaced_pod(namespace, manifest)
    assert finished(core, namespace, "caps", timeout=90).status.phase == "Succeeded"
    none = reported(core, namespace, "caps", "main")
    assert (none["chown"], none["CapEff"], none["CapBnd"]) == ("EPERM", 0, 0)
    no_chown = reported(core, namespace, "caps", "no-chown")
    assert no_chown["chown"] == "EPERM"
    assert not no_chown["CapBnd"] & 1 << CAP_CHOWN and no_chown["CapEff"] & 1 << CAP_DAC_OVERRIDE
    all_kept = reported(core, namespace, "caps", "all-kept")
    assert all_kept["chown"] == "ok"
    defaults = sum(1 << CAPABILITY_NUMBERS[name.removeprefix("CAP_")] for name in oci.DEFAULT_CAPABILITIES)
    assert all_kept["CapBnd"] == all_kept["CapEff"] == defaults


# keyctl and clone3 work for any process unfiltered; RuntimeDefault refuses them (EPERM; ENOSYS, so that
# glibc falls back to clone). unshare fails either way without CAP_SYS_ADMIN, which containers lack.
TRIES_SYSCALLS = """\
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
KEYCTL, CLONE3, UNSHARE = 250, 435, 272  # x86_64
GET_KEYRING_ID, SESSION_KEYRING, CLONE_NEWUTS = 0, -3, 0x04000000

def outcome(result):
    return "ok" if result >= 0 else errno.errorcode[ctypes.get_errno()]

child = os.fork()
if child == 0:
    os._exit(7)
with open("/proc/self/status") as handle:
    fields = dict(line.split(":", 1) for line in handle)
print(json.dumps({
    "keyctl": outcome(libc.syscall(KEYCTL, GET_KEYRING_ID, SESSION_KEYRING, 0)),
    "clone3": outcome(libc.syscall(CLONE3, None, 0)),
    "unshare": outcome(libc.syscall(UNSHARE, CLONE_NEWUTS)),
    "fork": os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]),
    **{k: int(fields[k]) for k in ("Seccomp", "NoNewPrivs")},
}))
"""
RUNTIME_DEFAULT = {"seccompProfile": {"type": "RuntimeDefault"}}
NON_ROOT = {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True}
RESTRICTED = {**NON_ROOT, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
FILTERED = {"keyctl": "EPERM", "clone3": "ENOSYS", "unshare": "EPERM", "fork": 7, "Seccomp": 2}


def test_seccomp_runtime_default_refuses_what_the_runtimes_refuse_for_root_and_non_root_containers(
    api_client: client.ApiClient, namespace: str
) -> None:
    """Seccomp 2 is filter mode; a restricted container (no_new_privs) gets the filter too."""
    core = client.CoreV1Api(api_client)
    manifest = python_pod("seccomp", TRIES_SYSCALLS, container={"securityContext": RUNTIME_DEFAULT})
    manifest["spec"]["containers"] += [
        python_container("no-profile", TRIES_SYSCALLS),
        python_container("non-root", TRIES_SYSCALLS, securityContext={**NON_ROOT, **RUNTIME_DEFAULT}),
        python_container("restricted", TRIES_SYSCALLS, securityContext={**RESTRICTED, **RUNTIME_DEFAULT}),
    ]
    core.create_namespaced_pod(namespace, manifest)
    assert finished(core, namespace, "seccomp", timeout=90).status.phase == "Succeeded"
    names = ("main", "no-profile", "non-root", "restricted")
    assert {name: reported(core, namespace, "seccomp", name) for name in names} == {
        "main": {**FILTERED, "NoNewPrivs": 0},  # root
        "no-profile": {
            "keyctl": "ok",
            "clone3": "EINVAL",
            "unshare": "EPERM",
            "fork": 7,
            "Seccomp": 0,
            "NoNewPrivs": 0,
        },
        "non-root": {**FILTERED, "NoNewPrivs": 0},
        "restricted": {**FILTERED, "NoNewPrivs": 1},
    }


# A System V shared memory segment, made by one container and looked up by key from another.
SHARES_MEMORY = """\
import ctypes, json, sys, time
libc = ctypes.CDLL(None, use_errno=True)
KEY, IPC_CREAT = 0x4D4C50, 0o1000
if sys.argv[1] == "make":
    assert libc.shmget(KEY, 4096, IPC_CREAT | 0o600) >= 0
    time.sleep(3600)
deadline = time.monotonic() + 30
while libc.shmget(KEY, 0, 0) < 0 and time.monotonic() < deadline:
    time.sleep(0.1)
print(json.dumps({"found": libc.shmget(KEY, 0, 0) >= 0}))
"""
SEGMENT_KEY = "0x004d4c50"


def test_a_pods_containers_share_its_ipc_namespace_and_the_host_does_not(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    manifest = python_pod("ipc", SHARES_MEMORY, "make", terminationGracePeriodSeconds=1)
    manifest["spec"]["containers"].append(python_container("finder", SHARES_MEMORY, "find"))
    core.create_namespaced_pod(namespace, manifest)

    def finder_done() -> Any:
        state = container_state(core.read_namespaced_pod("ipc", namespace), "finder")
        return state and state.terminated

    assert eventually(finder_done, timeout=90, what="the finder container ends").exit_code == 0
    assert reported(core, namespace, "ipc", "finder") == {"found": True}
    host_segments = subprocess.run(["ipcs", "-m"], capture_output=True, text=True, check=True).stdout
    assert SEGMENT_KEY not in host_segments, "the pod's segment is in the host's IPC namespace"


def test_a_container_whose_shim_vanished_is_reported_unknown_and_ended_before_it_restarts(
    api_client: client.ApiClient, namespace: str
) -> None:
    """A container outlives its shim, as under containerd; the node must not run two of it."""
    core = client.CoreV1Api(api_client)
    marker = f"marker-{uuid.uuid4().hex}"
    manifest = python_pod("orphan", SLEEPS, marker, restartPolicy="Always", terminationGracePeriodSeconds=1)
    core.create_namespaced_pod(namespace, manifest)
    [first] = eventually(lambda: processes_with(marker), timeout=60, what="the container's process")
    shim = first.parent()
    assert shim is not None and "mlplatform.local.node.shim" in shim.cmdline(), "the shim is its parent"
    shim.kill()

    def restarted() -> Any:
        statuses = pod(core, namespace, "orphan").status.container_statuses  # None until first reported
        status = statuses[0] if statuses else None
        return status and status.restart_count >= 1 and status.state.running and status.last_state.terminated

    last = eventually(restarted, timeout=60, what="the container restarted")
    assert last.reason == "ContainerStatusUnknown"
    assert first.pid not in [p.pid for p in processes_with(marker)], "the first runs beside the second"
    assert processes_with(marker), "the second attempt runs"


def test_a_command_runc_cannot_run_ends_in_start_error_with_runcs_message(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    manifest = python_pod("no-command", "")
    manifest["spec"]["containers"][0]["command"] = ["no-such-command"]
    core.create_namespaced_pod(namespace, manifest)
    ended = finished(core, namespace, "no-command", timeout=60)
    terminated = ended.status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("StartError", 128)
    assert 'exec: "no-such-command": executable file not found in $PATH' in terminated.message
