"""The OCI config runc creates a container from: containerd's default capabilities less those dropped, the
container's identity, command and mounts, a read-only root only when asked, the pod's private folder and
the kernel's sensitive /proc files masked, a devices cgroup that denies what runc does not allow, and the
RuntimeDefault seccomp section only for containers that ask for it."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from mlplatform.local.node import oci, seccomp
from mlplatform.local.node.sandbox import POD_PRIVATE
from mlplatform.local.node.shim import Bundle, ContainerSpec, Identity, Mount

ROOTFS = "/.mlplatform/volumes/.runtime/pod-app-0/rootfs"


def spec(**changes: object) -> ContainerSpec:
    values: dict[str, object] = {
        "name": "app",
        "argv": ["python", "-m", "http.server"],
        "env": {"PATH": "/usr/bin", "MODE": "a=b"},
        "working_dir": "/srv",
        "sandbox_pid": 1,
        "mounts": [Mount("/.mlplatform/volumes/data", "/data"), Mount("/opt/code", "/app", readonly=True)],
        "identity": Identity(uid=1000, gid=2000, groups=[3000], no_new_privs=True),
        "cgroup": "mlplatform/pod/app-0",
        "container_id": "pod-app-0",
        "runtime_dir": "/state/pods/pod/volumes/.runtime",
        "memory_bytes": None,
        "cpu_millicores": None,
        "log_file": "0.log",
        "state_file": "state.json",
        "exit_file": "exit.json",
    }
    return ContainerSpec(**{**values, **changes})  # type: ignore[arg-type]


def config_of(container: ContainerSpec) -> dict[str, object]:
    return oci.config(container, rootfs=ROOTFS, read_only_paths=["/usr", "/tmp"], cgroup_path="/cg")


def test_capabilities_are_containerds_defaults_less_those_dropped() -> None:
    assert oci.capabilities([]) == list(oci.DEFAULT_CAPABILITIES)
    kept = oci.capabilities(["chown", "CAP_NET_RAW"])
    assert "CAP_CHOWN" not in kept and "CAP_NET_RAW" not in kept and "CAP_KILL" in kept
    assert oci.capabilities(["NET_RAW", "ALL"]) == []
    assert "CAP_SYS_ADMIN" not in oci.capabilities([])
    with pytest.raises(ValueError, match="unknown capability 'NOPE'"):
        oci.capabilities(["CHOWN", "NOPE"])


def test_the_process_runs_the_command_as_the_containers_user_with_its_environment() -> None:
    process = config_of(spec())["process"]
    assert process["args"] == ["python", "-m", "http.server"]
    assert process["env"] == ["PATH=/usr/bin", "MODE=a=b"]
    assert process["cwd"] == "/srv"
    assert process["user"] == {"uid": 1000, "gid": 2000, "additionalGids": [3000]}
    assert process["noNewPrivileges"] is True
    assert process["terminal"] is False
    caps = process["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == list(oci.DEFAULT_CAPABILITIES)
    assert "inheritable" not in caps and "ambient" not in caps  # as containerd since CVE-2022-24769
    assert config_of(spec(identity=Identity()))["process"]["user"] == {
        "uid": 0,
        "gid": 0,
        "additionalGids": [],
    }


def test_a_new_pid_and_mount_namespace_the_pods_root_and_the_containers_mounts_over_a_fresh_proc() -> None:
    config = config_of(spec())
    assert config["root"] == {"path": ROOTFS, "readonly": False}
    assert config["linux"]["namespaces"] == [{"type": "pid"}, {"type": "mount"}]
    assert config["linux"]["cgroupsPath"] == "/cg"
    assert config["mounts"] == [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": oci.PROC_OPTIONS},
        {
            "destination": "/data",
            "type": "bind",
            "source": "/.mlplatform/volumes/data",
            "options": ["rbind", "rw"],
        },
        {"destination": "/app", "type": "bind", "source": "/opt/code", "options": ["rbind", "ro"]},
    ]


def test_the_pods_private_folder_and_sensitive_proc_files_are_masked_and_devices_denied() -> None:
    linux = config_of(spec())["linux"]
    assert POD_PRIVATE in linux["maskedPaths"] and "/proc/kcore" in linux["maskedPaths"]
    assert linux["readonlyPaths"] == list(oci.READONLY_PATHS)
    assert linux["resources"]["devices"] == [{"allow": False, "access": "rwm"}]


def test_a_read_only_root_makes_the_root_and_the_pods_mounts_read_only() -> None:
    config = config_of(spec(read_only_root=True))
    assert config["root"]["readonly"] is True
    assert config["linux"]["readonlyPaths"] == [*oci.READONLY_PATHS, "/usr", "/tmp"]


def test_runtime_default_gets_the_seccomp_section_and_unconfined_none() -> None:
    assert "seccomp" not in config_of(spec())["linux"]
    profile = config_of(spec(seccomp=seccomp.RUNTIME_DEFAULT))["linux"]["seccomp"]
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    assert "SCMP_ARCH_X86_64" in profile["architectures"]
    denied, *clone_rules, clone3 = profile["syscalls"]
    assert {"unshare", "mount", "keyctl", "bpf", "setns"} <= set(denied["names"])
    assert denied["action"] == "SCMP_ACT_ERRNO" and denied["errnoRet"] == errno.EPERM
    assert [rule["args"][0]["value"] for rule in clone_rules] == list(seccomp.NAMESPACE_FLAGS)
    assert all(
        rule["names"] == ["clone"] and rule["args"][0]["op"] == "SCMP_CMP_MASKED_EQ" for rule in clone_rules
    )
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}


def test_the_bundle_is_where_the_host_and_runc_in_the_pods_root_both_find_it(tmp_path: Path) -> None:
    bundle = Bundle(str(tmp_path / "runtime"), "pod-app-0")
    assert bundle.host("config.json") == str(tmp_path / "runtime" / "pod-app-0" / "config.json")
    assert bundle.in_pod("rootfs") == ROOTFS
    assert bundle.runc("start", "pod-app-0") == [
        "runc",
        "--root",
        str(tmp_path / "runtime" / "state"),
        "start",
        "pod-app-0",
    ]
    assert bundle.runc("create", in_pod=True)[:3] == ["runc", "--root", "/.mlplatform/volumes/.runtime/state"]
