"""Container images as the local node runs them: each maps to a virtual environment built from a folder.

The mapping is one declarative file at the repository root, `local-images.yaml`; an image's defaults
(ENTRYPOINT, CMD, WORKDIR, ENV, USER) come from its folder's Dockerfile, so the Dockerfile stays their
single source. An environment is built once per `requirements.txt` content and reused from the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mlplatform.local.errors import LocalError

REPO_ROOT = Path(__file__).resolve().parents[4]
IMAGE_MAP = REPO_ROOT / "local-images.yaml"
COMPLETE_MARKER = ".mlplatform-environment"


@dataclass(frozen=True)
class ImageEnvironment:
    """One image the local node can run."""

    image: str
    context: Path
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    code_path: str | None = None
    user: str | None = None

    @property
    def requirements(self) -> Path:
        return self.context / "requirements.txt"


@dataclass(frozen=True)
class DockerfileDefaults:
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined, comments dropped."""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, rest = logical.partition(" ")
        yield keyword.upper(), rest.strip()
        logical = ""


def _command(value: str) -> tuple[str, ...]:
    if value.startswith("["):
        return tuple(json.loads(value))
    return ("/bin/sh", "-c", value)  # shell form, as Docker runs it


def parse_dockerfile(text: str) -> DockerfileDefaults:
    """The run-time defaults of a Dockerfile's final stage."""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str | None = None
    env: dict[str, str] = {}
    user: str | None = None
    for keyword, rest in _instructions(text):
        if keyword == "FROM":  # a new stage starts afresh
            entrypoint, cmd, working_dir, env, user = (), (), None, {}, None
        elif keyword == "ENTRYPOINT":
            entrypoint, cmd = _command(rest), ()
        elif keyword == "CMD":
            cmd = _command(rest)
        elif keyword == "WORKDIR":
            working_dir = rest if rest.startswith("/") else f"{working_dir or ''}/{rest}"
        elif keyword == "USER":
            user = rest
        elif keyword == "ENV":
            env.update(_env_pairs(rest, env))
    return DockerfileDefaults(entrypoint, cmd, working_dir, env, user)


def _env_pairs(rest: str, current: Mapping[str, str]) -> dict[str, str]:
    words = shlex.split(rest)
    if words and "=" not in words[0]:  # legacy form: ENV KEY value with spaces
        return {words[0]: " ".join(words[1:])}
    pairs = {}
    for word in words:
        key, _, value = word.partition("=")
        pairs[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: {**current, **pairs}.get(m.group(1), ""), value)
    return pairs


def load_image_map(path: Path | None = None) -> list[ImageEnvironment]:
    """The images of the mapping file, their defaults read from their folders' Dockerfiles."""
    source = path or IMAGE_MAP
    try:
        entries = (yaml.safe_load(source.read_text()) or {}).get("images") or []
    except (OSError, yaml.YAMLError) as exc:
        raise LocalError(f"cannot read the image map {source}: {exc}") from exc
    images = []
    for entry in entries:
        context = (source.parent / entry["folder"]).resolve()
        dockerfile = context / "Dockerfile"
        defaults = parse_dockerfile(dockerfile.read_text()) if dockerfile.exists() else DockerfileDefaults()
        images.append(ImageEnvironment(
            image=entry["image"], context=context, entrypoint=defaults.entrypoint, cmd=defaults.cmd,
            working_dir=defaults.working_dir, env=defaults.env, code_path=entry.get("code"), user=defaults.user,
        ))
    return images


def repository(image: str) -> str:
    """An image reference without registry host, tag or digest: `docker.io/a/b:1@sha256:…` → `a/b`."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name.rsplit(":", 1)[0]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if len(parts) == 2 and parts[0] == "library":  # Docker Hub's official images
        parts = parts[1:]
    return "/".join(parts)


def resolve_image(image: str, image_map: Sequence[ImageEnvironment]) -> ImageEnvironment | None:
    wanted = repository(image)
    return next((entry for entry in image_map if entry.image == wanted), None)


def environment_dir(env: ImageEnvironment, cache_dir: Path) -> Path:
    digest = hashlib.sha256(env.requirements.read_bytes()).hexdigest()[:12]
    return cache_dir / "envs" / f"{env.context.name}-{digest}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _base_python() -> str:
    return getattr(sys, "_base_executable", sys.executable)


def _build(target: Path, requirements: Path) -> None:
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    python = _base_python()
    if Path(uv).exists():
        steps = [[uv, "venv", "--quiet", "--python", python, str(target)],
                 [uv, "pip", "install", "--quiet", "--python", str(target / "bin" / "python"), "-r", str(requirements)]]
    else:
        steps = [[python, "-m", "venv", str(target)],
                 [str(target / "bin" / "pip"), "install", "--quiet", "-r", str(requirements)]]
    for argv in steps:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
            raise LocalError(f"building the environment from {requirements} failed", details=tail)


def ensure_environment(env: ImageEnvironment, cache_dir: Path, log: Callable[[str], None] = print) -> Path:
    """The virtual environment of `env`, built from its requirements.txt on first use."""
    target = environment_dir(env, cache_dir)
    if (target / COMPLETE_MARKER).exists():
        return target
    with _locked(target.parent / f".{target.name}.lock"):
        if (target / COMPLETE_MARKER).exists():
            return target
        if target.exists():
            shutil.rmtree(target)  # a build that was interrupted
        log(f"building environment for {env.image} from {env.requirements.relative_to(env.context.parent.parent)} …")
        started = time.monotonic()
        try:
            _build(target, env.requirements)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        (target / COMPLETE_MARKER).write_text(env.image + "\n")
        os.chmod(target, 0o755)
        log(f"built environment for {env.image} in {time.monotonic() - started:.0f}s")
    return target
