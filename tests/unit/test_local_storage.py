"""The volume provisioner's objects and start-up: a default class served by rancher's local-path provisioner,
volumes kept in the state directory (so `down` removes them), and upstream's rights for its user."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from mlplatform.local import cluster, storage
from mlplatform.local.config import LocalConfig, StateLayout, claim_state_dir
from mlplatform.local.node.part import LocalNode
from mlplatform.local.platform import services_of


def test_the_default_class_is_served_by_the_provisioner_once_a_pod_needs_the_claim() -> None:
    assert storage.storage_class() == {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "standard",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "rancher.io/local-path",
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
    }


def test_volumes_live_in_the_state_directory_in_world_writable_folders(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path / "state")
    volumes = storage.volumes_dir(layout)
    assert volumes.parent == layout.root  # removed with the state directory
    data = storage.config_map(volumes)["data"]
    assert json.loads(data["config.json"]) == {
        "nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [str(volumes)]}]
    }
    assert 'mkdir -m 0777 -p "$VOL_DIR"' in data["setup"]  # non-root database pods can write
    assert 'rm -rf "$VOL_DIR"' in data["teardown"]
    helper = yaml.safe_load(data["helperPod.yaml"])
    assert [c["image"] for c in helper["spec"]["containers"]] == ["busybox"]


def test_the_namespace_and_the_helpers_service_account_come_before_what_they_hold(tmp_path: Path) -> None:
    objects = storage.storage_objects(tmp_path)
    kinds = [o["kind"] for o in objects]
    assert kinds[:2] == ["Namespace", "ServiceAccount"]
    namespaced = [o for o in objects if o["metadata"].get("namespace")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"local-path-storage"}
    assert {"ConfigMap", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "StorageClass"} <= set(
        kinds
    )


def test_the_provisioners_user_has_upstreams_rights() -> None:
    objects = {o["kind"]: o for o in storage.rbac_objects()}
    cluster_rules = {
        r: set(rule["verbs"]) for rule in objects["ClusterRole"]["rules"] for r in rule["resources"]
    }
    assert {"create", "delete"} <= cluster_rules["persistentvolumes"]
    assert cluster_rules["persistentvolumeclaims"] == {"get", "list", "watch"}
    assert {"create", "delete"} <= set(objects["Role"]["rules"][0]["verbs"])  # helper pods, in its namespace
    for binding in ("ClusterRoleBinding", "RoleBinding"):
        assert objects[binding]["subjects"] == [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": storage.PROVISIONER_USER}
        ]


def test_the_provisioner_runs_on_the_host_with_its_own_kubeconfig(tmp_path: Path) -> None:
    argv = storage.provisioner_argv(Path("/bin/lpp"), tmp_path / "lpp.kubeconfig")
    assert argv[:2] == ["/bin/lpp", "start"]
    assert f"--kubeconfig={tmp_path / 'lpp.kubeconfig'}" in argv
    assert "--configmap-name=local-path-config" in argv and "--namespace=local-path-storage" in argv
    config = LocalConfig(state_dir=tmp_path, cache_dir=tmp_path)
    node = LocalNode()
    assert storage.PROVISIONER in node.binaries(config)
    assert storage.PROVISIONER in [s.name for s in services_of(node, config)]


def test_ready_only_once_the_latest_start_says_so(tmp_path: Path) -> None:
    log = tmp_path / "local-path-provisioner.log"
    check = storage.started_since_last_start(log, storage.PROVISIONER)
    assert check() is not None  # no log yet
    log.write_text(f"--- 1 starting local-path-provisioner\nI1 {storage.READY_LINE}\n")
    assert check() is None
    with log.open("a") as handle:
        handle.write("--- 2 starting local-path-provisioner\nI2 Starting provisioner controller\n")
    assert check() is not None  # an earlier start's line does not count
    with log.open("a") as handle:
        handle.write(f"I2 {storage.READY_LINE}\n")
    assert check() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a folder owned by another user")
def test_down_removes_volumes_a_helper_made_for_another_user(tmp_path: Path) -> None:
    """A database pod leaves its data owned by its own user and closed to others: `down` still removes it."""
    config = LocalConfig(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", node=False, stack=False)
    layout = claim_state_dir(config)
    data = storage.volumes_dir(layout) / "pvc-1_team-a_data" / "pgdata"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("16\n")
    for path in (data / "PG_VERSION", data):
        os.chown(path, 999, 999)
    (data / "PG_VERSION").chmod(0o400)
    data.chmod(0o700)
    cluster.down(config, log=lambda _: None)
    assert not layout.root.exists()
