"""What one attempt of a container runs with. Who it runs as (pure: the security contexts over the image's
USER, runAsNonRoot refused as the kubelet refuses it) and what the image gives it; and, without a cluster,
a whole spec: built from a pod whose folders and sandbox record are real files under a temporary directory,
with the ConfigMaps and Services of a small fake of the Kubernetes API (nodefakes.py)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mlplatform.local.images import ImageEnvironment, PreparedImage, prepared_key
from mlplatform.local.node.containerspec import (
    DEFAULT_PATH,
    container_spec,
    identity,
    image_env,
    service_links,
)
from mlplatform.local.node.environment import ContainerConfigError
from mlplatform.local.node.layout import NodeLayout
from mlplatform.local.node.podvolumes import PodVolumes
from mlplatform.local.node.runtime import ProcessRef, SandboxRecord
from mlplatform.local.node.sandbox import VOLUMES_IN_POD
from mlplatform.local.node.shim import ContainerSpec, Mount
from nodefakes import FakeNodeApi, pod_context, pod_manifest


def test_the_containers_security_context_wins_over_the_pods_and_the_images_user() -> None:
    pod = pod_manifest(securityContext={"runAsUser": 1000, "fsGroup": 3000, "supplementalGroups": [4000]})
    container = {"name": "app", "securityContext": {"runAsUser": 2000, "runAsGroup": 20}}
    user = identity(pod, container, image_user="5000")
    assert (user.uid, user.gid, user.groups) == (2000, 20, [4000, 3000])
    assert identity(pod_manifest(), {"name": "app"}, image_user="5000:5000").uid == 5000
    assert identity(pod_manifest(), {"name": "app"}, image_user=None).uid is None


@pytest.mark.parametrize(
    ("image_user", "message"),
    [(None, "image will run as root"), ("0", "image will run as root"), ("app", r"non-numeric user \(app\)")],
)
def test_run_as_non_root_refuses_root_and_a_user_it_cannot_check(
    image_user: str | None, message: str
) -> None:
    container = {"name": "app", "securityContext": {"runAsNonRoot": True}}
    with pytest.raises(ContainerConfigError, match=message):
        identity(pod_manifest(), container, image_user)


def test_the_image_puts_its_venv_first_on_the_path(tmp_path: Path) -> None:
    environment = ImageEnvironment("app", tmp_path, env={"MODE": "serve"})
    env = image_env(environment, PreparedImage("app", tmp_path / "venv"), "web")
    assert env == {
        "MODE": "serve",
        "PATH": f"{tmp_path / 'venv' / 'bin'}:{DEFAULT_PATH}",
        "VIRTUAL_ENV": str(tmp_path / "venv"),
        "HOSTNAME": "web",
    }
    assert "VIRTUAL_ENV" not in image_env(environment, PreparedImage("app", None), "web")


def test_service_links_take_the_namespaces_services_unless_disabled() -> None:
    api = FakeNodeApi()
    kubernetes = {
        "metadata": {"name": "kubernetes"},
        "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 443}]},
    }
    api.service_lists = {
        "default": [kubernetes],
        "team-a": [
            {"metadata": {"name": "db"}, "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 5432}]}}
        ],
    }
    linked = asyncio.run(service_links(api, pod_manifest()))
    assert linked["DB_SERVICE_HOST"] == "10.96.0.9" and linked["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    unlinked = asyncio.run(service_links(api, pod_manifest(enableServiceLinks=False)))
    assert "DB_SERVICE_HOST" not in unlinked and "KUBERNETES_SERVICE_HOST" in unlinked


def build(tmp_path: Path, api: FakeNodeApi, container: dict[str, Any], sandbox: bool = True) -> ContainerSpec:
    environment = ImageEnvironment(
        "app", tmp_path / "image", entrypoint=("python",), code_path="/app", directories={"/data": 0o1777}
    )
    prepared = PreparedImage("app", tmp_path / "venv", binaries={"/usr/bin/mc": tmp_path / "bin" / "mc"})
    manifest = pod_manifest(container, volumes=[{"name": "scratch", "emptyDir": {}}])

    async def run() -> ContainerSpec:
        async with aiohttp.ClientSession() as http:
            context = pod_context(tmp_path, api, http, manifest)
            context.images["app"] = environment
            environment.requirements.parent.mkdir(parents=True, exist_ok=True)
            environment.requirements.write_text("# nothing\n")
            context.node.environments[prepared_key(environment)] = prepared
            if sandbox:
                context.layout.root.mkdir(parents=True)
                record = SandboxRecord(ProcessRef.of(os.getpid()), "10.244.0.7", "veth0")
                context.layout.sandbox_file.write_text(record.to_json())
            return await container_spec(context, PodVolumes(context), container, 2)

    return asyncio.run(run())


def test_a_spec_has_the_images_and_the_pods_settings_and_mounts_in_the_kubelets_order(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.config_maps["settings"] = {"mode": b"serve"}
    container = {
        "name": "app",
        "image": "app:1",
        "args": ["serve.py"],
        "env": [
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
        "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
    }
    spec = build(tmp_path, api, container)
    assert spec.argv == ["python", "serve.py"]
    assert (spec.env["MODE"], spec.env["IP"], spec.env["HOME"]) == ("serve", "10.244.0.7", "/root")
    assert (spec.memory_bytes, spec.cpu_millicores, spec.sandbox_pid) == (64 * 2**20, 500, os.getpid())
    assert [m.target for m in spec.mounts] == [
        "/usr/bin/mc",
        "/data",
        "/app",
        "/scratch",
        "/dev/termination-log",
    ]
    assert spec.mounts[3] == Mount(f"{VOLUMES_IN_POD}/scratch", "/scratch", False)
    layout = NodeLayout(tmp_path / "node").pod("0123456789abcdef")
    data = layout.volumes / ".image-directories" / "app" / "2" / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o1777  # fresh for this attempt, with the image's mode
    assert spec.termination_log == str(layout.termination_log("app", 2))


def test_a_spec_without_a_sandbox_is_refused_until_it_is_recreated(tmp_path: Path) -> None:
    with pytest.raises(ContainerConfigError, match="sandbox is gone"):
        build(tmp_path, FakeNodeApi(), {"name": "app", "image": "app:1"}, sandbox=False)
