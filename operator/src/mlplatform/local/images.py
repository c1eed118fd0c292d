"""Images without a container engine: each image maps to a folder, and runs in a virtual environment.

`local-images.yaml` (repository root) maps an image repository to the folder it is built from. The
folder's Dockerfile is the one source of truth for what the image runs: its ENTRYPOINT and CMD (exec
form), WORKDIR, ENV, USER and where `COPY . <path>` puts the folder. Its requirements.txt is what the
image installs; the local platform builds the same into a virtual environment, once, cached by the hash
of that file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mlplatform.local.errors import LocalError
from mlplatform.local.gobuild import building, format_seconds

REPO_ROOT = Path(__file__).resolve().parents[4]
IMAGE_MAP_FILE = "local-images.yaml"
ENV_MANIFEST = ".mlplatform-env.json"
PYTHON_NAMES = ("python", "python3", f"python{sys.version_info.major}.{sys.version_info.minor}")
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
Log = Callable[[str], None]


@dataclass(frozen=True)
class DockerfileSettings:
    """What a Dockerfile's final stage says about how its image runs."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    code_path: str | None = None
    user: str | None = None


@dataclass(frozen=True)
class ImageEnvironment:
    """One image the local platform can run: its folder and what its Dockerfile runs."""

    image: str  # the repository as users write it, e.g. "mlplatform/trainer-sklearn"
    context: Path  # the folder with Dockerfile and requirements.txt
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    code_path: str | None = None  # where the image puts the folder (the node bind-mounts `context` there)
    user: str | None = None  # the Dockerfile's USER, if any

    @property
    def requirements(self) -> Path:
        return self.context / "requirements.txt"

    @property
    def command(self) -> tuple[str, ...]:
        """What the image runs when a pod sets neither command nor args."""
        return (*self.entrypoint, *self.cmd)


# --- Dockerfile ----------------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if whole:
            keyword, _, arguments = whole.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def _command(keyword: str, arguments: str) -> tuple[str, ...]:
    """An ENTRYPOINT or CMD: the exec form (a JSON list), or the shell form as Docker runs it."""
    if not arguments.startswith("["):
        return ("/bin/sh", "-c", arguments)
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise LocalError(f"{keyword} {arguments} is neither a JSON list of strings nor a shell command")
    return tuple(value)


def _env_pairs(arguments: str, defined: Mapping[str, str]) -> dict[str, str]:
    """ENV's pairs, with $VAR and ${VAR} expanded from what this Dockerfile defined before."""
    tokens = shlex.split(arguments)
    if tokens and "=" not in tokens[0]:  # the legacy form: ENV KEY value with spaces
        raw = {tokens[0]: " ".join(tokens[1:])}
    else:
        raw = dict(token.split("=", 1) for token in tokens)
    pairs: dict[str, str] = {}
    for key, value in raw.items():

        def expand(match: re.Match[str], key: str = key) -> str:
            name = match.group(1) or match.group(2)
            known = {**defined, **pairs}
            if name not in known:  # from the base image: the local node cannot know its value
                raise LocalError(f"ENV {key} refers to ${name}, which this Dockerfile does not define")
            return known[name]

        pairs[key] = _VARIABLE.sub(expand, value)
    return pairs


def parse_dockerfile(text: str) -> DockerfileSettings:
    """How the final stage of a Dockerfile runs its image."""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str | None = None
    env: dict[str, str] = {}
    code_path: str | None = None
    user: str | None = None
    for keyword, arguments in dockerfile_instructions(text):
        if keyword == "FROM":  # only the last stage makes the image
            entrypoint, cmd, working_dir, env, code_path, user = (), (), None, {}, None, None
        elif keyword == "ENTRYPOINT":
            entrypoint = _command(keyword, arguments)
        elif keyword == "CMD":
            cmd = _command(keyword, arguments)
        elif keyword == "WORKDIR":
            working_dir = posixpath.normpath(posixpath.join(working_dir or "/", arguments))
        elif keyword == "ENV":
            env.update(_env_pairs(arguments, env))
        elif keyword == "USER":
            user = arguments
        elif keyword == "COPY":
            paths = [token for token in shlex.split(arguments) if not token.startswith("--")]
            if paths[:-1] == ["."]:
                code_path = posixpath.normpath(posixpath.join(working_dir or "/", paths[-1]))
    return DockerfileSettings(entrypoint, cmd, working_dir, env, code_path, user)


# --- the image map -------------------------------------------------------------------------------------


def default_image_map() -> Path:
    if explicit := os.environ.get("MLPLATFORM_IMAGE_MAP"):
        return Path(explicit).expanduser().resolve()
    return REPO_ROOT / IMAGE_MAP_FILE


def image_environment(image: str, context: Path) -> ImageEnvironment:
    dockerfile = context / "Dockerfile"
    if not dockerfile.is_file() or not (context / "requirements.txt").is_file():
        raise LocalError(f"image {image}: {context} needs a Dockerfile and a requirements.txt")
    try:
        settings = parse_dockerfile(dockerfile.read_text())
    except LocalError as exc:
        raise LocalError(f"image {image}: {dockerfile}: {exc.message}") from exc
    return ImageEnvironment(
        image=image,
        context=context,
        entrypoint=settings.entrypoint,
        cmd=settings.cmd,
        working_dir=settings.working_dir,
        env=settings.env,
        code_path=settings.code_path,
        user=settings.user,
    )


def load_image_map(path: Path | None = None) -> list[ImageEnvironment]:
    """Every image of the map file (default: local-images.yaml at the repository root)."""
    path = path or default_image_map()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LocalError(f"cannot read the image map {path}: {exc}") from exc
    entries = data.get("images") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise LocalError(f"{path} must hold a list under `images:`")
    images = []
    for entry in entries:
        if not isinstance(entry, dict) or not {"image", "folder"} <= entry.keys():
            raise LocalError(f"{path}: every image needs `image` and `folder`, not {entry!r}")
        images.append(image_environment(str(entry["image"]), (path.parent / str(entry["folder"])).resolve()))
    return images


def repository(reference: str) -> str:
    """The repository of an image reference, without registry host, tag or digest.

    "docker.io/mlplatform/trainer-sklearn:0.1.0@sha256:…" -> "mlplatform/trainer-sklearn"
    """
    name = reference.split("@", 1)[0]
    last_slash = name.rfind("/")
    if ":" in name[last_slash + 1 :]:
        name = name[: name.rindex(":")]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if len(parts) == 2 and parts[0] == "library":  # Docker Hub's official images
        parts = parts[1:]
    return "/".join(parts)


def resolve_image(image: str, image_map: Sequence[ImageEnvironment]) -> ImageEnvironment | None:
    """The entry of `image_map` for an image reference, or None if the map has none."""
    wanted = repository(image)
    return next((entry for entry in image_map if repository(entry.image) == wanted), None)


def host_command(env: ImageEnvironment, venv: Path, argv: Sequence[str] | None = None) -> list[str]:
    """`argv` (default: the image's command) as run on this host: the venv's Python, the folder's files."""

    def translate(arg: str) -> str:
        if env.code_path and (arg == env.code_path or arg.startswith(env.code_path + "/")):
            return str(env.context) + arg[len(env.code_path) :]
        return arg

    command = list(env.command if argv is None else argv)
    if command and command[0] in PYTHON_NAMES:
        command[0] = str(venv / "bin" / "python")
    return [translate(arg) for arg in command]


# --- environments --------------------------------------------------------------------------------------


def requirements_digest(env: ImageEnvironment) -> str:
    return hashlib.sha256(env.requirements.read_bytes()).hexdigest()


def environment_dir(env: ImageEnvironment, cache_dir: Path) -> Path:
    """<cache>/envs/<image with / as ->-<sha256 of requirements.txt, 12 chars>."""
    return cache_dir / "envs" / f"{env.image.replace('/', '-')}-{requirements_digest(env)[:12]}"


def _manifest(env: ImageEnvironment) -> dict[str, str]:
    return {
        "image": env.image,
        "requirements_sha256": requirements_digest(env),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }


def environment_problem(env: ImageEnvironment, target: Path) -> str | None:
    """Why the environment at `target` cannot be used as it is (None when it is sound)."""
    if not (target / "bin" / "python").exists():
        return "not built yet"
    try:
        recorded = json.loads((target / ENV_MANIFEST).read_text())
    except (OSError, ValueError):
        return "an earlier build did not finish"
    if recorded != _manifest(env):
        return f"it was built for Python {recorded.get('python')}"
    return None


def base_python() -> str:
    """The interpreter behind the running one (not this project's own venv)."""
    return str(getattr(sys, "_base_executable", sys.executable))


def _uv() -> str | None:
    """uv beside the running Python (installed with the project), or on PATH."""
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.is_file() else shutil.which("uv")


def build_commands(requirements: Path, target: Path, uv: str | None) -> list[list[str]]:
    """The commands that build a venv at `target` with the running Python and install `requirements`."""
    python, requirement = str(target / "bin" / "python"), str(requirements)
    if uv:
        return [
            [uv, "venv", "--quiet", "--seed", "--python", base_python(), str(target)],
            # Byte-compiled as pip does in a Docker build: else every start compiles MLflow anew.
            [uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", python, "-r", requirement],
        ]
    return [
        [base_python(), "-m", "venv", str(target)],
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", requirement],
    ]


@contextlib.contextmanager
def _env_lock(target: Path) -> Iterator[None]:
    """One build of an environment at a time, across processes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(env: ImageEnvironment, target: Path) -> None:
    for argv in build_commands(env.requirements, target, _uv()):
        result = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=env.context)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
            raise LocalError(
                f"building the environment of {env.image} from {env.requirements} failed "
                f"({Path(argv[0]).name} exit {result.returncode})",
                details=tail,
            )
    (target / ENV_MANIFEST).write_text(json.dumps(_manifest(env), indent=2))
    target.chmod(0o755)  # pods may run as another user


def ensure_environment(env: ImageEnvironment, cache_dir: Path, log: Log = print) -> Path:
    """The virtual environment of `env` (its bin/ holds python), built once from its requirements.txt.

    Safe when several processes ask at once; a failed build raises LocalError and leaves nothing behind.
    """
    target = environment_dir(env, cache_dir)
    if environment_problem(env, target) is None:
        return target
    with _env_lock(target):
        problem = environment_problem(env, target)  # another process may have built it meanwhile
        if problem is None:
            return target
        log(f"building environment for {env.image} ({problem}) …")
        shutil.rmtree(target, ignore_errors=True)
        with building(f"the environment of {env.image}", log) as elapsed:
            try:
                _build(env, target)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
        log(f"built environment for {env.image} in {format_seconds(elapsed())}")
    return target
