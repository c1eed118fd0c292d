"""Images without a container engine: each image maps to a folder, run in a venv or with host programs.

`local-images.yaml` (repository root) maps an image repository to the folder it is built from. The
folder's Dockerfile is the one source of truth for what the image runs: its ENTRYPOINT and CMD
(exec form), WORKDIR, ENV, USER, STOPSIGNAL and where `COPY . <path>` puts the folder. A Dockerfile
line the map cannot reproduce (RUN, ADD, ARG, another COPY) is refused unless a `# local node: <why>`
comment just above it says how the map covers it. Most images install their requirements.txt: the
local platform builds the same into a virtual environment, once, cached by the hash of that file. An
entry with `programs: host` runs the host's programs as the pod sees them instead (no venv), with
platform-built `binaries` bound where the real image has them and `directories` the real image makes.
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
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlplatform.local.errors import LocalError
from mlplatform.local.gobuild import BINARIES, building, ensure_binary, format_seconds

REPO_ROOT = Path(__file__).resolve().parents[4]
IMAGE_MAP_FILE = "local-images.yaml"
ENV_MANIFEST = ".mlplatform-env.json"
PYTHON_NAMES = ("python", "python3", f"python{sys.version_info.major}.{sys.version_info.minor}")
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
COVERED_MARKER = re.compile(r"#\s*local node:\s*(\S.*)$")  # a comment saying how the map covers a line
UNREPRODUCIBLE = frozenset({"RUN", "ADD", "ARG"})  # and any COPY but `COPY . <path>`
SHOWN_LINE = 100  # characters of a refused line a message quotes
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
    stop_signal: int = signal.SIGTERM


@dataclass(frozen=True)
class ImageEnvironment:
    """One image the local platform can run: its folder and what its Dockerfile runs."""

    image: str  # the repository as users write it, e.g. "mlplatform/trainer-sklearn"
    context: Path  # the folder with the Dockerfile (and requirements.txt, unless host programs)
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    code_path: str | None = None  # where the image puts the folder (the node bind-mounts `context` there)
    user: str | None = None  # the Dockerfile's USER, if any
    stop_signal: int = signal.SIGTERM  # the Dockerfile's STOPSIGNAL: what stopping the container sends
    host_programs: bool = False  # no venv: the command runs the host's programs (map: `programs: host`)
    binaries: Mapping[str, str] = field(default_factory=dict)  # path in the container -> gobuild binary
    directories: Mapping[str, int] = field(default_factory=dict)  # path in the container -> its mode
    refusal: str | None = None  # why the node cannot run this image (e.g. a RUN line); None if it can

    @property
    def requirements(self) -> Path:
        return self.context / "requirements.txt"

    @property
    def command(self) -> tuple[str, ...]:
        """What the image runs when a pod sets neither command nor args."""
        return (*self.entrypoint, *self.cmd)


@dataclass(frozen=True)
class PreparedImage:
    """What the node made ready for an image: its venv (None for host programs), its binaries' files."""

    image: str
    venv: Path | None
    binaries: Mapping[str, Path] = field(default_factory=dict)  # path in the container -> host file

    @property
    def host_folders(self) -> list[Path]:
        """The host folders a pod must see for this image: its venv and its binaries' folders."""
        return [*([self.venv] if self.venv else []), *(file.parent for file in self.binaries.values())]

    @property
    def image_id(self) -> str:
        """The imageID a pod's status reports: the built venv, or the image's host programs."""
        built = self.venv.name if self.venv else f"{self.image.replace('/', '-')}-host-programs"
        return f"mlplatform-local://{built}"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    arguments: str
    line: int  # where it starts, from 1
    covered: str | None = None  # what a `# local node: …` comment just above says covers it


# --- Dockerfile ----------------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[Instruction]:
    """The instructions, with continuation lines joined and comments dropped; each knows its line and
    whether the comment block just above it marks it as covered by the map (`# local node: <why>`)."""
    instructions: list[Instruction] = []
    pending, start, covered = "", 0, None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and not line:
            covered = None  # a marker belongs to the instruction right below its comment block
            continue
        if line.startswith("#"):  # a comment, alone or inside a continued instruction
            if not pending and (marker := COVERED_MARKER.match(line)):
                covered = marker.group(1).strip()
            continue
        start = start or number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start, covered))
        pending, start, covered = "", 0, None
    return instructions


def refused_line(instruction: Instruction) -> str | None:
    """Why the image map cannot reproduce this line, or None when it can (or a marker says it is covered)."""
    if instruction.covered:
        return None
    if instruction.keyword == "COPY" and _copied_folder_target(instruction.arguments) is None:
        what = "a COPY other than `COPY . <path>`"
    elif instruction.keyword in UNREPRODUCIBLE:
        what = instruction.keyword
    else:
        return None
    shown = f"{instruction.keyword} {instruction.arguments}"
    if len(shown) > SHOWN_LINE:
        shown = shown[: SHOWN_LINE - 1] + "…"
    return (
        f"line {instruction.line}: `{shown}`: the local node cannot "
        f"reproduce {what} (a `# local node: <how the map covers it>` comment just above accepts it, "
        "e.g. `# local node: handled by requirements.txt`)"
    )


def _copied_folder_target(arguments: str) -> str | None:
    """Where `COPY . <path>` puts the image's folder; None for any other COPY."""
    paths = [token for token in shlex.split(arguments) if not token.startswith("--")]
    return paths[-1] if paths[:-1] == ["."] else None


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
    """How the final stage of a Dockerfile runs its image; LocalError for a line the map cannot reproduce."""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str | None = None
    env: dict[str, str] = {}
    code_path: str | None = None
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    for instruction in dockerfile_instructions(text):
        keyword, arguments = instruction.keyword, instruction.arguments
        if refusal := refused_line(instruction):
            raise LocalError(refusal)
        if keyword == "FROM":  # only the last stage makes the image
            entrypoint, cmd, working_dir, env, code_path, user = (), (), None, {}, None, None
            stop_signal = signal.SIGTERM
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
        elif keyword == "STOPSIGNAL":
            stop_signal = parse_signal(arguments)
        elif keyword == "COPY" and (target := _copied_folder_target(arguments)) is not None:
            code_path = posixpath.normpath(posixpath.join(working_dir or "/", target))
    return DockerfileSettings(entrypoint, cmd, working_dir, env, code_path, user, stop_signal)


def parse_signal(name: str) -> int:
    """A STOPSIGNAL as Docker takes it: a name with or without SIG (SIGINT, INT) or a number."""
    text = name.strip().upper()
    if text.isdigit():
        number = int(text)
        if number in {s.value for s in signal.Signals}:
            return number
    elif (text if text.startswith("SIG") else f"SIG{text}") in signal.Signals.__members__:
        return signal.Signals[text if text.startswith("SIG") else f"SIG{text}"].value
    raise LocalError(f"STOPSIGNAL {name}: not a signal")


# --- the image map -------------------------------------------------------------------------------------


def default_image_map() -> Path:
    if explicit := os.environ.get("MLPLATFORM_IMAGE_MAP"):
        return Path(explicit).expanduser().resolve()
    return REPO_ROOT / IMAGE_MAP_FILE


def image_environment(
    image: str,
    context: Path,
    *,
    host_programs: bool = False,
    binaries: Mapping[str, str] | None = None,
    directories: Mapping[str, int] | None = None,
) -> ImageEnvironment:
    """The image built from `context`; LocalError naming the problem if the node cannot run it."""
    dockerfile = context / "Dockerfile"
    has_requirements = (context / "requirements.txt").is_file()
    if not dockerfile.is_file():
        raise LocalError(f"image {image}: {context} has no Dockerfile")
    if host_programs == has_requirements:
        needs = "no requirements.txt (it runs host programs)" if host_programs else "a requirements.txt"
        raise LocalError(f"image {image}: {context} needs {needs}")
    for name in (binaries or {}).values():
        if name not in BINARIES:
            raise LocalError(f"image {image}: no platform binary {name!r} (known: {', '.join(BINARIES)})")
    for path in [*(binaries or {}), *(directories or {})]:
        if not posixpath.isabs(path):
            raise LocalError(f"image {image}: {path!r} is not an absolute path in the container")
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
        stop_signal=settings.stop_signal,
        host_programs=host_programs,
        binaries=dict(binaries or {}),
        directories=dict(directories or {}),
    )


def map_entry(entry: Mapping[str, Any], base: Path) -> ImageEnvironment:
    """One entry of the map file (folder relative to `base`); LocalError if the node cannot run it."""
    image, context = str(entry["image"]), (base / str(entry["folder"])).resolve()
    programs = entry.get("programs", "venv")
    if programs not in ("venv", "host"):
        raise LocalError(f"image {image}: `programs` is `venv` (the default) or `host`, not {programs!r}")
    binaries, directories = entry.get("binaries") or {}, entry.get("directories") or {}
    if not isinstance(binaries, dict) or not isinstance(directories, dict):
        raise LocalError(f"image {image}: `binaries` and `directories` map container paths to values")
    try:
        modes = {str(path): int(str(mode), 8) for path, mode in directories.items()}
    except ValueError as exc:
        raise LocalError(f'image {image}: a directory\'s mode is octal, as in "1777": {exc}') from exc
    return image_environment(
        image,
        context,
        host_programs=programs == "host",
        binaries={str(path): str(name) for path, name in binaries.items()},
        directories=modes,
    )


def load_image_map(path: Path | None = None) -> list[ImageEnvironment]:
    """Every image of the map file (default: local-images.yaml at the repository root). An image the node
    cannot run (say, its Dockerfile has a RUN line) is kept with its `refusal`: pods of it fail, not all."""
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
        try:
            images.append(map_entry(entry, path.parent))
        except LocalError as exc:
            context = (path.parent / str(entry["folder"])).resolve()
            images.append(ImageEnvironment(str(entry["image"]), context, refusal=exc.message))
    return images


def pull_failure(image: str, environment: ImageEnvironment | None) -> str | None:
    """The ErrImagePull message for a pod's image, or None when the node can run it."""
    if environment is None:
        return (
            f'Failed to pull image "{image}": the local node has no environment for it '
            "(images it can run are listed in local-images.yaml)"
        )
    if environment.refusal:
        return f'Failed to pull image "{image}": {environment.refusal}'
    return None


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


def host_command(env: ImageEnvironment, venv: Path | None, argv: Sequence[str] | None = None) -> list[str]:
    """`argv` (default: the image's command) as run on this host: the venv's Python (if the image has a
    venv), the folder's files."""

    def translate(arg: str) -> str:
        if env.code_path and (arg == env.code_path or arg.startswith(env.code_path + "/")):
            return str(env.context) + arg[len(env.code_path) :]
        return arg

    command = list(env.command if argv is None else argv)
    if venv is not None and command and command[0] in PYTHON_NAMES:
        command[0] = str(venv / "bin" / "python")
    return [translate(arg) for arg in command]


# --- environments --------------------------------------------------------------------------------------


def requirements_digest(env: ImageEnvironment) -> str:
    return hashlib.sha256(env.requirements.read_bytes()).hexdigest()


def prepared_key(env: ImageEnvironment) -> str:
    """What a node keeps a prepared image under: its folder and its requirements' hash, so an edited
    requirements.txt is a new image, as a rebuilt image is a new digest."""
    return str(env.context) if env.host_programs else f"{env.context}@{requirements_digest(env)[:12]}"


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


def ensure_image(env: ImageEnvironment, cache_dir: Path, log: Log = print) -> PreparedImage:
    """What the node needs before it runs `env`: its venv (unless it runs host programs) and the platform
    binaries it names, each built once and cached."""
    venv = None if env.host_programs else ensure_environment(env, cache_dir, log)
    binaries = {path: ensure_binary(BINARIES[name], cache_dir, log) for path, name in env.binaries.items()}
    return PreparedImage(env.image, venv, binaries)
