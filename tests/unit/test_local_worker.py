"""The pod worker's pure rules: the kubelet's crash back-off and when a container is restarted."""

from __future__ import annotations

import pytest

from mlplatform.local.node.status import Attempt
from mlplatform.local.node.worker import MAX_BACKOFF_SECONDS, backoff_seconds, should_restart


def test_backoff_restarts_at_once_then_doubles_from_ten_seconds_up_to_five_minutes() -> None:
    assert [backoff_seconds(n) for n in range(1, 9)] == [0, 10, 20, 40, 80, 160, 300, 300]
    assert backoff_seconds(0) == 0
    assert backoff_seconds(100) == MAX_BACKOFF_SECONDS == 300


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
