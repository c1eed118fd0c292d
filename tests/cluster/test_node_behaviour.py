"""The local node behaves as a kubelet where users notice: graceful deletion (SIGTERM, then SIGKILL after
the grace period), init containers in order, restart policies with crash back-off, memory limits that
OOM-kill, securityContext users, and `kubectl logs -f` / `--previous`."""

from __future__ import annotations

import datetime
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kube import container_state, eventually, kubectl, pod, processes_with, python_pod

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_node")]


def gone(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    return pod(core, namespace, name) is None


def phase_is(core: client.CoreV1Api, namespace: str, name: str, *phases: str) -> client.V1Pod | None:
    found = pod(core, namespace, name)
    return found if found is not None and found.status.phase in phases else None


def running(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod | None:
    found = pod(core, namespace, name)
    state = container_state(found)
    return found if state is not None and state.running is not None else None


class Follower:
    """`kubectl logs -f` in the background, its lines collected as they arrive."""

    def __init__(self, kubectl_bin: Path, kubeconfig: Path, namespace: str, name: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [str(kubectl_bin), f"--kubeconfig={kubeconfig}", "logs", "-f", "-n", namespace, name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def saw(self, text: str, timeout: float = 30) -> list[str]:
        return eventually(
            lambda: [line for line in self.lines if text in line], timeout, f"log line {text!r}"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)


TRAPS_SIGTERM = """\
import signal, sys, time
def stop(*_):
    print("got SIGTERM, cleaning up", flush=True)
    time.sleep(1)
    print("clean exit", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("serving", flush=True)
while True:
    time.sleep(0.1)
"""


def test_deletion_stops_the_container_with_sigterm_first(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    """A container that handles SIGTERM gets it, runs its handler and exits long before its grace ends."""
    core = client.CoreV1Api(api_client)
    marker = f"marker-{uuid.uuid4().hex}"
    core.create_namespaced_pod(
        namespace, python_pod("polite", TRAPS_SIGTERM, marker, terminationGracePeriodSeconds=60)
    )
    eventually(lambda: running(core, namespace, "polite"), what="polite running")
    follower = Follower(kubectl_bin, kubeconfig, namespace, "polite")
    try:
        follower.saw("serving")
        [process] = processes_with(marker)
        started = time.monotonic()
        core.delete_namespaced_pod("polite", namespace)
        eventually(lambda: gone(core, namespace, "polite"), timeout=45, what="pod deleted")
        elapsed = time.monotonic() - started
        follower.saw("got SIGTERM, cleaning up", timeout=5)
    finally:
        follower.stop()
    assert elapsed < 30, f"deletion took {elapsed:.1f}s: the handler's exit should end it, not the 60s grace"
    assert not process.is_running()
    assert not processes_with(marker)


def ignores_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1]
    return bool(int(ignored, 16) & 1 << (signal.SIGTERM - 1))


def test_a_container_that_ignores_sigterm_is_killed_after_its_grace_period(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    marker = f"marker-{uuid.uuid4().hex}"
    script = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(3600)\n"
    core.create_namespaced_pod(
        namespace, python_pod("stubborn", script, marker, terminationGracePeriodSeconds=2)
    )
    eventually(lambda: running(core, namespace, "stubborn"), what="stubborn running")
    [process] = eventually(lambda: processes_with(marker), what="the container's process")
    # The container starts with SIGTERM at its default action: delete only once the script ignores it.
    eventually(lambda: ignores_sigterm(process.pid), what="the process ignores SIGTERM")
    started = time.monotonic()
    core.delete_namespaced_pod("stubborn", namespace)
    eventually(lambda: gone(core, namespace, "stubborn"), timeout=30, what="pod deleted")
    elapsed = time.monotonic() - started
    assert 1.8 <= elapsed <= 2 + 8, f"pod went away {elapsed:.1f}s after deletion with a 2s grace period"
    assert not process.is_running()
    assert not processes_with(marker)


def init_pod(name: str, first_exit: int = 0) -> dict[str, Any]:
    def container(name: str, script: str) -> dict[str, Any]:
        return {
            "name": name,
            "image": "python:3.11",
            "command": ["sh", "-c", script],
            "volumeMounts": [{"name": "work", "mountPath": "/work"}],
        }

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "initContainers": [
                # The first one is the slowest: run together, the order in the file would be wrong.
                container("first", f"sleep 1; echo first >> /work/order; exit {first_exit}"),
                container("second", "echo second >> /work/order"),
            ],
            "containers": [container("main", "echo main >> /work/order; cat /work/order")],
            "volumes": [{"name": "work", "emptyDir": {}}],
        },
    }


def test_init_containers_run_in_order_before_the_main_container(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, init_pod("ordered"))
    done = eventually(
        lambda: phase_is(core, namespace, "ordered", "Succeeded", "Failed"), what="pod finished"
    )
    assert done.status.phase == "Succeeded"
    logs = kubectl(kubectl_bin, kubeconfig, "logs", "-n", namespace, "ordered", "-c", "main").stdout
    assert logs.split() == ["first", "second", "main"]
    first, second = (s.state.terminated for s in done.status.init_container_statuses)
    assert (first.exit_code, first.reason, second.exit_code, second.reason) == (
        0,
        "Completed",
        0,
        "Completed",
    )
    assert first.finished_at <= second.started_at
    assert second.finished_at <= container_state(done).terminated.started_at
    initialized = next(c for c in done.status.conditions if c.type == "Initialized")
    assert initialized.status == "True"


def test_a_failing_init_container_with_restart_policy_never_fails_the_pod(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, init_pod("broken-init", first_exit=3))
    failed = eventually(lambda: phase_is(core, namespace, "broken-init", "Failed"), what="pod failed")
    first, second = failed.status.init_container_statuses
    assert (first.state.terminated.exit_code, first.state.terminated.reason) == (3, "Error")
    assert second.state.terminated is None and second.state.running is None  # never started
    main = container_state(failed)
    assert main.running is None and main.terminated is None  # never started
    time.sleep(2)  # nothing retries it
    again = pod(core, namespace, "broken-init")
    assert again is not None
    assert again.status.phase == "Failed" and again.status.init_container_statuses[0].restart_count == 0


@pytest.mark.parametrize("policy", ["OnFailure", "Always"])
def test_a_crashing_container_restarts_with_crash_loop_back_off(
    api_client: client.ApiClient, namespace: str, policy: str
) -> None:
    core = client.CoreV1Api(api_client)
    script = "import sys; print('crashing'); sys.exit(1)"
    core.create_namespaced_pod(namespace, python_pod("crasher", script, restartPolicy=policy))

    def backing_off() -> client.V1ContainerStatus | None:
        found = pod(core, namespace, "crasher")
        statuses = (found.status.container_statuses or []) if found else []
        status = statuses[0] if statuses else None
        waiting = status.state.waiting if status else None
        return status if waiting is not None and waiting.reason == "CrashLoopBackOff" else None

    status = eventually(backing_off, timeout=60, what="CrashLoopBackOff")
    assert status.restart_count >= 1
    assert "back-off" in status.state.waiting.message
    assert status.last_state.terminated.exit_code == 1
    assert pod(core, namespace, "crasher").status.phase == "Running"  # restarting, as the kubelet says

    def restarted_again() -> int:
        found = pod(core, namespace, "crasher")
        count = found.status.container_statuses[0].restart_count if found else 0
        return count if count > status.restart_count else 0

    eventually(restarted_again, timeout=45, what="another restart after the back-off")


def test_exceeding_the_memory_limit_is_oom_killed(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    script = "data = b'x' * (256 * 1024 * 1024)\nprint('allocated', len(data))"
    limits = {"container": {"resources": {"limits": {"memory": "64Mi"}}}}
    core.create_namespaced_pod(namespace, python_pod("hungry", script, **limits))
    failed = eventually(lambda: phase_is(core, namespace, "hungry", "Failed", "Succeeded"), what="pod ended")
    terminated = container_state(failed).terminated
    assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137)
    assert failed.status.phase == "Failed"


def test_run_as_user_runs_the_process_as_that_user(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    core = client.CoreV1Api(api_client)
    manifest = python_pod(
        "non-root",
        "import os; print('python as', os.getuid(), os.getgid())",
        securityContext={"runAsUser": 1000, "runAsGroup": 3000, "runAsNonRoot": True},
    )
    manifest["spec"]["initContainers"] = [{"name": "id", "image": "python:3.11", "command": ["id", "-u"]}]
    core.create_namespaced_pod(namespace, manifest)
    done = eventually(
        lambda: phase_is(core, namespace, "non-root", "Succeeded", "Failed"), what="pod finished"
    )
    ids = kubectl(kubectl_bin, kubeconfig, "logs", "-n", namespace, "non-root", "-c", "id", check=False)
    assert ids.returncode == 0, (ids.stderr, done.status)
    assert ids.stdout.strip() == "1000"
    logs = kubectl(kubectl_bin, kubeconfig, "logs", "-n", namespace, "non-root", "-c", "main").stdout
    assert logs.strip() == "python as 1000 3000"
    assert done.status.phase == "Succeeded"


def test_run_as_non_root_without_a_user_on_a_root_image_is_a_config_error(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(
        namespace, python_pod("rooted", "print('must not run')", securityContext={"runAsNonRoot": True})
    )

    def config_error() -> client.V1ContainerStateWaiting | None:
        state = container_state(pod(core, namespace, "rooted"))
        waiting = state.waiting if state else None
        return waiting if waiting is not None and waiting.reason == "CreateContainerConfigError" else None

    waiting = eventually(config_error, what="CreateContainerConfigError")
    assert "runAsNonRoot" in waiting.message and "root" in waiting.message
    assert pod(core, namespace, "rooted").status.phase == "Pending"


def test_logs_follow_streams_lines_printed_after_it_started(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    core = client.CoreV1Api(api_client)
    marker = f"marker-{uuid.uuid4().hex}"
    script = """\
import os, sys, time
print("ready", flush=True)
while not os.path.exists("/tmp/go"):
    time.sleep(0.05)
print("after-start", sys.argv[1], flush=True)
time.sleep(3600)
"""
    core.create_namespaced_pod(
        namespace, python_pod("talker", script, marker, terminationGracePeriodSeconds=1)
    )
    eventually(lambda: running(core, namespace, "talker"), what="talker running")
    follower = Follower(kubectl_bin, kubeconfig, namespace, "talker")
    try:
        follower.saw("ready")
        [process] = eventually(lambda: processes_with(marker), what="the container's process")
        assert not [line for line in follower.lines if "after-start" in line]
        # Let the container go on (through its own root, whose /tmp is the pod's).
        (Path("/proc", str(process.pid), "root") / "tmp" / "go").write_text("")
        assert follower.saw("after-start", timeout=15) == [f"after-start {marker}"]
        assert follower.proc.poll() is None  # still following a running container
    finally:
        follower.stop()


def test_logs_previous_shows_the_previous_attempts_output(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    core = client.CoreV1Api(api_client)
    script = """\
import pathlib, sys, time
counter = pathlib.Path("/state/count")
attempt = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(attempt + 1))
print("attempt", attempt, flush=True)
if attempt == 0:
    sys.exit(1)
time.sleep(3600)
"""
    manifest = python_pod(
        "twice",
        script,
        restartPolicy="Always",
        terminationGracePeriodSeconds=1,
        volumes=[{"name": "state", "emptyDir": {}}],
        container={"volumeMounts": [{"name": "state", "mountPath": "/state"}]},
    )
    core.create_namespaced_pod(namespace, manifest)

    def second_attempt_running() -> client.V1Pod | None:
        found = running(core, namespace, "twice")
        return found if found and found.status.container_statuses[0].restart_count == 1 else None

    found = eventually(second_attempt_running, timeout=60, what="the second attempt running")
    assert found.status.container_statuses[0].last_state.terminated.exit_code == 1

    def current_logs() -> str:
        return kubectl(kubectl_bin, kubeconfig, "logs", "-n", namespace, "twice").stdout.strip()

    current = eventually(current_logs, what="current logs")
    previous = kubectl(kubectl_bin, kubeconfig, "logs", "--previous", "-n", namespace, "twice").stdout
    assert current == "attempt 1"
    assert previous.strip() == "attempt 0"
    with_times = kubectl(
        kubectl_bin, kubeconfig, "logs", "-p", "--timestamps", "-n", namespace, "twice"
    ).stdout
    stamp = with_times.split(" ", 1)[0]
    assert datetime.datetime.fromisoformat(stamp[:26] + "+00:00") <= datetime.datetime.now(datetime.UTC)


def test_logs_are_served_while_the_pod_is_being_updated(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    """The node rewrites its record of a pod on every update; a log request must never miss the pod."""
    core = client.CoreV1Api(api_client)
    script = "import time\nprint('hello', flush=True)\ntime.sleep(3600)"
    core.create_namespaced_pod(namespace, python_pod("busy", script, terminationGracePeriodSeconds=1))
    eventually(lambda: running(core, namespace, "busy"), what="busy running")

    def logs() -> subprocess.CompletedProcess[str]:
        return kubectl(kubectl_bin, kubeconfig, "logs", "-n", namespace, "busy", check=False)

    eventually(lambda: logs().stdout.strip() == "hello", what="first log line")
    done = threading.Event()

    def keep_updating() -> None:
        count = 0
        while not done.is_set():
            count += 1
            core.patch_namespaced_pod("busy", namespace, {"metadata": {"annotations": {"n": str(count)}}})

    updater = threading.Thread(target=keep_updating, daemon=True)
    updater.start()
    try:
        answers = [logs() for _ in range(60)]
    finally:
        done.set()
        updater.join(timeout=30)
    failures = [a.stderr.strip() or a.stdout.strip() for a in answers if a.stdout.strip() != "hello"]
    assert not failures, f"{len(failures)} of {len(answers)} log requests failed, e.g. {failures[0]!r}"
