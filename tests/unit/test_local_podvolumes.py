"""A pod's volumes on the node, without a cluster: the objects they refer to are served by a small fake of
the Kubernetes API (nodefakes.py); the volumes are written for real into the pod's folders under a temporary
directory. Rendered volumes hold their keys, an emptyDir is a folder any user may write, a missing ConfigMap
holds the pod in ContainerCreating with a FailedMount event, a bound claim mounts its volume's folder, tokens
are renewed only near their expiry; and each volumeMount names where the sandbox shows its volume."""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mlplatform.local.node.podvolumes import (
    TOKEN_SECONDS,
    PodVolumes,
    prepare_plain_volume,
    token_due,
    volume_mounts,
)
from mlplatform.local.node.sandbox import HOST_PATHS_IN_POD, VOLUMES_IN_POD
from mlplatform.local.node.shim import Mount
from mlplatform.local.node.volumes import VolumeError
from nodefakes import FakeNodeApi, pod_context, pod_manifest

APP = {"name": "app", "image": "app:1"}
SETTINGS = {"name": "settings", "configMap": {"name": "app-settings"}}
SCRATCH = {"name": "scratch", "emptyDir": {}}


def synced(
    tmp_path: Path, api: FakeNodeApi, manifest: dict[str, Any], then: Callable[[PodVolumes], Awaitable[None]]
) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            await then(PodVolumes(pod_context(tmp_path, api, http, manifest)))

    asyncio.run(run())


def test_a_config_map_volume_holds_its_keys_and_an_empty_dir_is_writable_by_anyone(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.config_maps["app-settings"] = {"mode": b"serve"}

    async def scenario(volumes: PodVolumes) -> None:
        assert await volumes.sync() is True
        layout = volumes.pod.layout
        assert (layout.volume("settings") / "mode").read_bytes() == b"serve"
        assert stat.S_IMODE(layout.volume("scratch").stat().st_mode) == 0o777

    synced(tmp_path, api, pod_manifest(APP, volumes=[SETTINGS, SCRATCH]), scenario)
    assert api.events == []


def test_a_missing_config_map_holds_the_pod_in_container_creating_until_it_exists(tmp_path: Path) -> None:
    api = FakeNodeApi()

    async def scenario(volumes: PodVolumes) -> None:
        assert await volumes.sync() is False
        assert volumes.pod.waiting == {"app": ("ContainerCreating", "")}
        assert volumes.pod.wake_at is not None  # it tries again
        api.config_maps["app-settings"] = {"mode": b"serve"}
        assert await volumes.sync() is True
        assert volumes.pod.waiting == {}

    synced(tmp_path, api, pod_manifest(APP, volumes=[SETTINGS]), scenario)
    [(kind, reason, message)] = api.events
    assert (kind, reason) == ("Warning", "FailedMount")
    assert message.startswith("MountVolume.SetUp failed:") and "app-settings" in message


def claim(phase: str = "Bound") -> dict[str, Any]:
    metadata = {"name": "data", "namespace": "team-a", "uid": "claim-uid"}
    return {"metadata": metadata, "spec": {"volumeName": "pv-1"}, "status": {"phase": phase}}


def test_a_bound_claim_mounts_its_volumes_host_folder_with_the_sandbox(tmp_path: Path) -> None:
    api = FakeNodeApi()
    folder = tmp_path / "pv-1"
    api.claims["data"] = claim()
    api.persistent_volumes["pv-1"] = {
        "metadata": {"name": "pv-1"},
        "spec": {
            "hostPath": {"path": str(folder), "type": "DirectoryOrCreate"},
            "claimRef": {"uid": "claim-uid"},
        },
    }
    data = {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}

    async def scenario(volumes: PodVolumes) -> None:
        assert await volumes.sync() is True
        assert volumes.claim_sources == {"data": {"path": str(folder), "type": "DirectoryOrCreate"}}
        assert volumes.sandbox_pod()["spec"]["volumes"] == [
            {"name": "data", "hostPath": volumes.claim_sources["data"]}
        ]

    synced(tmp_path, api, pod_manifest(APP, volumes=[data]), scenario)
    assert folder.is_dir()


def test_an_unbound_claim_is_named_in_the_kubelets_words(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.claims["data"] = claim(phase="Pending")
    data = {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}

    async def scenario(volumes: PodVolumes) -> None:
        assert await volumes.sync() is False

    synced(tmp_path, api, pod_manifest(APP, volumes=[data]), scenario)
    [(_, reason, message)] = api.events
    assert reason == "FailedMount"
    assert message.startswith("Unable to attach or mount volumes: unmounted volumes=[data]")
    assert "has non-bound phase ('Pending')" in message


def test_a_token_is_renewed_only_when_a_fifth_of_its_life_is_left() -> None:
    now = time.time()
    assert token_due(None, now)
    assert not token_due(("t", now + TOKEN_SECONDS), now)
    assert token_due(("t", now + TOKEN_SECONDS * 0.1), now)


def test_projected_tokens_are_requested_once_per_audience_while_valid(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.token_expiry = time.time() + TOKEN_SECONDS
    token = {"serviceAccountToken": {"path": "token", "audience": "vault"}}
    projected = {"name": "identity", "projected": {"sources": [token]}}

    async def scenario(volumes: PodVolumes) -> None:
        await volumes.lookups(with_claims=False)
        await volumes.lookups(with_claims=False)
        assert api.tokens_issued == ["vault"]
        volumes.tokens["vault"] = ("old", time.time() + 10)  # near its expiry
        lookups = await volumes.lookups(with_claims=False)
        assert lookups.tokens == {"vault": "token-2"}

    synced(tmp_path, api, pod_manifest(APP, volumes=[projected]), scenario)


def test_a_host_path_directory_must_exist_unless_it_may_be_created(tmp_path: Path) -> None:
    made = tmp_path / "made" / "here"
    prepare_plain_volume(
        {"hostPath": {"path": str(made), "type": "DirectoryOrCreate"}}, tmp_path / "v1", None
    )
    assert made.is_dir()
    with pytest.raises(VolumeError, match="is not a directory"):
        prepare_plain_volume(
            {"hostPath": {"path": str(tmp_path / "nope"), "type": "Directory"}}, tmp_path / "v2", None
        )
    assert not (tmp_path / "v1").exists()  # the sandbox binds the host folder itself


def test_an_empty_dir_with_an_fs_group_belongs_to_it_and_passes_it_on(tmp_path: Path) -> None:
    folder = tmp_path / "scratch"
    prepare_plain_volume({"emptyDir": {}}, folder, 2000)
    assert (folder.stat().st_gid, stat.S_IMODE(folder.stat().st_mode)) == (2000, 0o2775)


def test_volume_mounts_name_where_the_sandbox_shows_each_volume() -> None:
    pod = pod_manifest(
        APP,
        volumes=[SETTINGS, SCRATCH, {"name": "host", "hostPath": {"path": "/srv"}}],
    )
    container = {
        "volumeMounts": [
            {"name": "settings", "mountPath": "/etc/app"},
            {"name": "scratch", "mountPath": "/work", "subPath": "a"},
            {"name": "host", "mountPath": "/srv", "readOnly": True},
        ]
    }
    assert volume_mounts(pod, container) == [
        Mount(f"{VOLUMES_IN_POD}/settings", "/etc/app", True),  # a rendered volume is always read-only
        Mount(f"{VOLUMES_IN_POD}/scratch/a", "/work", False),
        Mount(f"{HOST_PATHS_IN_POD}/host", "/srv", True),
    ]
