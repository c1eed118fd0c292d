"""Fixtures of the platform tier: the MLflow stack of the session cluster, and images run as the node would.

A trainer runs with exactly the environment the trainer contract documents (trainer_images/README.md),
its image's ENV, and a PATH that starts with its image's virtual environment: nothing else leaks in.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlplatform.local.config import LocalConfig
from mlplatform.local.images import (
    ImageEnvironment,
    ensure_environment,
    host_command,
    image_environment,
    load_image_map,
    resolve_image,
)
from operator_process import free_port

SCRIPTS = Path(__file__).parent / "scripts"


@dataclass(frozen=True)
class Image:
    """An image as the local node runs it: its folder and its built environment."""

    environment: ImageEnvironment
    venv: Path

    def run(
        self,
        env: Mapping[str, str],
        argv: Sequence[str] | None = None,
        *,
        cwd: Path | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """Run the image's command (or `argv` through its entrypoint) with only `env` and the image's ENV."""
        return subprocess.run(
            self.command(argv),
            env=self.environ(env),
            cwd=cwd or self.environment.context,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def command(self, argv: Sequence[str] | None = None) -> list[str]:
        """The image's command on this host; `argv` replaces its CMD, as a pod's `args` do."""
        image = self.environment
        return host_command(image, self.venv, None if argv is None else [*image.entrypoint, *argv])

    def train(
        self, env: Mapping[str, str], argv: Sequence[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Run the image's example to success; return the JSON summary it prints last."""
        result = self.run(env, argv, **kwargs)
        assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        line = next(line for line in reversed(result.stdout.splitlines()) if line.startswith("{"))
        summary: dict[str, Any] = json.loads(line)
        return summary

    def python(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 300) -> str:
        """Run the environment's Python directly (not through the entrypoint); fail with its output."""
        result = subprocess.run(
            [str(self.venv / "bin/python"), *args],
            env=self.environ(env or {}),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def environ(self, env: Mapping[str, str]) -> dict[str, str]:
        home = Path(os.environ.get("TMPDIR", "/tmp")) / "mlplatform-test-home"
        home.mkdir(exist_ok=True)
        return {**self.environment.env, "PATH": f"{self.venv}/bin:/usr/bin:/bin", "HOME": str(home), **env}


@pytest.fixture(scope="session")
def build_image(local_cluster: LocalConfig) -> Callable[[str, Path], Image]:
    """Build (or reuse from the cache) the environment of an image folder, as the local node does."""

    def build(name: str, folder: Path) -> Image:
        environment = image_environment(name, folder)
        return Image(environment, ensure_environment(environment, local_cluster.cache_dir))

    return build


@pytest.fixture(scope="session")
def images(build_image: Callable[[str, Path], Image]) -> dict[str, Image]:
    """The trainer and server images of local-images.yaml, their environments built."""
    built = {}
    for name in ("mlplatform/trainer-minimal", "mlplatform/trainer-sklearn", "mlplatform/mlflow-server"):
        environment = resolve_image(name, load_image_map())
        assert environment is not None, name
        built[name.split("/")[1]] = build_image(name, environment.context)
    return built


@pytest.fixture
def port() -> int:
    """A free TCP port on loopback."""
    return free_port()


@pytest.fixture
def stopper() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started in their own session; each is stopped (with its children) afterwards."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)
