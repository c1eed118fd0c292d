"""One MLflow version: every image pins MLFLOW_VERSION, exactly."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mlplatform.local.images import REPO_ROOT, ImageEnvironment, load_image_map
from mlplatform.versions import MLFLOW_VERSION

# A requirement on mlflow or mlflow-skinny (extras allowed), in requirements.txt or a `pip install` line.
MLFLOW_REQUIREMENT = re.compile(
    r"""(?<![\w.-])(mlflow(?:-skinny)?)(\[[^\]]*\])?\s*(==|~=|>=|<=|!=|>|<|===)\s*([^\s;#"',\\]+)"""
)


def repo_files() -> list[Path]:
    """Every requirements file and Dockerfile of the repository (hidden folders such as .venv skipped)."""
    found = []
    for folder, subfolders, files in os.walk(REPO_ROOT):
        subfolders[:] = [
            d for d in subfolders if not d.startswith(".") and d not in ("node_modules", "__pycache__")
        ]
        for name in files:
            if (name.startswith("requirements") and name.endswith(".txt")) or name == "Dockerfile":
                found.append(Path(folder) / name)
    return found


def pins(path: Path) -> list[tuple[str, str, str]]:
    lines = [line.split("#", 1)[0] for line in path.read_text().splitlines()]
    return [(m.group(1), m.group(3), m.group(4)) for line in lines for m in MLFLOW_REQUIREMENT.finditer(line)]


def test_the_pattern_sees_the_ways_to_pin_mlflow(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text(
        "mlflow==3.1.0\nmlflow-skinny[databricks]>=2\n"
        "RUN pip install 'mlflow==1.0' boto3\nmlflow-export-import==1\n# mlflow==0.1\n"
    )
    assert pins(path) == [("mlflow", "==", "3.1.0"), ("mlflow-skinny", ">=", "2"), ("mlflow", "==", "1.0")]


def test_no_image_pins_another_mlflow() -> None:
    files = repo_files()
    assert files, "found no requirements files or Dockerfiles"
    wrong = [
        f"{path.relative_to(REPO_ROOT)}: {name}{op}{version}"
        for path in files
        for name, op, version in pins(path)
        if (op, version) != ("==", MLFLOW_VERSION)
    ]
    assert not wrong, f"every image must pin mlflow=={MLFLOW_VERSION} (versions.py): {wrong}"


@pytest.mark.parametrize(
    "image",
    # The operator speaks MLflow's REST API itself and carries no MLflow.
    [e for e in load_image_map() if e.image.startswith("mlplatform/") and e.image != "mlplatform/operator"],
    ids=lambda e: e.image,
)
def test_every_platform_image_pins_mlflow_exactly(image: ImageEnvironment) -> None:
    assert ("mlflow", "==", MLFLOW_VERSION) in pins(image.requirements)
