"""Probe runners report each change of result; a startup probe stops after its first success, as the
kubelet's does, and liveness keeps probing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mlplatform.local.node import probes
from mlplatform.local.node.probes import ProbeRunner, ProbeTarget


def run_with_results(
    monkeypatch: pytest.MonkeyPatch, kind: str, results: list[bool], seconds: float = 0.3
) -> tuple[int, list[tuple[str, bool]]]:
    """Run a `kind` probe whose attempts give `results` (then fail): (attempts made, results reported)."""
    attempts: list[bool] = []
    reported: list[tuple[str, bool]] = []

    async def probe_once(*_: Any) -> tuple[bool, str]:
        ok = results[len(attempts)] if len(attempts) < len(results) else False
        attempts.append(ok)
        return ok, "" if ok else "failed"

    async def on_result(name: str, ok: bool, _: str) -> None:
        reported.append((name, ok))

    async def scenario() -> None:
        target = ProbeTarget("127.0.0.1", lambda: None, {}, {})
        probe = {"exec": {"command": ["true"]}, "periodSeconds": 0.01, "failureThreshold": 1}
        runner = ProbeRunner(kind, probe=probe, target=target, http=None, on_result=on_result)  # type: ignore[arg-type]
        runner.start()
        await asyncio.sleep(seconds)
        runner.stop()

    monkeypatch.setattr(probes, "probe_once", probe_once)
    asyncio.run(scenario())
    return len(attempts), reported


def test_a_startup_probe_stops_after_its_first_success(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every attempt after the first would fail: none is made."""
    attempts, reported = run_with_results(monkeypatch, "startup", [True])
    assert (attempts, reported) == (1, [("startup", True)])


def test_a_liveness_probe_keeps_probing_after_success(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts, reported = run_with_results(monkeypatch, "liveness", [True])
    assert attempts > 2
    assert reported == [("liveness", True), ("liveness", False)]
