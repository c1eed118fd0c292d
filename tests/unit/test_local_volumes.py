"""Volume contents render as the kubelet renders them, unsafe item paths are refused, and the atomic
writer switches `..data` so a reader never sees half an update."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from mlplatform.local.node.volumes import (
    DATA_LINK,
    ClaimError,
    VolumeError,
    VolumeFile,
    VolumeLookups,
    binds_host_folder,
    claim_names,
    claim_sources,
    read_only_volume,
    referenced_objects,
    rendered_files,
    with_claim_sources,
    write_atomically,
)

POD: dict[str, Any] = {
    "metadata": {"name": "web-1", "namespace": "team-a", "uid": "u-1", "labels": {"app": "web"}},
    "spec": {
        "containers": [{"name": "main", "resources": {"limits": {"memory": "128Mi"}}}],
    },
    "status": {},
}
LOOKUPS = VolumeLookups(
    config_maps={"settings": {"mode": b"fast", "nested.conf": b"a=1\n"}, "gone": None},
    secrets={"creds": {"password": b"s3cr3t", "user": b"admin"}},
    tokens={"": "default-token", "vault": "vault-token"},
    node_allocatable={"cpu": "2", "memory": "24Gi"},
)


def files(volume: dict[str, Any], lookups: VolumeLookups = LOOKUPS) -> dict[str, tuple[bytes, int]]:
    rendered = rendered_files(volume, POD, lookups)
    assert rendered is not None
    return {f.path: (f.content, f.mode) for f in rendered}


def test_config_map_renders_every_key_with_the_default_mode() -> None:
    assert files({"name": "v", "configMap": {"name": "settings"}}) == {
        "mode": (b"fast", 0o644),
        "nested.conf": (b"a=1\n", 0o644),
    }


def test_config_map_items_choose_keys_paths_and_modes() -> None:
    volume = {
        "name": "v",
        "configMap": {
            "name": "settings",
            "defaultMode": 0o440,
            "items": [
                {"key": "nested.conf", "path": "conf/a.conf", "mode": 0o600},
                {"key": "mode", "path": "m"},
            ],
        },
    }
    assert files(volume) == {"conf/a.conf": (b"a=1\n", 0o600), "m": (b"fast", 0o440)}


def test_missing_config_map_fails_unless_optional() -> None:
    with pytest.raises(VolumeError, match='configmap "gone" not found'):
        rendered_files({"name": "v", "configMap": {"name": "gone"}}, POD, LOOKUPS)
    assert files({"name": "v", "configMap": {"name": "gone", "optional": True}}) == {}
    missing_key = {"name": "v", "configMap": {"name": "settings", "items": [{"key": "nokey", "path": "x"}]}}
    with pytest.raises(VolumeError, match="has no key 'nokey'"):
        rendered_files(missing_key, POD, LOOKUPS)


def test_secret_volume_uses_secret_name_and_default_mode() -> None:
    volume = {"name": "v", "secret": {"secretName": "creds", "defaultMode": 0o400}}
    assert files(volume) == {"password": (b"s3cr3t", 0o400), "user": (b"admin", 0o400)}
    with pytest.raises(VolumeError, match='secret "absent" not found'):
        rendered_files({"name": "v", "secret": {"secretName": "absent"}}, POD, LOOKUPS)


def test_downward_api_volume_renders_fields_labels_and_resources() -> None:
    volume = {
        "name": "v",
        "downwardAPI": {
            "items": [
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {
                    "path": "mem",
                    "resourceFieldRef": {
                        "containerName": "main",
                        "resource": "limits.memory",
                        "divisor": "1Mi",
                    },
                },
                {"path": "cpu", "resourceFieldRef": {"containerName": "main", "resource": "limits.cpu"}},
            ]
        },
    }
    assert files(volume) == {
        "name": (b"web-1", 0o644),
        "labels": (b'app="web"', 0o644),
        "mem": (b"128", 0o644),
        "cpu": (b"2", 0o644),  # no cpu limit: the node's allocatable
    }


def test_projected_volume_with_token_config_map_and_downward_api() -> None:
    volume = {
        "name": "kube-api-access",
        "projected": {
            "defaultMode": 0o420,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"serviceAccountToken": {"path": "vault/token", "audience": "vault"}},
                {"configMap": {"name": "settings", "items": [{"key": "mode", "path": "mode"}]}},
                {
                    "downwardAPI": {
                        "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                    }
                },
            ],
        },
    }
    assert files(volume) == {
        "token": (b"default-token", 0o420),
        "vault/token": (b"vault-token", 0o420),
        "mode": (b"fast", 0o420),
        "namespace": (b"team-a", 0o420),
    }


def test_projected_token_not_yet_issued_holds_the_volume() -> None:
    volume = {
        "name": "v",
        "projected": {"sources": [{"serviceAccountToken": {"path": "t", "audience": "s3"}}]},
    }
    with pytest.raises(VolumeError, match="no service-account token for audience 's3'"):
        rendered_files(volume, POD, LOOKUPS)


@pytest.mark.parametrize("path", ["/etc/passwd", "../escape", "a/../../b", "..data/x", "", "a/.."])
def test_unsafe_item_paths_are_rejected(path: str) -> None:
    volume = {"name": "v", "configMap": {"name": "settings", "items": [{"key": "mode", "path": path}]}}
    with pytest.raises(VolumeError, match="invalid volume item path"):
        rendered_files(volume, POD, LOOKUPS)


def test_plain_folders_render_nothing_and_unknown_kinds_are_refused() -> None:
    assert rendered_files({"name": "scratch", "emptyDir": {}}, POD, LOOKUPS) is None
    assert rendered_files({"name": "host", "hostPath": {"path": "/data"}}, POD, LOOKUPS) is None
    assert rendered_files({"name": "pvc", "persistentVolumeClaim": {"claimName": "x"}}, POD, LOOKUPS) is None
    with pytest.raises(VolumeError, match="does not support nfs"):
        rendered_files({"name": "share", "nfs": {"server": "nas", "path": "/"}}, POD, LOOKUPS)


def claim(name: str, volume_name: str = "", phase: str = "Pending", **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}", **metadata},
        "spec": {"volumeName": volume_name} if volume_name else {},
        "status": {"phase": phase},
    }


def persistent_volume(name: str, claim_uid: str, source: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"claimRef": {"uid": claim_uid}, **source}}


def pod_with_claims(*claims: str, read_only: bool = False) -> dict[str, Any]:
    volumes = [
        {"name": f"v-{c}", "persistentVolumeClaim": {"claimName": c, "readOnly": read_only}} for c in claims
    ]
    return {**POD, "spec": {**POD["spec"], "volumes": [*volumes, {"name": "scratch", "emptyDir": {}}]}}


def test_a_bound_claim_mounts_its_volumes_host_folder() -> None:
    """As the kubelet does, a claim volume is its bound PersistentVolume's source: hostPath as it is, a local
    volume as a folder that must exist."""
    lookups = VolumeLookups(
        claims={"data": claim("data", "pv-1", "Bound"), "logs": claim("logs", "pv-2", "Bound")},
        persistent_volumes={
            "pv-1": persistent_volume(
                "pv-1", "uid-data", {"hostPath": {"path": "/v/a", "type": "DirectoryOrCreate"}}
            ),
            "pv-2": persistent_volume("pv-2", "uid-logs", {"local": {"path": "/v/b"}}),
        },
    )
    pod = pod_with_claims("data", "logs")
    assert claim_names(pod) == {"data", "logs"}
    sources = claim_sources(pod, lookups)
    assert sources == {
        "v-data": {"path": "/v/a", "type": "DirectoryOrCreate"},
        "v-logs": {"path": "/v/b", "type": "Directory"},
    }
    assert with_claim_sources(pod, sources)["spec"]["volumes"] == [
        {"name": "v-data", "hostPath": {"path": "/v/a", "type": "DirectoryOrCreate"}},
        {"name": "v-logs", "hostPath": {"path": "/v/b", "type": "Directory"}},
        {"name": "scratch", "emptyDir": {}},
    ]
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]  # the pod itself is left as it is


@pytest.mark.parametrize(
    ("claims", "volumes", "problem"),
    [
        ({}, {}, 'failed to fetch PVC from API server: persistentvolumeclaims "data" not found'),
        (
            {"data": claim("data")},
            {},
            "PVC team-a/data has non-bound phase ('Pending') or empty pvc.Spec.VolumeName ('')",
        ),
        (
            {"data": claim("data", "pv-1", "Bound", deletionTimestamp="2026-01-01T00:00:00Z")},
            {},
            "can't start pod because PVC team-a/data is being deleted",
        ),
        (
            {"data": claim("data", "pv-1", "Bound")},
            {},
            'failed to fetch PV pv-1 from API server: persistentvolumes "pv-1" not found',
        ),
        (
            {"data": claim("data", "pv-1", "Bound")},
            {"pv-1": persistent_volume("pv-1", "uid-other", {"hostPath": {"path": "/v/a"}})},
            "found PV object 'pv-1' but its ClaimRef.UID ('uid-other') points to a different "
            "PVC.UID ('uid-data')",
        ),
        (
            {"data": claim("data", "pv-1", "Bound")},
            {"pv-1": persistent_volume("pv-1", "uid-data", {"nfs": {"server": "nas", "path": "/"}})},
            "PV pv-1 is neither a hostPath nor a local volume, the kinds the local node mounts",
        ),
    ],
)
def test_a_claim_that_cannot_be_mounted_yet_holds_the_pod_with_the_kubelets_words(
    claims: dict[str, Any], volumes: dict[str, Any], problem: str
) -> None:
    lookups = VolumeLookups(claims=claims, persistent_volumes=volumes)
    with pytest.raises(ClaimError) as raised:
        claim_sources(pod_with_claims("data"), lookups)
    assert str(raised.value) == (
        "Unable to attach or mount volumes: unmounted volumes=[v-data]: "
        f"error processing PVC team-a/data: {problem}"
    )


def test_claims_and_host_paths_bind_real_folders_and_read_only_claims_mount_read_only() -> None:
    writable = pod_with_claims("a")["spec"]["volumes"][0]
    read_only = pod_with_claims("a", read_only=True)["spec"]["volumes"][0]
    assert binds_host_folder(writable) and binds_host_folder({"name": "h", "hostPath": {"path": "/x"}})
    assert not binds_host_folder({"name": "e", "emptyDir": {}})
    assert read_only_volume(read_only) and not read_only_volume(writable)
    assert read_only_volume({"name": "c", "configMap": {"name": "x"}})
    assert not read_only_volume({"name": "e", "emptyDir": {}})


def test_write_atomically_switches_data_link_and_links_top_level_names(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    first = [VolumeFile("mode", b"fast"), VolumeFile("conf/a.conf", b"a=1\n", 0o600)]
    assert write_atomically(target, first) is True
    data = target / DATA_LINK
    assert data.is_symlink() and not os.readlink(data).startswith("/")  # relative: valid inside the pod
    payload = target / os.readlink(data)
    assert (target / "mode").is_symlink() and os.readlink(target / "mode") == f"{DATA_LINK}/mode"
    assert os.readlink(target / "conf") == f"{DATA_LINK}/conf"
    assert (target / "conf" / "a.conf").read_bytes() == b"a=1\n"
    assert (target / "conf" / "a.conf").stat().st_mode & 0o777 == 0o600
    assert (target / "mode").stat().st_mode & 0o777 == 0o644

    second = [VolumeFile("mode", b"slow"), VolumeFile("extra", b"new")]
    assert write_atomically(target, second) is True
    assert (target / "mode").read_bytes() == b"slow"
    assert (target / "extra").read_bytes() == b"new"
    assert not (target / "conf").exists() and not (target / "conf").is_symlink()  # stale link removed
    assert not payload.exists()  # the old payload is gone
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [DATA_LINK, os.readlink(target / DATA_LINK), "mode", "extra"]
    )


def test_write_atomically_leaves_unchanged_contents_alone(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    contents = [VolumeFile("a", b"1"), VolumeFile("d/b", b"2", 0o600)]
    assert write_atomically(target, contents) is True
    payload = os.readlink(target / DATA_LINK)
    assert write_atomically(target, list(contents)) is False
    assert os.readlink(target / DATA_LINK) == payload
    assert write_atomically(target, [VolumeFile("a", b"1"), VolumeFile("d/b", b"2", 0o644)]) is True  # mode


def test_write_atomically_gives_files_the_fs_group_when_it_can(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's group to an arbitrary fsGroup needs root")
    target = tmp_path / "vol"
    write_atomically(target, [VolumeFile("token", b"t", 0o440), VolumeFile("d/x", b"y")], gid=12345)
    assert (target / "token").stat().st_gid == 12345
    assert (target / "d" / "x").stat().st_gid == 12345


def test_empty_volume_has_only_the_data_link(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    assert write_atomically(target, []) is True
    assert [p.name for p in target.iterdir() if not p.name.startswith("..")] == []
    assert (target / DATA_LINK).is_dir()


def test_referenced_objects_from_volumes_env_and_env_from() -> None:
    pod = {
        "spec": {
            "volumes": [
                {"name": "a", "configMap": {"name": "cm-volume"}},
                {"name": "b", "secret": {"secretName": "secret-volume"}},
                {
                    "name": "c",
                    "projected": {
                        "sources": [
                            {"configMap": {"name": "cm-projected"}},
                            {"secret": {"name": "secret-projected"}},
                            {"serviceAccountToken": {"path": "token"}},
                        ]
                    },
                },
                {"name": "d", "emptyDir": {}},
            ],
            "initContainers": [{"name": "init", "envFrom": [{"secretRef": {"name": "secret-init"}}]}],
            "containers": [
                {
                    "name": "main",
                    "envFrom": [{"configMapRef": {"name": "cm-env-from"}}],
                    "env": [
                        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm-key", "key": "k"}}},
                        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "secret-key", "key": "k"}}},
                        {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "D", "value": "plain"},
                    ],
                }
            ],
        }
    }
    config_maps, secrets = referenced_objects(pod)
    assert config_maps == {"cm-volume", "cm-projected", "cm-env-from", "cm-key"}
    assert secrets == {"secret-volume", "secret-projected", "secret-init", "secret-key"}
