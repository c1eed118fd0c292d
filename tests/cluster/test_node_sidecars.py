"""Native sidecars (init containers with restartPolicy Always) on the local node, as the kubelet runs them:
a sidecar starts in the init sequence and the next container starts once it has started (startup probe
passed); it runs beside the main containers, restarted whenever it ends, without failing the pod; its
readiness counts towards the pod's; a Job completes when its main container ends, the node then stopping the
sidecar (its exit code counts for nothing); on deletion the main containers stop first, then the sidecars in
reverse order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kube import container_state, eventually, is_ready, job_outcome, pod, pod_events, pods_of, python_pod

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_node")]
Manifest = dict[str, Any]


def sidecar(name: str, command: list[str], **container: Any) -> Manifest:
    return {"name": name, "image": "python:3.11", "restartPolicy": "Always", "command": command, **container}


def host_folder(name: str, path: Path) -> Manifest:
    return {"name": name, "hostPath": {"path": str(path), "type": "Directory"}}


def first_finished_status(core: client.CoreV1Api, namespace: str, name: str, version: str) -> client.V1Pod:
    """The first status, watched from `version` on, that shows the pod Succeeded or Failed."""
    for event in pod_events(core, namespace, name, version):
        if event["object"].status.phase in ("Succeeded", "Failed"):
            return event["object"]
    raise AssertionError(f"pod {name} did not finish within 90 s")


# Listens only after 2 s: the containers after it can only reach it if the node waited for its startup probe.
# As PID 1 of its container it must handle SIGTERM itself; it ends as the signal would (143).
SERVER = """
import http.server, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
time.sleep(2)
class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"sidecar says hi")
http.server.HTTPServer(("", 8080), Hello).serve_forever()
"""
FETCH = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/', timeout=5).read().decode())"
FOREVER = "import time\nwhile True: time.sleep(1)"


def test_a_job_completes_when_its_main_container_ends_beside_a_sidecar(
    api_client: client.ApiClient, namespace: str
) -> None:
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    server = sidecar(
        "server",
        ["python3", "-c", SERVER],
        startupProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 30},
    )
    check = {"name": "check", "image": "python:3.11", "command": ["python3", "-c", FETCH]}
    template = python_pod("unused", FETCH, initContainers=[server, check])
    job: Manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "with-sidecar"},
        "spec": {"backoffLimit": 0, "template": {"spec": template["spec"]}},
    }
    batch.create_namespaced_job(namespace, job)
    assert job_outcome(api_client, namespace, "with-sidecar", timeout=120) == "Complete"
    [found] = pods_of(core, namespace, "job-name=with-sidecar")
    assert found.status.phase == "Succeeded"
    statuses = {s.name: s for s in found.status.init_container_statuses}
    checked, main = statuses["check"].state.terminated, container_state(found).terminated
    assert (checked.exit_code, main.exit_code) == (0, 0)  # both reached the sidecar over localhost
    log = core.read_namespaced_pod_log(found.metadata.name, namespace, container="main")
    assert log.strip() == "sidecar says hi"
    # The sidecar ran through the init container and the main container, then the node stopped it: its
    # SIGTERM exit (143) did not fail the pod.
    served = statuses["server"]
    assert served.state.terminated is not None, served.state
    assert (served.state.terminated.exit_code, served.restart_count) == (143, 0)
    assert served.state.terminated.started_at <= checked.started_at
    assert served.state.terminated.finished_at >= main.finished_at


def test_a_pod_is_ready_only_once_its_sidecar_readiness_probe_passes(
    api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(api_client)
    proxy = sidecar(
        "proxy",
        ["python3", "-c", FOREVER],
        readinessProbe={"exec": {"command": ["test", "-f", "/control/ready"]}, "periodSeconds": 1},
        volumeMounts=[{"name": "control", "mountPath": "/control"}],
    )
    manifest = python_pod(
        "served",
        FOREVER,
        restartPolicy="Always",
        initContainers=[proxy],
        volumes=[host_folder("control", tmp_path)],
    )
    core.create_namespaced_pod(namespace, manifest)

    def main_ready() -> client.V1Pod | None:
        found = pod(core, namespace, "served")
        statuses = found.status.container_statuses or [] if found else []
        return found if statuses and statuses[0].ready else None

    found = eventually(main_ready, timeout=90, what="the main container ready")
    [status] = found.status.init_container_statuses
    assert status.state.running is not None and status.started and not status.ready
    assert found.status.phase == "Running" and not is_ready(found)
    ready = next(c for c in found.status.conditions if c.type == "Ready")
    assert ready.message == "containers with unready status: [proxy]"

    (tmp_path / "ready").touch()
    found = eventually(
        lambda: (p := pod(core, namespace, "served")) and is_ready(p) and p, timeout=30, what="pod Ready"
    )
    assert found.status.init_container_statuses[0].ready


def test_a_crashing_sidecar_restarts_without_failing_the_pod(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    flaky = sidecar("flaky", ["sh", "-c", "sleep 1; exit 3"])
    core.create_namespaced_pod(
        namespace, python_pod("patient", "import time; time.sleep(10)", initContainers=[flaky])
    )

    def restarted() -> client.V1Pod | None:
        found = pod(core, namespace, "patient")
        statuses = found.status.init_container_statuses or [] if found else []
        return found if statuses and statuses[0].restart_count >= 1 else None

    found = eventually(restarted, timeout=60, what="the sidecar restarted")
    assert found.status.phase == "Running"  # restartPolicy Never: yet a sidecar restarts, failing nothing
    # The first finished status, not the last: the main container ends while the sidecar waits out its
    # back-off, and no status may show the pod Succeeded with its sidecar still backing off.
    done = first_finished_status(core, namespace, "patient", found.metadata.resource_version)
    assert done.status.phase == "Succeeded"
    [status] = done.status.init_container_statuses
    assert status.state.terminated is not None and status.state.terminated.exit_code == 3, status.state


def trapping(name: str, delay: float) -> Manifest:
    """A container that, on SIGTERM, waits `delay` seconds, then writes its name to the journal and ends."""
    trap = f"trap 'sleep {delay}; echo {name} >> /journal/order; exit 0' TERM"
    return {
        "name": name,
        "image": "python:3.11",
        "command": ["sh", "-c", f"{trap}; while true; do sleep 0.2; done"],
        "volumeMounts": [{"name": "journal", "mountPath": "/journal"}],
    }


def test_on_deletion_main_containers_stop_first_then_sidecars_in_reverse_order(
    api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """Stopped all at once, the slowest (main) would write last: the order shows who waited for whom. The
    first sidecar's preStop hook runs at once, beside the main container's stop, as the kubelet runs it."""
    core = client.CoreV1Api(api_client)
    pre_stop = {"preStop": {"exec": {"command": ["sh", "-c", "echo first-pre-stop >> /journal/order"]}}}
    first = {**trapping("first", 0), "restartPolicy": "Always", "lifecycle": pre_stop}
    second = {**trapping("second", 0.5), "restartPolicy": "Always"}
    manifest: Manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ordered"},
        "spec": {
            "terminationGracePeriodSeconds": 20,
            "initContainers": [first, second],
            "containers": [trapping("main", 2)],
            "volumes": [host_folder("journal", tmp_path)],
        },
    }
    core.create_namespaced_pod(namespace, manifest)

    def all_running() -> client.V1Pod | None:
        found = pod(core, namespace, "ordered")
        if found is None:
            return None
        statuses = [*(found.status.init_container_statuses or []), *(found.status.container_statuses or [])]
        return found if len(statuses) == 3 and all(s.state.running for s in statuses) else None

    eventually(all_running, timeout=90, what="every container running")
    core.delete_namespaced_pod("ordered", namespace)
    eventually(lambda: pod(core, namespace, "ordered") is None, timeout=60, what="the pod gone")
    order = (tmp_path / "order").read_text().split()
    assert order == ["first-pre-stop", "main", "second", "first"]
