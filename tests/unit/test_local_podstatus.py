"""What the node reports of a pod. Each container's view as the kubelet shows it (pure), and, without a
cluster, the reporting: the status built from real attempt records under a temporary directory, patched
through a small fake of the Kubernetes API (nodefakes.py) only when it changed, and a final status that
never overwrites the one a pod ended with."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from mlplatform.local.node.containers import PodContainers
from mlplatform.local.node.podcontext import PodContext
from mlplatform.local.node.podprobes import PodProbes
from mlplatform.local.node.podstatus import PodStatusReporter, container_view
from mlplatform.local.node.shim import ContainerSpec
from mlplatform.local.node.status import Attempt
from nodefakes import FakeNodeApi, pod_context, pod_manifest

APP = {"name": "app", "image": "app:1"}
RUNNING = Attempt(0, "mlplatform://x", "2026-01-01T00:00:00Z")
ENDED = Attempt(0, "mlplatform://x", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", 0, "Completed")
PLAIN = {
    "restarts": True,
    "post_start_running": False,
    "startup_passed": True,
    "readiness_passed": True,
    "runs_to_completion": False,
    "sidecar": False,
}


def view(latest: Attempt | None, waiting: tuple[str, str] | None = None, **facts: Any) -> Any:
    return container_view(APP, latest, None, waiting, **{**PLAIN, **facts})


def test_a_running_container_is_ready_once_started_and_its_readiness_passed() -> None:
    assert view(RUNNING).ready and view(RUNNING).started
    assert not view(RUNNING, readiness_passed=False).ready
    unstarted = view(RUNNING, startup_passed=False)
    assert not unstarted.started and not unstarted.ready


def test_a_reason_to_wait_counts_only_for_a_container_that_is_to_start() -> None:
    backoff = ("CrashLoopBackOff", "back-off")
    assert view(RUNNING, backoff).waiting is None
    assert view(ENDED, backoff, restarts=False).waiting is None
    assert view(ENDED, backoff).waiting == backoff
    assert view(None, backoff).waiting == backoff


def test_a_container_whose_post_start_hook_runs_is_still_being_created() -> None:
    hooked = view(RUNNING, post_start_running=True)
    assert hooked.waiting == ("ContainerCreating", "") and not hooked.started and not hooked.ready


def test_an_init_container_is_ready_once_it_succeeded() -> None:
    assert view(ENDED, runs_to_completion=True).ready
    assert not view(RUNNING, runs_to_completion=True).ready


def reporter(context: PodContext) -> PodStatusReporter:
    async def no_spec(container: dict[str, Any], number: int) -> ContainerSpec:
        raise AssertionError("nothing starts here")

    probes = PodProbes(context, lambda *_: asyncio.sleep(0))
    return PodStatusReporter(context, probes, PodContainers(context, probes, no_spec))


def record_exit(context: PodContext, name: str, code: int) -> None:
    attempt = context.layout.container(name, 0)
    attempt.root.mkdir(parents=True)
    record = {"startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z", "exitCode": code}
    attempt.exit_file.write_text(json.dumps({**record, "reason": "Error", "message": "disk full"}))


def report(tmp_path: Path, manifest: dict[str, Any], scenario: Any) -> FakeNodeApi:
    api = FakeNodeApi()

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            context = pod_context(tmp_path, api, http, manifest)
            await scenario(context, reporter(context))

    asyncio.run(run())
    return api


def test_a_status_is_written_only_when_it_changed(tmp_path: Path) -> None:
    async def scenario(context: PodContext, status: PodStatusReporter) -> None:
        context.waiting["app"] = ("ContainerCreating", "")
        await status.report()
        await status.report()
        record_exit(context, "app", 1)
        await status.report()
        assert status.finished()
        assert context.manifest["status"] == status.reported

    api = report(tmp_path, pod_manifest(APP, restartPolicy="Never"), scenario)
    assert [s["phase"] for s in api.statuses] == ["Pending", "Failed"]
    terminated = api.statuses[-1]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["message"]) == (1, "disk full")


def test_the_final_status_leaves_a_pod_that_ended_as_it_ended(tmp_path: Path) -> None:
    manifest = pod_manifest(APP, restartPolicy="Never")
    manifest["status"] = {"phase": "Succeeded"}

    async def scenario(context: PodContext, status: PodStatusReporter) -> None:
        await status.report_final()

    assert report(tmp_path, manifest, scenario).statuses == []


def test_the_final_status_of_a_running_pod_is_terminal(tmp_path: Path) -> None:
    async def scenario(context: PodContext, status: PodStatusReporter) -> None:
        record_exit(context, "app", 137)
        context.waiting["app"] = ("CrashLoopBackOff", "back-off")  # nothing restarts any more: not shown
        await status.report_final()

    [final] = report(tmp_path, pod_manifest(APP), scenario).statuses
    assert final["phase"] == "Failed"
    assert "terminated" in final["containerStatuses"][0]["state"]
