"""What each step of the platform's model server is worth: the same scikit-learn model served by
`mlflow models serve` and by the platform's server with its parts switched on one by one, on one core.

Needs no cluster: the servers run as host processes in the trainer-sklearn image's environment (built
into the local platform's cache, as the local node builds it) on a model saved to a temporary folder:
an ElasticNet on the diabetes data with its signature. Every server is pinned to --server-cpu and wrk
to --client-cpu; each variant gets a warm-up of 3 s and --seconds of load at each number of connections.

1. `mlflow models serve` (FastAPI, a thread per request, JSON → DataFrame → schema enforcement → pyfunc),
   with whatever its environment has (the trainer images have httptools and uvloop)
2. the platform's server with MLPLATFORM_FAST_PATH=false: MLflow's own request handling, called by a
   bare ASGI application on uvicorn, with the standard library only (h11, asyncio, json)
3. the same with httptools, uvloop and orjson: the fallback path as the platform's pods serve it
4. the fast path, with the standard library only: no per-request DataFrame or schema enforcement, the
   estimator's predict on the rows
5. + httptools, uvloop and orjson (what the platform's trainer images install): the whole server
6. the whole server with 2 workers on the same core

    python benchmarks/serving_steps.py [--seconds 15] [--connections 1 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from modeldeployment_latency import BODY, IMAGE, free_port, quiet
from serving import WARM_UP_SECONDS, WRK_SCRIPT, machine, wrk

from mlplatform import serving
from mlplatform.local.config import default_state_dir, load_config
from mlplatform.local.images import ensure_environment, load_image_map, resolve_image

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "serving_steps.json"
SERVER = Path(serving.__file__).parent / "server.py"
FAST_LIBRARIES = ("httptools", "uvloop", "orjson")
# Run with the image's Python: the model the servers load.
SAVE_MODEL = """
import sys
import mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.datasets import load_diabetes
from sklearn.linear_model import ElasticNet
features, target = load_diabetes(return_X_y=True, as_frame=True)
model = ElasticNet(alpha=0.05, l1_ratio=0.5, random_state=42).fit(features, target)
mlflow.sklearn.save_model(model, sys.argv[1], signature=infer_signature(features, model.predict(features)),
                          input_example=features.head(3))
"""
# On PYTHONPATH as sitecustomize.py: the fast libraries count as not installed (find_spec answers None and
# an import fails), as in an image without them.
HIDE_LIBRARIES = f"import sys\nsys.modules.update(dict.fromkeys({FAST_LIBRARIES!r}))\n"


@dataclass(frozen=True)
class Variant:
    name: str
    platform_server: bool
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1


@dataclass(frozen=True)
class Step:
    variant: str
    connections: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def variants(hidden: Path) -> list[Variant]:
    stdlib_only = {"PYTHONPATH": str(hidden)}
    return [
        Variant("1 mlflow models serve", platform_server=False),
        Variant("2 lean ASGI, MLflow's handling", True, {"MLPLATFORM_FAST_PATH": "false", **stdlib_only}),
        Variant("3 + httptools, uvloop, orjson", True, {"MLPLATFORM_FAST_PATH": "false"}),
        Variant("4 fast path (stdlib only)", True, stdlib_only),
        Variant("5 + httptools, uvloop, orjson", True),
        Variant("6 the same, 2 workers", True, workers=2),
    ]  # fmt: skip


def command(variant: Variant, venv: Path, model: Path, script: Path, port: int) -> list[str]:
    if variant.platform_server:
        argv = [str(venv / "bin/python"), str(script), "--model-dir", str(model)]
        return [*argv, "--host", "127.0.0.1", "--port", str(port), "--workers", str(variant.workers)]
    return [str(venv / "bin/mlflow"), "models", "serve", "-m", str(model), "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port), "--workers", str(variant.workers)]  # fmt: skip


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:  # noqa: S310 - loopback
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    sys.exit(f"{url} did not answer /ping within {timeout:.0f} s")


def run(
    variant: Variant,
    argv: list[str],
    port: int,
    *,
    environ: dict[str, str],
    args: argparse.Namespace,
    lua: Path,
) -> list[Step]:
    pinned = ["taskset", "-c", str(args.server_cpu), *argv]  # children inherit the affinity
    process = subprocess.Popen(pinned, env={**environ, **variant.env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        steps = []
        for connections in args.connections:
            wrk(url, connections, WARM_UP_SECONDS, args.client_cpu, lua)
            found = wrk(url, connections, args.seconds, args.client_cpu, lua)
            step = Step(
                variant.name, connections, found["rate"], found["p50"], found["p99"], int(found["errors"])
            )
            steps.append(step)
            figures = f"p50 {step.p50_ms:.2f} ms, p99 {step.p99_ms:.2f} ms, errors {step.errors}"
            print(
                f"  {step.variant} {connections} conn: {step.requests_per_second:.1f} req/s, {figures}",
                flush=True,
            )
        return steps
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def table(steps: list[Step]) -> str:
    lines = ["variant                             conn     req/s  p50 ms  p99 ms  vs mlflow"]
    baseline = {s.connections: s.requests_per_second for s in steps if s.variant.startswith("1 ")}
    for step in steps:
        ratio = step.requests_per_second / baseline[step.connections]
        lines.append(f"{step.variant:34} {step.connections:5} {step.requests_per_second:9.1f} "
                     f"{step.p50_ms:7.2f} {step.p99_ms:7.2f} {ratio:9.2f}x")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15, help="each wrk run (default 15)")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--server-cpu", type=int, default=1, help="the core every server runs on")
    parser.add_argument("--client-cpu", type=int, default=0, help="the core wrk runs on")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    local = load_config(default_state_dir())
    environment = resolve_image(IMAGE, load_image_map())
    assert environment is not None, IMAGE
    cache = local.cache_dir if local else default_state_dir().parent
    venv = ensure_environment(environment, cache, quiet)
    work = Path(tempfile.mkdtemp(prefix="mlplatform-bench-steps-"))
    environ = {**environment.env, "HOME": str(work), "PATH": f"{venv}/bin:/usr/bin:/bin"}
    model = work / "model"
    subprocess.run([str(venv / "bin/python"), "-c", SAVE_MODEL, str(model)], env=environ, check=True,
                   capture_output=True)  # fmt: skip
    script = work / "server" / serving.SCRIPT_NAME  # as the pod mounts it
    script.parent.mkdir()
    shutil.copy(SERVER, script)
    hidden = work / "hidden"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text(HIDE_LIBRARIES)
    lua = work / "post.lua"
    lua.write_text(WRK_SCRIPT.format(body=json.dumps(BODY.decode())))
    print(f"servers on CPU {args.server_cpu}, wrk on CPU {args.client_cpu}, {args.seconds} s per run")
    steps: list[Step] = []
    for variant in variants(hidden):
        port = free_port()
        argv = command(variant, venv, model, script, port)
        steps += run(variant, argv, port, environ=environ, args=args, lua=lua)
    print("\n" + table(steps))
    RESULTS.parent.mkdir(exist_ok=True)
    found = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
             "seconds": args.seconds, "steps": [asdict(s) for s in steps]}  # fmt: skip
    RESULTS.write_text(json.dumps(found, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
