"""The trainer images follow one layout and share one entrypoint."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from mlplatform.local.images import REPO_ROOT, image_environment

TRAINERS = REPO_ROOT / "trainer_images"
FOLDERS = sorted(p.parent for p in TRAINERS.glob("*/Dockerfile"))
FILES = (
    "Dockerfile",
    "requirements.txt",
    "entrypoint.py",
    "train.py",
    "MLproject",
    "python_env.yaml",
    "README.md",
)


def requirement_lines(folder: Path) -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in (folder / "requirements.txt").read_text().splitlines())
    return {line for line in lines if line}


def test_there_are_trainer_images() -> None:
    assert {folder.name for folder in FOLDERS} >= {"minimal", "sklearn"}


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_each_trainer_folder_is_complete(folder: Path) -> None:
    for name in FILES:
        assert (folder / name).is_file(), f"{folder.name}/{name} is missing"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_every_trainer_image_checks_before_it_runs(folder: Path) -> None:
    image = image_environment(f"mlplatform/trainer-{folder.name}", folder)
    assert image.code_path == "/opt/trainer" and image.working_dir == "/opt/trainer"
    assert image.entrypoint == ("python", "/opt/trainer/entrypoint.py")
    assert image.cmd == ("python", "train.py")


def test_the_entrypoint_copies_are_identical() -> None:
    copies = {folder.name: (folder / "entrypoint.py").read_text() for folder in FOLDERS}
    assert len(set(copies.values())) == 1, f"trainer_images/*/entrypoint.py differ: {sorted(copies)}"


def test_every_trainer_has_what_every_trainer_needs() -> None:
    minimal = requirement_lines(TRAINERS / "minimal")
    assert {re.split(r"[=<>~!]", line)[0] for line in minimal} == {
        "mlflow",
        "boto3",
        "psycopg2-binary",
        "pillow",
        "httptools",  # the model server's HTTP parser, event loop and JSON decoder
        "uvloop",
        "orjson",
    }
    for folder in FOLDERS:
        assert minimal <= requirement_lines(folder), f"{folder.name} lacks part of the minimal set"
    sklearn = {re.split(r"[=<>~!]", line)[0] for line in requirement_lines(TRAINERS / "sklearn")}
    assert {"scikit-learn", "pandas"} <= sklearn


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_mlproject_parameters_are_flags_of_the_script(folder: Path) -> None:
    project = yaml.safe_load((folder / "MLproject").read_text())
    script = (folder / "train.py").read_text()
    main = project["entry_points"]["main"]
    command = shlex.split(main["command"])
    assert command[:2] == ["python", "train.py"]
    for name in main["parameters"]:
        flag = "--" + name.replace("_", "-")
        assert flag in command and f'"{flag}"' in script, f"{folder.name}: {flag}"
        assert f"{{{name}}}" in main["command"]


def load_entrypoint() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "trainer_entrypoint", TRAINERS / "minimal" / "entrypoint.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("text", "reason"),
    [("not json", "not valid JSON"), ('["a"]', "JSON object of strings"), ('{"alpha": 0.5}', "JSON object")],
)
def test_the_entrypoint_refuses_malformed_parameters(text: str, reason: str) -> None:
    entrypoint = load_entrypoint()
    with pytest.raises(entrypoint.TrainerError, match=reason):
        entrypoint.check_parameters(text)
    entrypoint.check_parameters('{"alpha": "0.5"}')
