"""The plan of a pod's root filesystem: host folders overlaid, host symlinks kept, /proc /sys /dev /run
/tmp the pod's own, private host folders empty but for the visible paths bound back read-only; and the
sandbox spec survives its JSON trip."""

from __future__ import annotations

from pathlib import Path

from mlplatform.local.node.sandbox import (
    HOST_PATHS_IN_POD,
    VOLUMES_IN_POD,
    MountStep,
    SandboxSpec,
    host_entries,
    outermost,
    plan_rootfs,
)

POD_ETC, POD_TMP, POD_VOLUMES = Path("/pods/u/etc"), Path("/pods/u/tmp"), Path("/pods/u/volumes")


def plan(entries: list[tuple[str, str | None]], visible: list[str] | None = None) -> list[MountStep]:
    return plan_rootfs(entries, POD_ETC, POD_TMP, POD_VOLUMES, visible_paths=visible or [])


def test_host_entries_keep_folders_and_symlinks_and_skip_what_the_pod_replaces(tmp_path: Path) -> None:
    for name in ("usr", "etc", "proc", "sys", "dev", "run", "tmp", "lost+found", "opt"):
        (tmp_path / name).mkdir()
    (tmp_path / "bin").symlink_to("usr/bin")
    (tmp_path / "vmlinuz").write_text("a file at the root")
    assert host_entries(tmp_path) == [("bin", "usr/bin"), ("etc", None), ("opt", None), ("usr", None)]


def test_plan_overlays_host_folders_and_keeps_symlinks() -> None:
    steps = plan([("bin", "usr/bin"), ("etc", None), ("usr", None)])
    assert steps[:3] == [
        MountStep("symlink", "/bin", source="usr/bin"),
        MountStep("overlay", "/etc", source="/etc"),
        MountStep("overlay", "/usr", source="/usr"),
    ]


def test_plan_gives_the_pod_its_own_proc_sys_dev_run_tmp_and_etc_files() -> None:
    steps = plan([("usr", None)])
    by_target = {s.target: s for s in steps}
    assert by_target["/proc"].op == "proc"
    assert by_target["/sys"] == MountStep("sysfs", "/sys", readonly=True)
    assert by_target["/dev"].op == "tmpfs"
    assert by_target["/dev/null"] == MountStep("file", "/dev/null", source="/dev/null")
    assert by_target["/dev/shm"].mode == 0o1777
    assert by_target["/dev/pts"].op == "devpts"
    assert by_target["/dev/fd"] == MountStep("symlink", "/dev/fd", source="/proc/self/fd")
    assert by_target["/dev/stderr"].source == "/proc/self/fd/2"
    assert by_target["/run"].op == "tmpfs"
    assert by_target["/tmp"] == MountStep("bind", "/tmp", source=str(POD_TMP))
    for name in ("hosts", "resolv.conf", "hostname"):
        assert by_target[f"/etc/{name}"] == MountStep("file", f"/etc/{name}", source=str(POD_ETC / name))
    assert by_target[VOLUMES_IN_POD] == MountStep("bind", VOLUMES_IN_POD, source=str(POD_VOLUMES))
    # The pod's own /dev comes before the devices bound into it, and /etc is overlaid before its files.
    targets = [s.target for s in steps]
    assert targets.index("/dev") < targets.index("/dev/null") < targets.index("/dev/pts")


def test_visible_paths_under_replaced_folders_are_bound_read_only_others_made_traversable() -> None:
    visible = ["/tmp/build/env", "/run/envs/py", "/root/.cache/mlplatform/envs/abc", "/usr/lib/python3.11"]
    steps = plan([("root", None), ("usr", None)], visible)
    assert steps[-4:] == [
        MountStep("bind", "/tmp/build/env", source="/tmp/build/env", readonly=True),
        MountStep("bind", "/run/envs/py", source="/run/envs/py", readonly=True),
        MountStep("traversable", "/root/.cache/mlplatform/envs/abc"),
        MountStep("traversable", "/usr/lib/python3.11"),
    ]
    # A bind under /tmp comes after the pod's own /tmp, or the pod's /tmp would hide it.
    targets = [s.target for s in steps]
    assert targets.index("/tmp") < targets.index("/tmp/build/env")


def test_sandbox_spec_round_trips_through_json() -> None:
    spec = SandboxSpec(
        hostname="web-1",
        rootfs="/pods/u/rootfs",
        upper="/pods/u/upper",
        steps=plan([("bin", "usr/bin"), ("usr", None)], ["/tmp/x"]),
        host_network=True,
    )
    again = SandboxSpec.from_json(spec.to_json())
    assert again == spec
    assert all(isinstance(step, MountStep) for step in again.steps)


def test_host_path_volumes_bind_the_real_host_folder_out_of_the_overlay() -> None:
    """A hostPath volume must write to the host: the plan binds the folder itself, not the overlay's view."""
    steps = plan_rootfs(
        [("srv", None)], POD_ETC, POD_TMP, POD_VOLUMES, visible_paths=[], host_paths={"shared": "/srv/shared"}
    )
    bind = next(s for s in steps if s.target == f"{HOST_PATHS_IN_POD}/shared")
    assert (bind.op, bind.source, bind.readonly) == ("bind", "/srv/shared", False)


def test_hidden_folders_are_empty_tmpfs_with_only_the_visible_paths_bound_back_read_only() -> None:
    home, state, repo = "/root", "/root/.cache/mlplatform/local", "/work/checkout"
    env, python, images = (
        "/root/.cache/mlplatform/envs/py-1",
        "/root/.pyenv/versions/3.11.7",
        f"{repo}/images/py",
    )
    steps = plan_rootfs(
        [("root", None), ("usr", None), ("work", None)],
        POD_ETC,
        POD_TMP,
        POD_VOLUMES,
        visible_paths=[env, images, python, "/usr/lib/python3"],
        hidden_paths=[home, state, repo],
    )
    by_target = {s.target: s for s in steps}
    assert by_target["/root"] == MountStep("tmpfs", "/root")  # instead of the overlay of the host's /root
    assert by_target["/work"] == MountStep("overlay", "/work", source="/work")
    assert by_target[repo] == MountStep("tmpfs", repo)
    assert state not in by_target  # inside the home, hidden with it
    for path in (env, images, python):
        assert by_target[path] == MountStep("bind", path, source=path, readonly=True)
    assert by_target["/usr/lib/python3"] == MountStep("traversable", "/usr/lib/python3")
    # The tmpfs covers the overlay, and the visible paths are bound into it afterwards.
    targets = [s.target for s in steps]
    assert targets.index("/work") < targets.index(repo) < targets.index(images)


def test_outermost_keeps_each_hidden_folder_once_and_never_the_root_or_the_pod_own_folders() -> None:
    folders = ["/root/.cache/mlplatform", "/root", "/home/me", "/home/mean", "/", "/tmp/state", "/root"]
    assert outermost(folders) == ["/home/me", "/home/mean", "/root"]
