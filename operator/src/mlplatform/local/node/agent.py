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
from dataclasses import dataclass
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
from mlplatform.local.node.podcontext import NodeContext
from mlplatform.local.node.worker import PodWorker

Manifest = dict[str, Any]
log = logging.getLogger(__name__)
LEASE_SECONDS = 40
LEASE_RENEW_SECONDS = 10
STATUS_SECONDS = 60
MAX_PODS = 110
NODE_LABEL = "mlplatform.dev/local-node"
# The kubelet's default hard eviction thresholds: below them it reports pressure (and evicts).
MEMORY_AVAILABLE_MIN = 100 * 1024 * 1024  # memory.available<100Mi
DISK_AVAILABLE_MIN_SHARE = 0.10  # nodefs.available<10%
INODES_FREE_MIN_SHARE = 0.05  # nodefs.inodesFree<5%
PIDS_AVAILABLE_MIN_SHARE = 0.05  # pid.available has no default in the kubelet: as for inodes
# For each pressure condition, (reason, message) without and with pressure: the kubelet's own words.
PRESSURE_WORDS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "MemoryPressure": (
        ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
    ),
    "DiskPressure": (
        ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("KubeletHasDiskPressure", "kubelet has disk pressure"),
    ),
    "PIDPressure": (
        ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
    ),
}
READY = ("KubeletReady", "mlplatform local node is posting ready status")


@dataclass(frozen=True)
class MachineFigures:
    """What the node's pressure conditions are computed from (bytes, inodes, threads)."""

    memory_available: int
    disk_available: int
    disk_total: int
    inodes_free: int
    inodes_total: int  # 0 on filesystems without a fixed inode count (btrfs): never under pressure
    pids_in_use: int
    pids_max: int


def _meminfo_bytes(key: str) -> int:
    line = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith(f"{key}:"))
    return int(line.split()[1]) * 1024


def machine_figures(state_dir: Path) -> MachineFigures:
    """The machine's figures now: available memory, the state directory's filesystem, threads in use."""
    disk = os.statvfs(state_dir)
    threads_in_use = int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])
    pids_max = min(int(_read("/proc/sys/kernel/pid_max")), int(_read("/proc/sys/kernel/threads-max")))
    return MachineFigures(
        memory_available=_meminfo_bytes("MemAvailable"),
        disk_available=disk.f_bavail * disk.f_frsize,
        disk_total=disk.f_blocks * disk.f_frsize,
        inodes_free=disk.f_favail,
        inodes_total=disk.f_files,
        pids_in_use=threads_in_use,
        pids_max=pids_max,
    )


def pressures(figures: MachineFigures) -> dict[str, bool]:
    """Which pressure conditions hold, by the kubelet's default eviction thresholds."""
    return {
        "MemoryPressure": figures.memory_available < MEMORY_AVAILABLE_MIN,
        "DiskPressure": figures.disk_available < DISK_AVAILABLE_MIN_SHARE * figures.disk_total
        or figures.inodes_free < INODES_FREE_MIN_SHARE * figures.inodes_total,
        "PIDPressure": figures.pids_max - figures.pids_in_use < PIDS_AVAILABLE_MIN_SHARE * figures.pids_max,
    }


def node_conditions(pressure: dict[str, bool], previous: list[Manifest], stamp: str) -> list[Manifest]:
    """The node's conditions as the kubelet reports them; a condition whose status is unchanged keeps
    its lastTransitionTime."""
    transitions = {c["type"]: (c["status"], c.get("lastTransitionTime")) for c in previous}

    def condition(kind: str, status: bool, words: tuple[str, str]) -> Manifest:
        text = str(status)
        before, since = transitions.get(kind, ("", None))
        return {
            "type": kind,
            "status": text,
            "reason": words[0],
            "message": words[1],
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": since if before == text and since else stamp,
        }

    return [
        *(condition(kind, pressure[kind], words[pressure[kind]]) for kind, words in PRESSURE_WORDS.items()),
        condition("Ready", True, READY),
    ]


def machine_capacity(state_dir: Path) -> dict[str, str]:
    """What the machine offers pods: its cores, memory and disk, and a pod count like the kubelet's."""
    disk = shutil.disk_usage(state_dir)
    return {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{_meminfo_bytes('MemTotal') // 1024}Ki",
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


def node_status(config: LocalConfig, capacity: dict[str, str], conditions: list[Manifest]) -> Manifest:
    kubernetes_version = BINARIES["kube-apiserver"].version
    uname = platform.uname()
    return {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": conditions,
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
        self.conditions: list[Manifest] = []  # as last reported

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
            self.conditions = (node.get("status") or {}).get("conditions") or []  # keeps transition times
            await self.report_status(api, pressures(machine_figures(self.config.state_dir)))
            return node

        return attempt

    async def report_status(self, api: NodeApi, pressure: dict[str, bool]) -> None:
        conditions = node_conditions(pressure, self.conditions, rfc3339())
        await api.patch_node_status(node_status(self.config, self.capacity, conditions))
        self.conditions = conditions

    async def heartbeat(self, api: NodeApi, node_uid: str) -> None:
        """Renew the lease; check the machine's figures as often, and report the node's status when a
        condition changes, or at least every STATUS_SECONDS."""
        last_status = now()
        while True:
            try:
                await api.renew_lease(LEASE_SECONDS, node_uid)
                pressure = pressures(machine_figures(self.config.state_dir))
                reported = {c["type"]: c["status"] == "True" for c in self.conditions}
                changed = any(reported.get(kind) != value for kind, value in pressure.items())
                if changed or (now() - last_status).total_seconds() >= STATUS_SECONDS:
                    await self.report_status(api, pressure)
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
