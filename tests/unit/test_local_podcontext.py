"""A pod's shared context and its pure rules: when a container is restarted, which init containers are
sidecars, when a pod's main containers ended for good; and, without a cluster, the context itself: attempts
read back from real records under a temporary directory, events sent once a minute, the grace period (the
Kubernetes API is a small fake, nodefakes.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mlplatform.local.node.podcontext import (
    PodContext,
    main_containers_ended,
    should_restart,
    sidecar_names,
)
from mlplatform.local.node.status import Attempt
from nodefakes import SIDECAR_SPEC, FakeNodeApi, pod_context, pod_manifest


def ended(code: int) -> Attempt:
    return Attempt(0, "mlplatform://x", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", code, "Error")


@pytest.mark.parametrize(
    ("policy", "code", "init", "expected"),
    [
        ("Never", 1, False, False),
        ("Never", 0, False, False),
        ("Never", 1, True, False),
        ("OnFailure", 1, False, True),
        ("OnFailure", 137, False, True),
        ("OnFailure", 0, False, False),
        ("Always", 0, False, True),
        ("Always", 1, False, True),
        # An init container that succeeded is done, whatever the pod's policy; a failed one is retried.
        ("Always", 0, True, False),
        ("Always", 1, True, True),
        ("OnFailure", 0, True, False),
    ],
)
def test_should_restart_follows_the_restart_policy(
    policy: str, code: int, init: bool, expected: bool
) -> None:
    assert should_restart(policy, ended(code), init) is expected


def test_sidecars_are_the_init_containers_that_always_restart_in_their_order() -> None:
    assert sidecar_names(SIDECAR_SPEC) == ["proxy", "logger"]
    assert sidecar_names({"containers": [{"name": "main"}]}) == []


RUNNING = Attempt(0, "mlplatform://x", "2026-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("policy", "latest", "expected"),
    [
        ("Never", [ended(0), ended(1)], True),
        ("OnFailure", [ended(0), ended(0)], True),
        ("OnFailure", [ended(0), ended(1)], False),  # the failed one restarts
        ("Always", [ended(0)], False),
        ("Never", [ended(0), RUNNING], False),
        ("Never", [ended(0), None], False),  # one has not run yet
    ],
)
def test_main_containers_end_for_good_only_when_none_runs_or_restarts(
    policy: str, latest: list[Attempt | None], expected: bool
) -> None:
    assert main_containers_ended(policy, latest) is expected


def in_context(tmp_path: Path, manifest: dict[str, Any], scenario: Any) -> FakeNodeApi:
    """Run `scenario(context)` with a context of `manifest` on a fake API; the API, to look at."""
    api = FakeNodeApi()

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            await scenario(pod_context(tmp_path, api, http, manifest))

    asyncio.run(run())
    return api


def record_exit(context: PodContext, name: str, number: int, code: int) -> None:
    attempt = context.layout.container(name, number)
    attempt.root.mkdir(parents=True)
    stamp = "2026-01-01T00:00:0{}Z"
    record = {"startedAt": stamp.format(number), "finishedAt": stamp.format(number + 1), "exitCode": code}
    attempt.exit_file.write_text(json.dumps({**record, "reason": "Error" if code else "Completed"}))


def test_attempts_are_the_latest_two_read_back_from_the_records(tmp_path: Path) -> None:
    async def scenario(context: PodContext) -> None:
        assert context.attempts("app") == (None, None)
        for number, code in enumerate([1, 2, 0]):
            record_exit(context, "app", number, code)
        latest, previous = context.attempts("app")
        assert latest is not None and previous is not None
        assert (latest.number, latest.exit_code, previous.number, previous.exit_code) == (2, 0, 1, 2)
        assert latest.container_id == "mlplatform://0123456789abcdef-app-2"

    in_context(tmp_path, pod_manifest({"name": "app", "image": "app:1"}), scenario)


def test_a_sidecar_restarts_whatever_the_policy_and_an_init_container_only_on_failure(tmp_path: Path) -> None:
    manifest = pod_manifest(
        {"name": "main"}, restartPolicy="Never", initContainers=SIDECAR_SPEC["initContainers"]
    )

    async def scenario(context: PodContext) -> None:
        assert context.restarts({"name": "proxy"}, ended(0))
        assert context.restarts({"name": "setup"}, ended(1)) is False  # the pod's Never holds for it too
        assert context.restarts({"name": "main"}, ended(1)) is False
        assert context.runs_to_completion("setup") and not context.runs_to_completion("proxy")
        assert not context.runs_to_completion("main")
        assert [c["name"] for c in context.all_containers()] == ["proxy", "setup", "logger", "main"]

    in_context(tmp_path, manifest, scenario)


def test_the_same_event_is_sent_once_a_minute_and_others_at_once(tmp_path: Path) -> None:
    async def scenario(context: PodContext) -> None:
        for _ in range(3):
            await context.event("Warning", "BackOff", "Back-off restarting failed container app")
        await context.event("Normal", "Started", "Started container app")

    api = in_context(tmp_path, pod_manifest({"name": "app"}), scenario)
    assert api.reasons() == ["BackOff", "Started"]


@pytest.mark.parametrize(
    ("metadata", "spec", "expected"),
    [
        ({}, {}, 30),
        ({}, {"terminationGracePeriodSeconds": 5}, 5),
        ({"deletionGracePeriodSeconds": 0}, {"terminationGracePeriodSeconds": 5}, 0),
    ],
)
def test_the_grace_period_is_the_deletions_else_the_pods_else_thirty_seconds(
    tmp_path: Path, metadata: dict[str, Any], spec: dict[str, Any], expected: int
) -> None:
    manifest = pod_manifest({"name": "app"}, **spec)
    manifest["metadata"].update(metadata)

    async def scenario(context: PodContext) -> None:
        assert context.grace_seconds() == expected

    in_context(tmp_path, manifest, scenario)


def test_a_target_carries_the_attempts_environment_and_named_ports(tmp_path: Path) -> None:
    container = {"name": "app", "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 9}]}

    async def scenario(context: PodContext) -> None:
        assert context.target(container, 0).env == {}  # not started: no spec recorded
        attempt = context.layout.container("app", 0)
        attempt.root.mkdir(parents=True)
        attempt.spec_file.write_text(json.dumps({"env": {"MODE": "serve"}}))
        target = context.target(container, 0)
        assert (target.env, target.ports, target.pod_ip, target.pid()) == (
            {"MODE": "serve"},
            {"http": 8080},
            "",
            None,
        )

    in_context(tmp_path, pod_manifest(container), scenario)
