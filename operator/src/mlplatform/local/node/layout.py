"""Where the node keeps its state: one folder per pod, one per container attempt, and the IP leases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = "mlplatform"
TERMINATION_LOGS = ".termination-logs"  # in the volumes folder; no volume is named so (names are DNS labels)
RUNTIME = ".runtime"  # in the volumes folder too: runc's bundles and state


@dataclass(frozen=True)
class NodeLayout:
    root: Path

    @property
    def pods(self) -> Path:
        return self.root / "pods"

    @property
    def ip_leases(self) -> Path:
        return self.root / "ip-leases"

    def pod(self, uid: str) -> PodLayout:
        return PodLayout(self.pods / uid)


@dataclass(frozen=True)
class PodLayout:
    root: Path

    @property
    def uid(self) -> str:
        return self.root.name

    @property
    def pod_file(self) -> Path:
        """The last pod object the node acted on: what an agent restart re-adopts from."""
        return self.root / "pod.json"

    @property
    def sandbox_file(self) -> Path:
        return self.root / "sandbox.json"

    @property
    def sandbox_spec(self) -> Path:
        """The plan the sandbox process carries out."""
        return self.root / "sandbox-spec.json"

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def upper(self) -> Path:
        """Mount point of the tmpfs that holds the pod's private writes over the host's directories."""
        return self.root / "upper"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    def volume(self, name: str) -> Path:
        return self.volumes / name

    def termination_log(self, name: str, attempt: int) -> Path:
        """One attempt's file at its terminationMessagePath. Kept beside the volumes: every sandbox, even
        one an earlier agent started, shows that folder to the shims, which bind the file from there."""
        return self.volumes / TERMINATION_LOGS / name / str(attempt)

    @property
    def runtime(self) -> Path:
        """runc's bundles and state for the pod's containers. Beside the volumes, as runc runs in the pod's
        root: the host sees this folder here, runc under VOLUMES_IN_POD."""
        return self.volumes / RUNTIME

    @property
    def etc(self) -> Path:
        """The pod's own hosts, resolv.conf and hostname files."""
        return self.root / "etc"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def container(self, name: str, attempt: int) -> ContainerLayout:
        return ContainerLayout(self.containers_of(name) / str(attempt))

    def containers_of(self, name: str) -> Path:
        return self.root / "containers" / name

    def attempts(self) -> list[ContainerLayout]:
        """Every attempt of every container the pod ran."""
        return [ContainerLayout(path) for path in sorted((self.root / "containers").glob("*/*"))]

    def log(self, name: str, attempt: int) -> Path:
        return self.root / "logs" / name / f"{attempt}.log"


@dataclass(frozen=True)
class ContainerLayout:
    root: Path

    @property
    def spec_file(self) -> Path:
        return self.root / "spec.json"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def shim_file(self) -> Path:
        """The shim's PID and start time, written by the node when it starts the shim."""
        return self.root / "shim.json"

    @property
    def exit_file(self) -> Path:
        return self.root / "exit.json"
