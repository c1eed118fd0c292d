"""The node agent: registers the Node, keeps its lease, and runs a worker for every pod bound to it.

Stopping the agent leaves the pods running (their sandboxes and shims do not depend on it); a new
agent lists the pods bound to the node, re-adopts what runs from the records on disk, and removes what
belongs to pods that no longer exist.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import shutil
import signal
import ssl
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from kubernetes_asyncio.client.rest import ApiException

from mlplatform import __version__
from mlplatform.local import pki
from mlplatform.local.config import LocalConfig, StateLayout
from mlplatform.local.gobuild import BINARIES
from mlplatform.local.images import default_image_map
from mlplatform.local.node import runtime
from mlplatform.local.node.api import NodeApi, now, retry_forever, rfc3339
from mlplatform.local.node.layout import NodeLayout
from mlplatform.local.node.logserver import LogServer, tls_context
from mlplatform.local.node.worker import NodeContext, PodWorker

Manifest = dict[str, Any]
log = logging.getLogger(__name__)
LEASE_SECONDS = 40
LEASE_RENEW_SECONDS = 10
STATUS_SECONDS = 60
MAX_PODS = 110
NODE_LABEL = "mlplatform.dev/local-node"


def machine_capacity(state_dir: Path) -> dict[str, str]:
    """What the machine offers pods: its cores, memory and disk, and a pod count like the kubelet's."""
    memory_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    disk = shutil.disk_usage(state_dir)
    return {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{memory_kib}Ki",
        "pods": str(MAX_PODS),
        "ephemeral-storage": f"{disk.total // 1024}Ki",
    }


def node_manifest(config: LocalConfig) -> Manifest:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": config.node_name,
            "labels": {
                "kubernetes.io/hostname": config.node_name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": arch,
                NODE_LABEL: "true",
            },
        },
        "spec": {"podCIDR": config.network.pod_cidr, "podCIDRs": [config.network.pod_cidr]},
    }


def node_status(config: LocalConfig, capacity: dict[str, str]) -> Manifest:
    stamp = rfc3339()
    kubernetes_version = BINARIES["kube-apiserver"].version

    def condition(kind: str, ok: bool, reason: str, message: str) -> Manifest:
        return {
            "type": kind,
            "status": "True" if ok else "False",
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }

    uname = platform.uname()
    return {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", False, "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
            condition("DiskPressure", False, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition(
                "PIDPressure", False, "KubeletHasSufficientPID", "kubelet has sufficient PID available"
            ),
            condition("Ready", True, "KubeletReady", "mlplatform local node is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": config.network.host_address},
            {"type": "Hostname", "address": config.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.ports.node}},
        "nodeInfo": {
            "machineID": _read("/etc/machine-id"),
            "systemUUID": _read("/etc/machine-id"),
            "bootID": _read("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": uname.release,
            "osImage": _os_image(),
            "containerRuntimeVersion": f"mlplatform-local://{__version__}",
            "kubeletVersion": kubernetes_version,
            "kubeProxyVersion": kubernetes_version,
            "operatingSystem": "linux",
            "architecture": node_manifest(config)["metadata"]["labels"]["kubernetes.io/arch"],
        },
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


class NodeAgent:
    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self.state = StateLayout(config.state_dir)
        self.layout = NodeLayout(self.state.node)
        self.workers: dict[str, PodWorker] = {}
        self.capacity = machine_capacity(config.state_dir)

    async def run(self) -> None:
        api = await NodeApi.from_kubeconfig(self.state.kubeconfig("node"), self.config.node_name)
        http = aiohttp.ClientSession()
        try:
            node = await retry_forever("registering the node", self.register(api))
            context = NodeContext(api, self.config, self.layout, default_image_map(), self.capacity, http)
            runner = await self.serve_logs(api)
            try:
                await asyncio.gather(self.heartbeat(api, node["metadata"]["uid"]), self.sync_pods(context))
            finally:
                await runner.cleanup()
        finally:
            for worker in self.workers.values():
                if worker.task:
                    worker.task.cancel()
            await http.close()
            await api.close()

    def register(self, api: NodeApi) -> Any:
        async def attempt() -> Manifest:
            node = await api.read_node()
            if node is None:
                node = await api.create_node(node_manifest(self.config))
                log.info("registered node %s", self.config.node_name)
            await api.patch_node_status(node_status(self.config, self.capacity))
            return node

        return attempt

    async def heartbeat(self, api: NodeApi, node_uid: str) -> None:
        last_status = now()
        while True:
            try:
                await api.renew_lease(LEASE_SECONDS, node_uid)
                if (now() - last_status).total_seconds() >= STATUS_SECONDS:
                    await api.patch_node_status(node_status(self.config, self.capacity))
                    last_status = now()
            except (ApiException, OSError) as exc:
                log.warning("node heartbeat failed: %s", exc)
            await asyncio.sleep(LEASE_RENEW_SECONDS)

    async def serve_logs(self, api: NodeApi) -> web.AppRunner:
        pki_dir = self.state.pki
        context: ssl.SSLContext = tls_context(
            pki.cert_path(pki_dir, "node-serving"),
            pki.key_path(pki_dir, "node-serving"),
            pki.cert_path(pki_dir, pki.CLUSTER_CA),
        )
        runner = web.AppRunner(LogServer(api, self.layout).app(), access_log=None)
        await runner.setup()
        await web.TCPSite(
            runner, self.config.network.host_address, self.config.ports.node, ssl_context=context
        ).start()
        return runner

    def ensure_worker(self, context: NodeContext, pod: Manifest) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if worker is not None and worker.task is not None and not worker.task.done():
            worker.update(pod)
            return
        worker = PodWorker(context, pod)
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            worker.reported = pod["status"]  # a finished pod never runs again, even if its records are gone
        self.workers[uid] = worker
        worker.start()

    async def sync_pods(self, context: NodeContext) -> None:
        """List, then watch, the pods bound to this node; relist whenever a watch ends."""
        api = context.api
        while True:
            pods, version = await retry_forever("listing pods", api.list_pods)
            live = {p["metadata"]["uid"] for p in pods}
            for uid in set(runtime.known_pod_uids(self.layout)) - live - set(self.workers):
                log.info("removing pod %s, which no longer exists", uid)
                await asyncio.to_thread(runtime.kill_pod, self.layout.pod(uid), self.layout)
                await asyncio.to_thread(runtime.remove_pod_dir, self.layout.pod(uid))
            for pod in pods:
                self.ensure_worker(context, pod)
            for uid, worker in list(self.workers.items()):
                if uid not in live:
                    worker.mark_deleted()
            try:
                async for kind, pod in api.watch_pods(version):
                    self.on_event(context, kind, pod)
            except ApiException as exc:
                if exc.status != 410:  # 410: our version expired; relisting is the cure
                    log.warning("pod watch failed: %s", exc)
                    await asyncio.sleep(1)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("pod watch interrupted: %s", exc)
                await asyncio.sleep(1)

    def on_event(self, context: NodeContext, kind: str, pod: Manifest) -> None:
        if kind == "DELETED":
            if (worker := self.workers.get(pod["metadata"]["uid"])) is not None:
                worker.mark_deleted()
        elif kind in ("ADDED", "MODIFIED"):
            self.ensure_worker(context, pod)
        self._forget_finished_workers()

    def _forget_finished_workers(self) -> None:
        for uid, worker in list(self.workers.items()):
            if worker.task is not None and worker.task.done():
                del self.workers[uid]


async def _main(config: LocalConfig) -> None:
    agent = NodeAgent(config)
    task = asyncio.create_task(agent.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        log.info("node agent stopped; its pods keep running")
