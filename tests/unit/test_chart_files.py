"""The chart's files that are generated or copied from elsewhere, and the operator image's pins."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement

from mlplatform.versions import MLFLOW_VERSION

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mlplatform"
# What only `mlplatform local` and the demo need, not the operator: uv builds the bench's image
# environments; the official clients, cryptography, psutil and PyYAML run the local platform and its node.
LOCAL_ONLY = {"uv", "kubernetes", "kubernetes-asyncio", "cryptography", "psutil", "pyyaml"}


def test_the_charts_crds_are_the_crds_folder_byte_for_byte() -> None:
    """crds/ is the source of truth; refresh the copy: `cp crds/*.yaml charts/mlplatform/crds/`."""
    source = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    copied = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert source
    assert copied == source


def test_the_chart_names_the_mlflow_version_the_platform_pins() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["annotations"]["mlplatform.dev/mlflow-version"] == MLFLOW_VERSION


def leaves(values: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for key, value in values.items():
        found.append((*path, key))
        if isinstance(value, dict) and value and key not in {"resources", "podAnnotations", "annotations"}:
            found += leaves(value, (*path, key))
    return found


def test_the_schema_describes_every_value_and_refuses_unknown_ones() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in leaves(values):
        node = schema
        for key in path:
            assert node.get("additionalProperties") is False, f"{'.'.join(path)}: its object takes any key"
            node = node["properties"][key]
        assert node.get("description"), f"{'.'.join(path)} has no description in values.schema.json"


def test_the_operator_image_pins_every_runtime_dependency_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ranges = {Requirement(r).name.lower().replace("_", "-"): Requirement(r) for r in project["dependencies"]}
    pins = {}
    for line in (ROOT / "operator" / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            pinned = Requirement(line)
            pins[pinned.name.lower().replace("_", "-")] = next(iter(pinned.specifier)).version
    assert pins.keys() == ranges.keys() - LOCAL_ONLY
    for name, version in pins.items():
        assert ranges[name].specifier.contains(version), f"{name}=={version} is outside {ranges[name]}"
