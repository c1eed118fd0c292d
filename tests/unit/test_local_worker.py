"""The pod worker, the orchestrator of a pod's life on the node: the kubelet's crash back-off, and one sync
pass of a pod the node refuses, run without a cluster (the Kubernetes API is a small fake, nodefakes.py; the
pod's folders are real, under a temporary directory)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from mlplatform.local.node.worker import MAX_BACKOFF_SECONDS, PodWorker, backoff_seconds
from nodefakes import FakeNodeApi, pod_context, pod_manifest


def test_backoff_restarts_at_once_then_doubles_from_ten_seconds_up_to_five_minutes() -> None:
    assert [backoff_seconds(n) for n in range(1, 9)] == [0, 10, 20, 40, 80, 160, 300, 300]
    assert backoff_seconds(0) == 0
    assert backoff_seconds(100) == MAX_BACKOFF_SECONDS == 300


def test_a_refused_pod_waits_with_the_reason_reported_and_nothing_of_it_starts(tmp_path: Path) -> None:
    api = FakeNodeApi()
    container = {"name": "app", "image": "app:1", "ports": [{"containerPort": 80, "hostPort": 8080}]}

    async def scenario() -> PodWorker:
        async with aiohttp.ClientSession() as http:
            context = pod_context(tmp_path, api, http, pod_manifest(container))
            worker = PodWorker(context.node, context.manifest)
            assert await worker.sync() is False
            return worker

    worker = asyncio.run(scenario())
    status = api.statuses[-1]
    assert status["phase"] == "Pending"
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError"
    assert "hostPort" in waiting["message"]
    assert api.events[0][:2] == ("Warning", "Failed")
    assert worker.reported == status
    assert not worker.pod.layout.sandbox_file.exists()
    assert worker.pod.layout.pod_file.exists()  # the log endpoint finds the pod
