"""The local cluster's configuration: shifted ports, derived addresses, the saved JSON, and a state
directory that is created or adopted but never taken from a user."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mlplatform.local.config import (
    CONFIG_FILE,
    STATE_MARKER,
    LocalConfig,
    Network,
    Ports,
    StateLayout,
    claim_state_dir,
    load_config,
)
from mlplatform.local.errors import LocalError


def test_shifted_ports_move_everything_but_dns() -> None:
    base, moved = Ports(), Ports().shifted(3000)
    for field in dataclasses.fields(Ports):
        before, after = getattr(base, field.name), getattr(moved, field.name)
        assert after == (53 if field.name == "dns" else before + 3000), field.name
    assert Ports().shifted(0) == Ports()
    assert moved.apiserver == 19443


def test_default_ports_are_distinct() -> None:
    values = [getattr(Ports(), f.name) for f in dataclasses.fields(Ports)]
    assert len(values) == len(set(values))


def test_network_addresses_derive_from_its_ranges() -> None:
    network = Network()
    assert network.host_address == "10.244.0.1"
    assert network.apiserver_service_ip == "10.96.0.1"
    assert network.dns_service_ip == "10.96.0.10"
    other = Network(pod_cidr="10.250.3.0/24", service_cidr="10.100.0.0/16")
    assert (other.host_address, other.apiserver_service_ip, other.dns_service_ip) == (
        "10.250.3.1",
        "10.100.0.1",
        "10.100.0.10",
    )


def test_bind_address_is_the_host_address_with_a_node_and_loopback_without() -> None:
    with_node = LocalConfig(state_dir=Path("/s"), cache_dir=Path("/c"))
    without = dataclasses.replace(with_node, node=False, ports=Ports().shifted(10))
    assert with_node.apiserver_url == "https://10.244.0.1:16443"
    assert without.apiserver_url == "https://127.0.0.1:16453"


def test_local_config_round_trips_through_json(tmp_path: Path) -> None:
    config = LocalConfig(
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        node=False,
        stack=False,
        node_name="edge",
        ports=Ports().shifted(1234),
        network=Network(bridge="mlp9", pod_cidr="10.244.9.0/24"),
    )
    again = LocalConfig.from_json(config.to_json())
    assert again == config
    assert isinstance(again.state_dir, Path) and isinstance(again.ports, Ports)
    assert json.loads(config.to_json())["state_dir"] == str(tmp_path / "state")


def test_claim_state_dir_creates_a_new_one_and_marks_it(tmp_path: Path) -> None:
    config = LocalConfig(state_dir=tmp_path / "new" / "state", cache_dir=tmp_path / "cache")
    layout = claim_state_dir(config)
    assert layout.marker.is_file() and layout.marker.name == STATE_MARKER
    assert load_config(config.state_dir) == config
    assert layout.pki.stat().st_mode & 0o777 == 0o700
    assert all(p.is_dir() for p in (layout.logs, layout.run, layout.bin))


def test_claim_state_dir_adopts_an_empty_folder_and_its_own(tmp_path: Path) -> None:
    config = LocalConfig(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    config.state_dir.mkdir()
    claim_state_dir(config)
    (config.state_dir / "etcd").mkdir()
    (config.state_dir / "etcd" / "member").write_text("cluster data")
    claim_state_dir(config)  # ours: adopted, nothing removed
    assert (config.state_dir / "etcd" / "member").read_text() == "cluster data"


def test_claim_state_dir_refuses_a_users_folder_and_leaves_it_alone(tmp_path: Path) -> None:
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    config = LocalConfig(state_dir=folder, cache_dir=tmp_path / "cache")
    with pytest.raises(LocalError, match="already holds files that are not a local cluster's"):
        claim_state_dir(config)
    assert sorted(p.name for p in folder.iterdir()) == ["chapter1.tex"]
    assert (folder / "chapter1.tex").read_text() == "precious"


def test_load_config_none_for_a_new_or_users_folder_and_an_error_for_a_broken_file(tmp_path: Path) -> None:
    assert load_config(tmp_path / "nothing") is None
    (tmp_path / CONFIG_FILE).write_text('{"state_dir": "/x"}')
    assert load_config(tmp_path) is None  # a user's config.json, in a folder that is not a cluster's
    (tmp_path / STATE_MARKER).write_text("")
    with pytest.raises(LocalError, match="is not a valid local cluster configuration"):
        load_config(tmp_path)


def test_state_layout_names_its_paths_inside_the_root() -> None:
    layout = StateLayout(Path("/state"))
    assert layout.kubeconfig("kube-scheduler") == Path("/state/pki/kube-scheduler.kubeconfig")
    assert layout.admin_kubeconfig == Path("/state/kubeconfig")
    assert layout.postgres_socket == Path("/state/postgres/socket")
