"""Container lifecycle hooks (postStart, preStop), run by the node as the kubelet's handler runner runs them.

exec and httpGet use the probes' handlers: exec runs in the container's namespaces with its environment,
httpGet goes from the node to the pod's IP (or the handler's host). As the kubelet's: an httpGet hook only
fails when no answer comes (its status code is not looked at), hooks have no timeout of their own (a preStop
hook is bounded by the grace period, by its caller), and tcpSocket, accepted by the API for compatibility
only, fails when run.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from mlplatform.local.node.probes import (
    HANDLER_ERRORS,
    KUBE_MINOR,
    ProbeTarget,
    exec_in_container,
    failure_text,
    http_get,
)

Manifest = dict[str, Any]
HOOK_AGENT = f"kube-lifecycle/{KUBE_MINOR}"
# The kubelet's minimumGracePeriodInSeconds: what SIGTERM is left when a preStop hook spent the grace period.
MINIMUM_GRACE_SECONDS = 2.0


async def run_hook(handler: Manifest, target: ProbeTarget, http: aiohttp.ClientSession) -> tuple[bool, str]:
    """Run a lifecycle handler to its end: (success, what went wrong)."""
    try:
        return await _run(handler, target, http)
    except HANDLER_ERRORS as exc:
        return False, failure_text(exc)


async def _run(handler: Manifest, target: ProbeTarget, http: aiohttp.ClientSession) -> tuple[bool, str]:
    if action := handler.get("exec"):
        code, output = await exec_in_container(action["command"], target, timeout=None)
        return code == 0, "" if code == 0 else f"command exited with {code}, message: {output[-300:]!r}"
    if action := handler.get("httpGet"):
        await http_get(action, target, http, None, HOOK_AGENT)
        return True, ""
    if (action := handler.get("sleep")) is not None:
        await asyncio.sleep(int(action.get("seconds", 0)))
        return True, ""
    return (
        False,
        f"invalid handler {sorted(handler)}: a lifecycle hook runs exec, httpGet or sleep, not tcpSocket",
    )


def signal_grace(grace: float, hook_seconds: float | None) -> float:
    """The grace period left for SIGTERM after a preStop hook that took `hook_seconds` (None: no hook ran),
    never less than the kubelet's minimal shutdown window once a hook ran."""
    if hook_seconds is None:
        return grace
    return max(grace - hook_seconds, MINIMUM_GRACE_SECONDS)


def failure_message(handler: Manifest, container: str, pod: str, detail: str) -> str:
    """A failed hook worded as the kubelet words it (`pod`: "name_namespace(uid)")."""
    if action := handler.get("exec"):
        what = f"Exec lifecycle hook ([{' '.join(action.get('command') or [])}])"
    elif action := handler.get("httpGet"):
        what = f"HTTP lifecycle hook ({action.get('path', '')})"
    elif (action := handler.get("sleep")) is not None:
        what = f"Sleep lifecycle hook ({action.get('seconds')})"
    else:
        return f"Cannot run handler: {detail}"
    return f'{what} for Container "{container}" in Pod "{pod}" failed - error: {detail}'
