"""The node's HTTPS endpoint the apiserver calls for `kubectl logs` (the kubelet's /containerLogs).

Clients authenticate with a certificate of the cluster CA; each request is authorized by asking the
apiserver (SubjectAccessReview on nodes/proxy), as a kubelet in webhook mode does.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import ssl
from pathlib import Path

from aiohttp import web

from mlplatform.local.node import runtime
from mlplatform.local.node.api import NodeApi
from mlplatform.local.node.layout import NodeLayout, PodLayout
from mlplatform.local.node.logs import LogLine, parse_line, read_lines, select

log = logging.getLogger(__name__)
FOLLOW_POLL_SECONDS = 0.2


def _client_identity(request: web.Request) -> tuple[str, list[str]] | None:
    transport = request.transport
    peer = transport.get_extra_info("peercert") if transport else None
    if not peer:
        return None
    user, groups = "", []
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                user = value
            elif key == "organizationName":
                groups.append(value)
    return (user, groups) if user else None


class LogServer:
    def __init__(self, api: NodeApi, layout: NodeLayout) -> None:
        self.api = api
        self.layout = layout
        self.allowed: dict[str, bool] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        return app

    @staticmethod
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def authorized(self, request: web.Request) -> bool:
        identity = _client_identity(request)
        if identity is None:
            return False
        user, groups = identity
        if user not in self.allowed:
            self.allowed[user] = await self.api.may(user, groups, "get", "proxy")
        return self.allowed[user]

    def _pod_uid(self, namespace: str, name: str) -> str | None:
        for uid in runtime.known_pod_uids(self.layout):
            try:
                metadata = json.loads(self.layout.pod(uid).pod_file.read_text())["metadata"]
            except (OSError, ValueError, KeyError):
                continue
            if metadata["namespace"] == namespace and metadata["name"] == name:
                return uid
        return None

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        if not await self.authorized(request):
            raise web.HTTPForbidden(text="Forbidden (user is not allowed to read this node's logs)")
        namespace, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        uid = self._pod_uid(namespace, pod)
        if uid is None:
            raise web.HTTPNotFound(text=f'pod "{pod}" in namespace "{namespace}" is not on this node')
        layout = self.layout.pod(uid)
        numbers = runtime.attempt_numbers(layout, container)
        previous = request.query.get("previous") == "true"
        if not numbers or (previous and len(numbers) < 2):
            which = "previous terminated" if previous else "current"
            raise web.HTTPBadRequest(text=f'{which} container "{container}" in pod "{pod}" not found')
        number = numbers[-2] if previous else numbers[-1]
        timestamps = request.query.get("timestamps") == "true"
        tail = int(request.query["tailLines"]) if "tailLines" in request.query else None
        limit = int(request.query["limitBytes"]) if "limitBytes" in request.query else None
        since = _since(request)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        try:
            lines = select(list(read_lines(layout.log(container, number))), tail, since)
            sent = await _send(response, lines, timestamps, limit)
            if request.query.get("follow") == "true" and not previous:
                await self._follow(
                    response,
                    layout=layout,
                    container=container,
                    number=number,
                    timestamps=timestamps,
                    limit=limit,
                    sent=sent,
                )
            await response.write_eof()
        except ConnectionResetError:  # the client went away (`kubectl logs -f` ended): nothing to report
            log.debug("log client for %s/%s/%s disconnected", namespace, pod, container)
        return response

    async def _follow(
        self,
        response: web.StreamResponse,
        *,
        layout: PodLayout,
        container: str,
        number: int,
        timestamps: bool,
        limit: int | None,
        sent: int,
    ) -> None:
        """Stream lines as the container writes them, until it stops."""
        path = layout.log(container, number)
        offset = path.stat().st_size if path.exists() else 0
        pending = b""
        while True:
            running = runtime.read_attempt(layout, container, number).running
            if path.exists():
                with path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
                offset += len(chunk)
                *complete, pending = (pending + chunk).split(b"\n")
                lines = [line for raw in complete if (line := parse_line(raw))]
                sent += await _send(response, lines, timestamps, None if limit is None else limit - sent)
            if not running or (limit is not None and sent >= limit):
                return
            await asyncio.sleep(FOLLOW_POLL_SECONDS)


def _since(request: web.Request) -> datetime.datetime | None:
    if "sinceTime" in request.query:
        return datetime.datetime.fromisoformat(request.query["sinceTime"].replace("Z", "+00:00"))
    if "sinceSeconds" in request.query:
        return datetime.datetime.now(datetime.UTC) - datetime.timedelta(
            seconds=int(request.query["sinceSeconds"])
        )
    return None


async def _send(
    response: web.StreamResponse, lines: list[LogLine], timestamps: bool, limit: int | None
) -> int:
    payload = b"".join(line.render(timestamps) for line in lines)
    if limit is not None:
        payload = payload[: max(0, limit)]
    if payload:
        await response.write(payload)
    return len(payload)


def tls_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    context.load_cert_chain(str(cert), str(key))
    context.verify_mode = ssl.CERT_REQUIRED
    return context
