"""Images as the local platform runs them: the map file, Dockerfile parsing, and built environments."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from mlplatform.local import images
from mlplatform.local.errors import LocalError
from mlplatform.local.images import (
    ImageEnvironment,
    build_commands,
    ensure_environment,
    environment_dir,
    host_command,
    load_image_map,
    parse_dockerfile,
    repository,
    resolve_image,
)

DOCKERFILE = """\
FROM golang:1.25 AS build
ENTRYPOINT ["/bin/false"]

# the image itself
FROM python:3.11-slim
ENV A=1 B="two words" \\
    C=${A}-x
ENV LEGACY value with spaces
COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt \\
 # a comment inside a continued instruction
 && true
WORKDIR /opt
WORKDIR app
COPY --chown=1000:1000 . .
USER 1000:1000
ENTRYPOINT ["python", "/opt/app/entrypoint.py"]
CMD ["python", "train.py"]
"""


def test_parse_dockerfile_reads_the_final_stage() -> None:
    settings = parse_dockerfile(DOCKERFILE)
    assert settings.entrypoint == ("python", "/opt/app/entrypoint.py")
    assert settings.cmd == ("python", "train.py")
    assert settings.working_dir == "/opt/app"
    assert settings.code_path == "/opt/app"
    assert settings.user == "1000:1000"
    assert dict(settings.env) == {"A": "1", "B": "two words", "C": "1-x", "LEGACY": "value with spaces"}


def test_parse_dockerfile_shell_form_and_defaults() -> None:
    settings = parse_dockerfile("FROM python:3.11\nCMD python -m http.server\n")
    assert settings.cmd == ("/bin/sh", "-c", "python -m http.server")
    assert (settings.entrypoint, settings.working_dir, settings.code_path, settings.user) == (
        (),
        None,
        None,
        None,
    )


def test_parse_dockerfile_refuses_what_the_local_node_cannot_reproduce() -> None:
    with pytest.raises(LocalError, match=r"\$PATH"):
        parse_dockerfile("FROM python:3.11\nENV PATH=/opt/venv/bin:$PATH\n")
    with pytest.raises(LocalError, match="JSON list"):
        parse_dockerfile('FROM python:3.11\nCMD ["python", 3]\n')


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("mlplatform/trainer-sklearn", "mlplatform/trainer-sklearn"),
        ("mlplatform/trainer-sklearn:0.1.0", "mlplatform/trainer-sklearn"),
        ("docker.io/mlplatform/trainer-sklearn:0.1.0@sha256:" + "a" * 64, "mlplatform/trainer-sklearn"),
        ("localhost:5000/mlplatform/trainer-minimal", "mlplatform/trainer-minimal"),
        ("registry.example.com:443/team/image:tag", "team/image"),
        ("python:3.11-slim", "python"),
        ("docker.io/library/python:3.11", "python"),
    ],
)
def test_repository_ignores_registry_tag_and_digest(reference: str, expected: str) -> None:
    assert repository(reference) == expected


def test_the_repository_image_map() -> None:
    image_map = load_image_map()
    names = {entry.image for entry in image_map}
    assert {"mlplatform/mlflow-server", "mlplatform/trainer-minimal", "mlplatform/trainer-sklearn"} <= names
    sklearn = resolve_image("docker.io/mlplatform/trainer-sklearn:0.1.0@sha256:" + "b" * 64, image_map)
    assert sklearn is not None and sklearn.context.name == "sklearn"
    assert resolve_image("ghcr.io/someone/else:1", image_map) is None
    for entry in image_map:
        assert entry.requirements.is_file()
        for arg in entry.command:  # every file the command names is in the folder the node shows there
            if entry.code_path and arg.startswith(entry.code_path + "/"):
                assert (entry.context / arg[len(entry.code_path) + 1 :]).is_file(), arg


def test_host_command_runs_the_image_command_with_the_environment_and_the_folder(tmp_path: Path) -> None:
    env = ImageEnvironment(
        "x/y", tmp_path, ("python", "/opt/x/entrypoint.py"), ("python", "train.py"), "/opt/x", {}, "/opt/x"
    )
    venv = tmp_path / "venv"
    assert host_command(env, venv) == [
        str(venv / "bin/python"),
        f"{tmp_path}/entrypoint.py",
        "python",
        "train.py",
    ]
    assert host_command(env, venv, ["mlflow", "--version"]) == ["mlflow", "--version"]


def test_build_commands_use_uv_when_present(tmp_path: Path) -> None:
    with_uv = build_commands(tmp_path / "requirements.txt", tmp_path / "env", "/usr/bin/uv")
    assert [argv[:2] for argv in with_uv] == [["/usr/bin/uv", "venv"], ["/usr/bin/uv", "pip"]]
    without = build_commands(tmp_path / "requirements.txt", tmp_path / "env", None)
    assert without[0][1:3] == ["-m", "venv"] and without[1][1:4] == ["-m", "pip", "install"]


def _image(folder: Path, requirements: str) -> ImageEnvironment:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text('FROM python:3.11-slim\nCMD ["python"]\n')
    (folder / "requirements.txt").write_text(requirements)
    return images.image_environment("test/tiny", folder)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build with `python -m venv` and pip from ensurepip: no package index is needed here."""
    monkeypatch.setattr(images, "_uv", lambda: None)
    monkeypatch.setenv("PIP_NO_INDEX", "1")


@pytest.mark.usefixtures("offline")
def test_ensure_environment_builds_once_even_when_asked_twice_at_once(tmp_path: Path) -> None:
    env = _image(tmp_path / "image", "# nothing beyond the standard library\n")
    messages: list[str] = []
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(ensure_environment(env, tmp_path / "cache", messages.append))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    target = environment_dir(env, tmp_path / "cache")
    assert results == [target, target]
    assert target.name.startswith("test-tiny-") and len(target.name) == len("test-tiny-") + 12
    assert os.access(target / "bin" / "python", os.X_OK)
    assert [m for m in messages if m.startswith("building")] == [
        "building environment for test/tiny (not built yet) …"
    ]
    assert any(m.startswith("built environment for test/tiny in ") for m in messages)
    assert ensure_environment(env, tmp_path / "cache", messages.append) == target  # cached: no new messages
    assert len(messages) == 2


@pytest.mark.usefixtures("offline")
def test_a_failed_build_says_why_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = _image(tmp_path / "image", "./no-such-project\n")
    with pytest.raises(LocalError, match="building the environment of test/tiny") as failure:
        ensure_environment(env, tmp_path / "cache", lambda _: None)
    assert "no-such-project" in failure.value.details
    assert not environment_dir(env, tmp_path / "cache").exists()


@pytest.mark.usefixtures("offline")
def test_an_unfinished_environment_is_rebuilt(tmp_path: Path) -> None:
    env = _image(tmp_path / "image", "\n")
    target = environment_dir(env, tmp_path / "cache")
    (target / "bin").mkdir(parents=True)
    (target / "bin" / "python").touch()  # as a build killed half-way leaves it
    messages: list[str] = []
    ensure_environment(env, tmp_path / "cache", messages.append)
    assert messages[0] == "building environment for test/tiny (an earlier build did not finish) …"
