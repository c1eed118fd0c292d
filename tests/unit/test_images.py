"""Images as the local platform runs them: the map file, Dockerfile parsing, and built environments."""

from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path

import pytest

from mlplatform.local import images
from mlplatform.local.errors import LocalError
from mlplatform.local.images import (
    ImageEnvironment,
    PreparedImage,
    build_commands,
    dockerfile_instructions,
    ensure_environment,
    ensure_image,
    environment_dir,
    host_command,
    load_image_map,
    parse_dockerfile,
    prepared_key,
    pull_failure,
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
# local node: handled by requirements.txt
COPY requirements.txt /tmp/requirements.txt
# Installs what the image runs.
# local node: handled by requirements.txt
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


@pytest.mark.parametrize("written", ["SIGINT", "INT", "sigint", "2"])
def test_stopsignal_is_what_stopping_the_container_sends(written: str) -> None:
    assert parse_dockerfile(f"FROM postgres\nSTOPSIGNAL {written}\n").stop_signal == signal.SIGINT
    assert parse_dockerfile("FROM python\n").stop_signal == signal.SIGTERM
    assert parse_dockerfile("FROM postgres\nSTOPSIGNAL SIGINT\nFROM python\n").stop_signal == signal.SIGTERM
    with pytest.raises(LocalError, match="STOPSIGNAL SIGNOPE: not a signal"):
        parse_dockerfile("FROM python\nSTOPSIGNAL SIGNOPE\n")


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
    postgres = resolve_image("postgres:16", image_map)
    assert postgres is not None and postgres.stop_signal == signal.SIGINT  # its fast shutdown
    for entry in image_map:
        assert entry.refusal is None, entry.refusal
        assert entry.requirements.is_file() != entry.host_programs
        for arg in entry.command:  # every file the command names is in the folder the node shows there
            if entry.code_path and arg.startswith(entry.code_path + "/"):
                assert (entry.context / arg[len(entry.code_path) + 1 :]).is_file(), arg


@pytest.mark.parametrize(
    "line",
    [
        "RUN apt-get install -y curl",
        "ADD https://example.com/tool.tar.gz /opt/",
        "ARG VERSION=1",
        "COPY requirements.txt /tmp/",
        "COPY --from=build /go/bin/tool /usr/bin/tool",
    ],
)
def test_a_line_the_map_cannot_reproduce_is_refused_naming_it(line: str) -> None:
    with pytest.raises(LocalError, match=rf"line 3: `{re.escape(line)}`: the local node cannot reproduce"):
        parse_dockerfile(f'FROM python:3.11\nENV A=1\n{line}\nCMD ["python"]\n')


def test_a_marker_covers_only_the_line_right_below_its_comment_block() -> None:
    marked = (
        "FROM python:3.11\n# Tools.\n# local node: handled by requirements.txt\n# (pip)\nRUN pip install x\n"
    )
    assert parse_dockerfile(marked).cmd == ()
    assert [i.covered for i in dockerfile_instructions(marked)] == [None, "handled by requirements.txt"]
    with pytest.raises(LocalError, match="line 4: `RUN true`"):  # a blank line ends the marker's block
        parse_dockerfile("FROM python:3.11\n# local node: handled by requirements.txt\n\nRUN true\n")
    with pytest.raises(LocalError, match="line 4: `RUN b`"):  # one marker, one instruction
        parse_dockerfile("FROM python:3.11\n# local node: handled by requirements.txt\nRUN a\nRUN b\n")
    with pytest.raises(LocalError, match="line 3"):  # a marker needs a reason
        parse_dockerfile("FROM python:3.11\n# local node:\nRUN a\n")
    with pytest.raises(LocalError, match=r"line 2: `RUN x{95}…`"):  # a long line is cut short
        parse_dockerfile("FROM python:3.11\nRUN " + "x" * 300 + "\n")


def _folder(folder: Path, dockerfile: str, requirements: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(dockerfile)
    if requirements:
        (folder / "requirements.txt").write_text("\n")
    return folder


def test_an_image_the_node_cannot_run_fails_its_pods_only_with_the_reason(tmp_path: Path) -> None:
    _folder(tmp_path / "good", 'FROM python:3.11\nCMD ["python"]\n', requirements=True)
    _folder(tmp_path / "bad", "FROM python:3.11\nRUN make\n", requirements=True)
    (tmp_path / "map.yaml").write_text(
        "images:\n  - {image: team/good, folder: good}\n  - {image: team/bad, folder: bad}\n"
    )
    image_map = load_image_map(tmp_path / "map.yaml")
    assert pull_failure("team/good:1", resolve_image("team/good:1", image_map)) is None
    bad = pull_failure("team/bad:1", resolve_image("team/bad:1", image_map))
    assert bad is not None and bad.startswith('Failed to pull image "team/bad:1": image team/bad: ')
    assert bad.endswith("Dockerfile: line 2: `RUN make`: the local node cannot reproduce RUN " + HOW_TO_MARK)
    unknown = pull_failure("team/other", resolve_image("team/other", image_map))
    assert unknown is not None and "listed in local-images.yaml" in unknown


HOW_TO_MARK = (
    "(a `# local node: <how the map covers it>` comment just above accepts it, "
    "e.g. `# local node: handled by requirements.txt`)"
)


def test_host_program_entries_say_what_the_real_image_has(tmp_path: Path) -> None:
    _folder(tmp_path / "db", 'FROM postgres:15\nCMD ["postgres"]\n', requirements=False)
    (tmp_path / "map.yaml").write_text(
        "images:\n  - image: db\n    folder: db\n    programs: host\n"
        "    binaries: {/usr/bin/minio: minio}\n    directories: {/var/run/db: '3777'}\n"
    )
    (db,) = load_image_map(tmp_path / "map.yaml")
    assert (db.host_programs, dict(db.binaries), dict(db.directories)) == (
        True,
        {"/usr/bin/minio": "minio"},
        {"/var/run/db": 0o3777},
    )


@pytest.mark.parametrize(
    ("entry", "requirements", "reason"),
    [
        ("programs: host", True, "needs no requirements.txt"),
        ("programs: venv", False, "needs a requirements.txt"),
        ("programs: docker", False, "`programs` is `venv` (the default) or `host`"),
        ("programs: host, binaries: {/usr/bin/x: no-such-binary}", False, "no platform binary 'no-such"),
        ("programs: host, binaries: {usr/bin/minio: minio}", False, "not an absolute path"),
        ("programs: host, directories: {/run/x: '999'}", False, "octal"),
    ],
)
def test_a_host_program_entry_that_cannot_work_is_refused(
    tmp_path: Path, entry: str, requirements: bool, reason: str
) -> None:
    _folder(tmp_path / "x", 'FROM busybox\nCMD ["sh"]\n', requirements)
    (tmp_path / "map.yaml").write_text(f"images:\n  - {{image: x, folder: x, {entry}}}\n")
    (refused,) = load_image_map(tmp_path / "map.yaml")
    assert refused.refusal is not None and reason in refused.refusal


def test_a_host_program_image_needs_no_venv_and_gets_its_binaries(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "x", 'FROM busybox\nCMD ["sh"]\n', requirements=False)
    env = images.image_environment("team/x", folder, host_programs=True)
    prepared = ensure_image(env, tmp_path / "cache", lambda _: None)
    assert prepared == PreparedImage("team/x", None, {})
    assert prepared.image_id == "mlplatform-local://team-x-host-programs" and prepared.host_folders == []
    assert not (tmp_path / "cache").exists()  # nothing was built
    assert host_command(env, None, ["python", "-V"]) == ["python", "-V"]  # the host's python


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


def test_an_edited_requirements_file_is_a_new_prepared_image(tmp_path: Path) -> None:
    """The node keeps prepared images by this key: editing requirements.txt must not reuse the old venv."""
    (tmp_path / "requirements.txt").write_text("six==1.16.0\n")
    env = ImageEnvironment("x/y", tmp_path, (), (), "/opt/x", {}, "/opt/x")
    before = prepared_key(env)
    (tmp_path / "requirements.txt").write_text("six==1.17.0\n")
    assert prepared_key(env) != before
    host = ImageEnvironment("busybox", tmp_path, (), (), "/", {}, "/", host_programs=True)
    assert prepared_key(host) == str(tmp_path)
