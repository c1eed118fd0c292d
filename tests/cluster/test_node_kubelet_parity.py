"""The local node does what the kubelet does where the platform relies on it: termination messages (from
the container's file, or its log's tail on error), a deleted pod's final status written before the pod
goes, default signal dispositions in the container (a shell's `trap … TERM` runs on deletion), and
startup probes that stop after their first success."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client, watch

from kube import eventually, finished, pod, python_pod
from mlplatform.local.config import LocalConfig

pytestmark = pytest.mark.cluster
Manifest = dict[str, Any]


@pytest.fixture(autouse=True)
def _needs_node(local_cluster: LocalConfig) -> None:
    if not local_cluster.node:
        pytest.skip("the local node needs root")


def shell(name: str, script: str, **container: Any) -> Manifest:
    return {"name": name, "image": "python:3.11", "command": ["sh", "-c", script], **container}


def pod_of(name: str, *containers: Manifest, **spec: Any) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            **spec,
            "containers": list(containers),
        },
    }


def terminated(found: client.V1Pod, name: str) -> client.V1ContainerStateTerminated:
    status = next(s for s in found.status.container_statuses if s.name == name)
    assert status.state.terminated is not None, f"{name}: {status.state}"
    return status.state.terminated


def statuses_until_deleted(core: client.CoreV1Api, namespace: str, name: str, version: str) -> list[Manifest]:
    """Every status the pod `name` shows from `version` on, up to and including its DELETED event."""
    seen: list[Manifest] = []
    stream = watch.Watch()
    for event in stream.stream(
        core.list_namespaced_pod,
        namespace,
        field_selector=f"metadata.name={name}",
        resource_version=version,
        timeout_seconds=90,
    ):
        found = event["object"]
        states = {s.name: s.state for s in found.status.container_statuses or []}
        seen.append({"type": event["type"], "phase": found.status.phase, "states": states})
        if event["type"] == "DELETED":
            stream.stop()
    assert seen and seen[-1]["type"] == "DELETED", f"the pod was not deleted: {seen}"
    return seen


def running(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod | None:
    found = pod(core, namespace, name)
    statuses = found.status.container_statuses or [] if found else []
    return found if statuses and all(s.state.running for s in statuses) else None


def test_the_termination_message_is_what_the_container_wrote_to_its_file(
    api_client: client.ApiClient, namespace: str
) -> None:
    """Each container has its own file at its terminationMessagePath, writable by its user; its last
    4096 bytes become state.terminated.message."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(
        namespace,
        pod_of(
            "messages",
            shell(
                "nonroot",
                "echo 'trainer failed: loss is NaN' > /dev/termination-log; exit 1",
                securityContext={"runAsUser": 1000, "runAsGroup": 1000},
            ),
            shell("custom-path", "printf 'written elsewhere' > /tmp/why", terminationMessagePath="/tmp/why"),
            shell(
                "long",
                "(head -c 5000 /dev/zero | tr '\\0' a; printf END) > /dev/termination-log",
            ),
            shell("silent", "exit 0"),
        ),
    )
    found = finished(core, namespace, "messages", timeout=90)
    assert found.status.phase == "Failed"
    nonroot = terminated(found, "nonroot")
    assert (nonroot.exit_code, nonroot.message) == (1, "trainer failed: loss is NaN\n")
    assert terminated(found, "custom-path").message == "written elsewhere"
    long = terminated(found, "long").message
    assert len(long) == 4096 and long.endswith("aaaEND"), long[-20:]
    assert terminated(found, "silent").message is None


def test_fallback_to_logs_on_error_takes_the_last_80_lines_of_a_failed_container(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    fallback = {"terminationMessagePolicy": "FallbackToLogsOnError"}
    lines = "for i in $(seq 0 99); do echo line $i; done"
    core.create_namespaced_pod(
        namespace,
        pod_of(
            "fallback",
            shell("fails", f"{lines}; exit 3", **fallback),
            shell("succeeds", f"{lines}; exit 0", **fallback),
            shell("file-wins", f"{lines}; echo from the file > /dev/termination-log; exit 3", **fallback),
            shell(
                "big-lines",
                "for i in $(seq 0 9); do head -c 999 /dev/zero | tr '\\0' x; echo; done; exit 1",
                **fallback,
            ),
        ),
    )
    found = finished(core, namespace, "fallback", timeout=90)
    fails = terminated(found, "fails")
    assert fails.exit_code == 3
    assert fails.message == "".join(f"line {i}\n" for i in range(20, 100))
    assert terminated(found, "succeeds").message is None
    assert terminated(found, "file-wins").message == "from the file\n"
    big = terminated(found, "big-lines").message
    assert len(big) == 2048 and big.endswith("x\n")


def test_a_deleted_job_pod_reports_its_terminated_status_before_it_goes(
    api_client: client.ApiClient, namespace: str
) -> None:
    """Kubelets since 1.27 write the terminal phase and the containers' end before the pod is removed."""
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    template = python_pod("unused", "import time\nwhile True: time.sleep(0.1)")
    batch.create_namespaced_job(
        namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "long-job"},
            "spec": {"backoffLimit": 0, "template": {"spec": template["spec"]}},
        },
    )

    def job_pod() -> client.V1Pod | None:
        pods = core.list_namespaced_pod(namespace, label_selector="job-name=long-job").items
        return pods[0] if pods and running(core, namespace, pods[0].metadata.name) else None

    found = eventually(job_pod, timeout=90, what="the job's pod running")
    name = found.metadata.name
    core.delete_namespaced_pod(name, namespace)
    seen = statuses_until_deleted(core, namespace, name, found.metadata.resource_version)
    final = [s for s in seen if s["phase"] in ("Failed", "Succeeded")]
    assert final, f"no terminal phase before the pod went: {seen}"
    ended = final[0]["states"]["main"].terminated
    assert final[0]["phase"] == "Failed"  # python dies of SIGTERM: 128 + 15
    assert (ended.exit_code, ended.reason) == (143, "Error")


TRAPS_TERM = (
    "trap 'echo got-term > /dev/termination-log; exit 0' TERM; echo waiting; while true; do sleep 0.2; done"
)


def test_a_shell_trap_on_term_runs_when_the_pod_is_deleted(
    api_client: client.ApiClient, namespace: str
) -> None:
    """Deletion sends SIGTERM to the main process, which starts with no signal ignored: the trap runs,
    writes the termination message and ends the container with 0, long before its grace period ends."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(
        namespace, pod_of("trapper", shell("main", TRAPS_TERM), terminationGracePeriodSeconds=60)
    )
    found = eventually(lambda: running(core, namespace, "trapper"), timeout=60, what="trapper running")
    # Only once the trap is set: a SIGTERM before it ends the shell with 143, as it would under runc.
    eventually(lambda: "waiting" in core.read_namespaced_pod_log("trapper", namespace), what="trap set")
    started = time.monotonic()
    core.delete_namespaced_pod("trapper", namespace)
    seen = statuses_until_deleted(core, namespace, "trapper", found.metadata.resource_version)
    elapsed = time.monotonic() - started
    final = [s for s in seen if s["phase"] in ("Failed", "Succeeded")]
    assert final, f"no terminal phase before the pod went: {seen}"
    ended = final[0]["states"]["main"].terminated
    assert (ended.exit_code, ended.message) == (0, "got-term\n")
    assert final[0]["phase"] == "Succeeded"
    assert elapsed < 30, f"deletion took {elapsed:.1f}s: the trap should end it, not the 60s grace"


def test_a_container_starts_with_no_signal_ignored_or_blocked(
    api_client: client.ApiClient, namespace: str
) -> None:
    """As runc starts it: an ignored disposition would survive exec (the shim ignores SIGTERM itself)."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(
        namespace, pod_of("signals", shell("main", "grep -E '^Sig(Blk|Ign)' /proc/self/status"))
    )
    finished(core, namespace, "signals", timeout=60)
    log = core.read_namespaced_pod_log("signals", namespace)
    masks = {key: int(value, 16) for key, value in (line.split(":\t") for line in log.splitlines())}
    # The standard signals (1-31) are the ones a program traps. glibc reserves 32 and 33 for itself and no
    # Python call can set them, so a parent that ignores 32 (as some CI runners do) is not this test's.
    standard = (1 << 31) - 1
    assert masks["SigBlk"] & standard == 0, log
    assert masks["SigIgn"] & standard == 0, log


def test_a_startup_probe_stops_after_its_first_success(api_client: client.ApiClient, namespace: str) -> None:
    """The probe would fail from its second run on: once the container started, it is never run again."""
    core = client.CoreV1Api(api_client)
    once = {
        "exec": {"command": ["sh", "-c", "test ! -e /tmp/probed && touch /tmp/probed"]},
        "periodSeconds": 1,
        "failureThreshold": 1,
    }
    core.create_namespaced_pod(
        namespace,
        python_pod(
            "started-once",
            "import time; time.sleep(3600)",
            container={"startupProbe": once},
            restartPolicy="Always",
        ),
    )

    def started() -> client.V1Pod | None:
        found = pod(core, namespace, "started-once")
        statuses = found.status.container_statuses or [] if found else []
        return found if statuses and statuses[0].started else None

    eventually(started, timeout=60, what="the startup probe succeeded")
    time.sleep(6)  # six more periods: each would fail, and one failure restarts the container
    found = pod(core, namespace, "started-once")
    assert found is not None
    [status] = found.status.container_statuses
    assert (status.restart_count, status.started, status.state.running is not None) == (0, True, True)
