"""Time the local MLflow stack: start-up cold and warm, and the scikit-learn example end to end.

    .venv/bin/python benchmarks/mlflow_stack.py [--port-offset 3000]

It brings up the MLflow stack alone (PostgreSQL, MinIO, tracking server; no control plane, no node) on
127.0.0.1 in temporary state directories, and prints:
- cold start: a new state directory and no built environment (the Go binaries and uv's download cache
  are reused: a first run on a new machine adds the PyPI downloads and the MinIO build);
- warm start: a new state directory, environments built;
- restart: the same state directory again (data kept, services stopped);
- the sklearn trainer's environment, built on first use;
- the sklearn example end to end (its environment built): train and register, set an alias,
  `mlflow models serve` the alias, answer /invocations in the four input formats.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mlplatform.local.cluster import bring_up
from mlplatform.local.config import LocalConfig, Ports, StateLayout, claim_state_dir, default_cache_dir
from mlplatform.local.gobuild import ensure_binaries
from mlplatform.local.images import (
    ImageEnvironment,
    ensure_environment,
    host_command,
    load_image_map,
    resolve_image,
)
from mlplatform.local.platform import Context, services_of
from mlplatform.local.processes import ProcessTable
from mlplatform.local.stack import MlflowStack, endpoints


def quiet(_: str) -> None:
    """Progress messages are not part of the figures."""


def stack_up(config: LocalConfig) -> float:
    """Bring the stack up as `mlplatform local up` does; return the seconds it took."""
    started = time.monotonic()
    layout = claim_state_dir(config)
    part = MlflowStack()
    ctx = Context(config, layout, ProcessTable(layout.run, layout.logs), quiet)
    ctx.binaries = ensure_binaries(list(part.binaries(config)), config.cache_dir, quiet)
    bring_up(ctx, part)
    return time.monotonic() - started


def stack_down(config: LocalConfig) -> None:
    layout = StateLayout(config.state_dir)
    processes = ProcessTable(layout.run, layout.logs)
    for service in reversed(services_of(MlflowStack(), config)):
        processes.stop(service.name)


@contextmanager
def scratch_cache() -> Iterator[Path]:
    """A cache without environments that shares the real cache's Go binaries."""
    with tempfile.TemporaryDirectory(prefix="mlplatform-bench-cache-") as folder:
        cache = Path(folder)
        (default_cache_dir() / "bin").mkdir(parents=True, exist_ok=True)
        (cache / "bin").symlink_to(default_cache_dir() / "bin")
        yield cache


def timed(what: str, action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    seconds = time.monotonic() - started
    print(f"{what:<44} {seconds:6.1f}s", flush=True)
    return seconds


def request(url: str, payload: object | None = None) -> str:
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=30) as answer:  # noqa: S310
        return str(answer.read().decode())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sklearn_image() -> ImageEnvironment:
    image = resolve_image("mlplatform/trainer-sklearn", load_image_map())
    assert image is not None
    return image


def sklearn_end_to_end(config: LocalConfig) -> None:
    """Train and register, alias, serve by alias, and answer all four input formats."""
    image = sklearn_image()
    venv = ensure_environment(image, config.cache_dir, quiet)
    uri = endpoints(config).tracking_uri
    env = {
        **image.env,
        "PATH": f"{venv}/bin:/usr/bin:/bin",
        "HOME": tempfile.gettempdir(),
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": "benchmark",
    }
    name = f"bench-{os.getpid()}"
    trained = subprocess.run(
        host_command(image, venv, [*image.entrypoint, "python", "train.py", "--registered-model-name", name]),
        env=env,
        cwd=image.context,
        capture_output=True,
        text=True,
        check=True,
    )
    summary = next(line for line in reversed(trained.stdout.splitlines()) if line.startswith("{"))
    version = json.loads(summary)["registered_model_version"]
    request(
        f"{uri}/api/2.0/mlflow/registered-models/alias",
        {"name": name, "alias": "champion", "version": version},
    )
    port = free_port()
    argv = [
        "mlflow",
        "models",
        "serve",
        "-m",
        f"models:/{name}@champion",
        "--env-manager",
        "local",
        "-p",
        str(port),
    ]
    server = subprocess.Popen(
        host_command(image, venv, [*image.entrypoint, *argv]),
        env=env,
        cwd=image.context,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                request(f"{url}/ping")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.3)
        columns = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
        row = [0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.002, 0.02, -0.017]
        record = dict(zip(columns, row, strict=True))
        for payload in (
            {"dataframe_split": {"columns": columns, "data": [row]}},
            {"dataframe_records": [record]},
            {"instances": [record]},
            {"inputs": {column: [value] for column, value in record.items()}},
        ):
            assert "predictions" in json.loads(request(f"{url}/invocations", payload))
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port-offset", type=int, default=3000, help="move the stack's ports (default 3000)")
    args = parser.parse_args()
    ports = Ports().shifted(args.port_offset)
    with scratch_cache() as cache, tempfile.TemporaryDirectory(prefix="mlplatform-bench-") as folder:
        cold = LocalConfig(state_dir=Path(folder) / "cold", cache_dir=cache, node=False, ports=ports)
        warm = LocalConfig(state_dir=Path(folder) / "warm", cache_dir=cache, node=False, ports=ports)
        try:
            timed("stack start, cold (no environment built)", lambda: stack_up(cold))
            stack_down(cold)
            timed("stack start, warm (new state, env cached)", lambda: stack_up(warm))
            timed(
                "sklearn trainer environment, first build",
                lambda: ensure_environment(sklearn_image(), cache, quiet),
            )
            timed("sklearn example end to end", lambda: sklearn_end_to_end(warm))
            stack_down(warm)
            timed("stack restart (existing state)", lambda: stack_up(warm))
        finally:
            stack_down(cold)
            stack_down(warm)


if __name__ == "__main__":
    main()
