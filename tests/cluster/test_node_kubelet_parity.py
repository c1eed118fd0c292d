"""The local node does what the kubelet does where the platform relies on it: termination messages (from
the container's file, or its log's tail on error), a deleted pod's final status written before the pod
goes, default signal dispositions in the container (a shell's `trap … TERM` runs on deletion), startup
probes that stop after their first success, and lifecycle hooks: preStop before SIGTERM within the grace
period, postStart before the container counts as started."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kubernetes import client

from kube import eventually, finished, pod, pod_events, processes_with, python_pod

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_node")]
Manifest = dict[str, Any]


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
    for event in pod_events(core, namespace, name, version):
        found = event["object"]
        states = {s.name: s.state for s in found.status.container_statuses or []}
        seen.append({"type": event["type"], "phase": found.status.phase, "states": states})
        if event["type"] == "DELETED":
            break
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
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": {**template["spec"], "terminationGracePeriodSeconds": 3}},
            },
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
    # Python as the container's PID 1 has no SIGTERM handler, so the kernel drops the SIGTERM (as under
    # any container runtime) and the grace period ends in SIGKILL: 128 + 9.
    assert final[0]["phase"] == "Failed"
    assert (ended.exit_code, ended.reason) == (137, "Error")


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


# --- lifecycle hooks ---------------------------------------------------------------------------------

# Appends, so that what a preStop hook wrote to the termination log comes before it.
APPENDS_ON_TERM = (
    "trap 'echo got-term >> /dev/termination-log; exit 0' TERM; echo waiting; while true; do sleep 0.2; done"
)
# The time SIGTERM came, as the termination message.
STAMPS_TERM = (
    "trap 'date +%s.%N > /dev/termination-log; exit 0' TERM; echo waiting; while true; do sleep 0.2; done"
)


def hooks(**handlers: Manifest) -> Manifest:
    return {"lifecycle": handlers}


def exec_hook(script: str) -> Manifest:
    return {"exec": {"command": ["sh", "-c", script]}}


def events(core: client.CoreV1Api, namespace: str, reason: str) -> list[client.CoreV1Event]:
    return [e for e in core.list_namespaced_event(namespace).items if e.reason == reason]


def trapping(core: client.CoreV1Api, namespace: str, name: str, *containers: str) -> client.V1Pod:
    """Wait until every container of `name` runs with its TERM trap set; the pod as it was then."""
    found = eventually(lambda: running(core, namespace, name), timeout=60, what=f"{name} running")
    for container in containers:
        eventually(
            lambda c=container: "waiting" in core.read_namespaced_pod_log(name, namespace, container=c),
            what=f"the trap of {container} set",
        )
    return found


def final_states(core: client.CoreV1Api, namespace: str, name: str, found: client.V1Pod) -> dict[str, Any]:
    """Delete `name` and return its containers' states in the final status it reported before it went."""
    core.delete_namespaced_pod(name, namespace)
    seen = statuses_until_deleted(core, namespace, name, found.metadata.resource_version)
    final = [s for s in seen if s["phase"] in ("Failed", "Succeeded")]
    assert final, f"no terminal phase before the pod went: {seen}"
    states: dict[str, Any] = final[0]["states"]
    return states


def test_a_pre_stop_hook_runs_before_sigterm_and_a_failing_one_still_lets_sigterm_come(
    api_client: client.ApiClient, namespace: str
) -> None:
    """The hook runs in the container (it sees its /dev/termination-log) and ends before SIGTERM is sent:
    its line comes first. A hook that fails is reported (FailedPreStopHook) and SIGTERM follows anyway."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(
        namespace,
        pod_of(
            "pre-stop",
            shell(
                "ordered",
                APPENDS_ON_TERM,
                **hooks(preStop=exec_hook("echo pre-stop >> /dev/termination-log")),
            ),
            shell("failing", APPENDS_ON_TERM, **hooks(preStop=exec_hook("echo broken; exit 3"))),
            terminationGracePeriodSeconds=30,
        ),
    )
    found = trapping(core, namespace, "pre-stop", "ordered", "failing")
    started = time.monotonic()
    states = final_states(core, namespace, "pre-stop", found)
    assert time.monotonic() - started < 20, "the hooks and traps should end it long before the 30s grace"
    ordered, failing = states["ordered"].terminated, states["failing"].terminated
    assert (ordered.exit_code, ordered.message) == (0, "pre-stop\ngot-term\n")
    assert (failing.exit_code, failing.message) == (0, "got-term\n")
    failed = eventually(
        lambda: events(core, namespace, "FailedPreStopHook"), what="a FailedPreStopHook event"
    )
    assert [e.type for e in failed] == ["Warning"]
    assert "failing" in failed[0].message


def test_a_liveness_restart_runs_the_pre_stop_hook_before_sigterm(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    liveness = {
        "exec": {"command": ["false"]},
        "initialDelaySeconds": 3,
        "periodSeconds": 1,
        "failureThreshold": 1,
    }
    core.create_namespaced_pod(
        namespace,
        pod_of(
            "restarted",
            shell(
                "main",
                APPENDS_ON_TERM,
                livenessProbe=liveness,
                **hooks(preStop=exec_hook("echo pre-stop >> /dev/termination-log")),
            ),
            restartPolicy="Always",
            terminationGracePeriodSeconds=30,
        ),
    )

    def restarted() -> client.V1ContainerStateTerminated | None:
        found = pod(core, namespace, "restarted")
        statuses = found.status.container_statuses or [] if found else []
        last = statuses[0].last_state.terminated if statuses else None
        return last if last is not None and statuses[0].restart_count >= 1 else None

    last = eventually(restarted, timeout=60, what="a restart after the liveness probe failed")
    assert (last.exit_code, last.message) == (0, "pre-stop\ngot-term\n")


# The hook's own process carries the marker: a hook given up on must not outlive its container.
SLEEPS_60 = 'python3 -c "import time; time.sleep(60)" {marker}; true'


@pytest.mark.parametrize(
    ("hook", "grace", "term_after"),
    [
        pytest.param({"sleep": {"seconds": 3}}, 30, 3, id="sleep-3s-grace-30s"),
        # A hook that outlasts the grace period is given up at its end: SIGTERM comes then.
        pytest.param(exec_hook(SLEEPS_60), 3, 3, id="exec-60s-grace-3s"),
    ],
)
def test_a_pre_stop_hook_delays_sigterm_within_the_grace_period(
    api_client: client.ApiClient, namespace: str, hook: Manifest, grace: int, term_after: float
) -> None:
    core = client.CoreV1Api(api_client)
    marker = f"hook-{uuid.uuid4().hex}"
    if "exec" in hook:
        hook = exec_hook(SLEEPS_60.format(marker=marker))
    core.create_namespaced_pod(
        namespace,
        pod_of(
            "delayed", shell("main", STAMPS_TERM, **hooks(preStop=hook)), terminationGracePeriodSeconds=grace
        ),
    )
    found = trapping(core, namespace, "delayed", "main")
    deleted_at = time.time()
    ended = final_states(core, namespace, "delayed", found)["main"].terminated
    assert ended.exit_code == 0, ended
    delay = float(ended.message) - deleted_at
    assert term_after <= delay < term_after + 2.5, f"SIGTERM came {delay:.2f}s after the deletion"
    assert not processes_with(marker), "the hook given up on still runs"


SERVER_LOGS_REQUESTS = """
import http.server, os, signal
log = open('/dev/termination-log', 'a', buffering=1)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        log.write(f"GET {self.path} {self.headers['User-Agent']} {self.headers['X-Hook']}\\n")
        self.send_response(500)  # the kubelet takes any answer as the hook's success
        self.end_headers()
def term(*_):
    log.write('got-term\\n')
    os._exit(0)
signal.signal(signal.SIGTERM, term)
server = http.server.HTTPServer(('', 8080), Handler)
print('waiting', flush=True)
server.serve_forever()
"""


def test_an_http_get_pre_stop_hook_reaches_the_container_before_sigterm(
    api_client: client.ApiClient, namespace: str
) -> None:
    """At the pod's IP (no host given), on a named port, with its headers."""
    core = client.CoreV1Api(api_client)
    hook = {
        "httpGet": {
            "path": "/drain",
            "port": "http",
            "httpHeaders": [{"name": "X-Hook", "value": "pre-stop"}],
        }
    }
    main = {
        "name": "main",
        "image": "python:3.11",
        "command": ["python3", "-c", SERVER_LOGS_REQUESTS],
        "ports": [{"name": "http", "containerPort": 8080}],
        **hooks(preStop=hook),
    }
    core.create_namespaced_pod(namespace, pod_of("http-hook", main, terminationGracePeriodSeconds=30))
    found = trapping(core, namespace, "http-hook", "main")
    ended = final_states(core, namespace, "http-hook", found)["main"].terminated
    request, term = ended.message.splitlines()
    assert request.startswith("GET /drain kube-lifecycle/") and request.endswith(" pre-stop"), request
    assert (term, ended.exit_code) == ("got-term", 0)
    assert not events(core, namespace, "FailedPreStopHook")


def test_a_container_is_not_reported_running_until_its_post_start_hook_ended(
    api_client: client.ApiClient, namespace: str
) -> None:
    """The hook sleeps 2s, then stamps the time into the container's /tmp: the first status that shows the
    container running or started comes after that time, not at the container's start."""
    core = client.CoreV1Api(api_client)
    post_start = exec_hook("sleep 2; date +%s.%N > /tmp/post-start")
    script = "while [ ! -e /tmp/post-start ]; do sleep 0.1; done; cat /tmp/post-start; sleep 3600"
    core.create_namespaced_pod(
        namespace,
        pod_of("post-start", shell("main", script, **hooks(postStart=post_start)), restartPolicy="Always"),
    )
    shown: list[tuple[float, str]] = []
    for event in pod_events(core, namespace, "post-start", timeout=60):
        [status] = event["object"].status.container_statuses or [None]
        if status is not None:
            shown.append((time.time(), "running" if status.state.running else "not running"))
            if status.state.running or status.started:
                break
    assert shown and shown[-1][1] == "running", shown
    assert "not running" in {s for _, s in shown}, f"never shown before the hook ended: {shown}"
    log = eventually(lambda: core.read_namespaced_pod_log("post-start", namespace), what="the hook's stamp")
    hook_ended = float(log.split()[0])
    assert hook_ended <= shown[-1][0], (
        f"reported running {hook_ended - shown[-1][0]:.2f}s before the hook ended"
    )
    found = pod(core, namespace, "post-start")
    assert found is not None
    [status] = found.status.container_statuses
    assert (status.started, status.ready, status.restart_count) == (True, True, 0)


def test_a_failing_post_start_hook_kills_the_container_which_restarts(
    api_client: client.ApiClient, namespace: str
) -> None:
    """As the kubelet: FailedPostStartHook, the container killed (never reported started) and restarted
    under its restart policy."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(
        namespace,
        pod_of(
            "post-start-fails",
            shell("main", "echo up; while true; do sleep 0.2; done", **hooks(postStart=exec_hook("exit 3"))),
            restartPolicy="Always",
        ),
    )
    started: list[bool] = []
    restarted = None
    for event in pod_events(core, namespace, "post-start-fails", timeout=60):
        [status] = event["object"].status.container_statuses or [None]
        if status is not None:
            started.append(bool(status.started) or status.state.running is not None)
            if status.restart_count >= 1 and status.last_state.terminated is not None:
                restarted = status
                break
    assert restarted is not None, "the container was not restarted"
    assert not any(started), "a container whose postStart hook failed was reported running or started"
    failed = events(core, namespace, "FailedPostStartHook")
    assert failed and failed[0].type == "Warning"
    assert any(e.message == "FailedPostStartHook" for e in events(core, namespace, "Killing"))
