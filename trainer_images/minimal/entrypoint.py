"""Entrypoint of every trainer image: check what the trainer is given, then run its command.

    python /opt/trainer/entrypoint.py <command> [args...]      (the image's ENTRYPOINT)

Before the command runs it checks, failing at once with the reason instead of training for an hour and
then losing the run:
- the MLflow client installed here is the tracking server's version (GET <MLFLOW_TRACKING_URI>/version);
- MLPLATFORM_PARAMETERS, if set, is a JSON object of strings.

Every trainer folder carries an identical copy of this file (a Docker build context cannot reach a
shared one); tests/unit/test_trainer_images.py fails if the copies differ.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

CLIENT_DISTRIBUTIONS = ("mlflow", "mlflow-skinny")


class TrainerError(Exception):
    """Why the trainer must not start."""


def client_version() -> str:
    for distribution in CLIENT_DISTRIBUTIONS:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    raise TrainerError(
        "MLflow is not installed in this image: add mlflow==<the server's version> to requirements.txt"
    )


def _request(url: str) -> urllib.request.Request:
    """A GET with the credentials the MLflow client itself would send."""
    request = urllib.request.Request(url)  # noqa: S310 - http(s) only, checked by the caller
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        request.add_header("Authorization", f"Bearer {token}")
    elif (user := os.environ.get("MLFLOW_TRACKING_USERNAME")) is not None:
        pair = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
        request.add_header("Authorization", f"Basic {base64.b64encode(pair).decode()}")
    return request


def server_version(tracking_uri: str, timeout: float) -> str:
    """The tracking server's MLflow version; waits up to `timeout` seconds for it to answer."""
    url = tracking_uri.rstrip("/") + "/version"
    context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(_request(url), timeout=5, context=context) as response:  # noqa: S310
                return str(response.read().decode().strip())
        except urllib.error.HTTPError as exc:
            raise TrainerError(
                f"the tracking server at {tracking_uri} answered GET /version with {exc.code}"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() >= deadline:
                reason = getattr(exc, "reason", exc)
                raise TrainerError(
                    f"cannot reach the tracking server at {tracking_uri} within {timeout:.0f}s: {reason}"
                ) from exc
            time.sleep(1)


def check_versions(tracking_uri: str, timeout: float) -> str:
    server = server_version(tracking_uri, timeout)
    client = client_version()
    if client != server:
        raise TrainerError(
            f"MLflow version mismatch: this trainer image has MLflow {client}, the tracking server at "
            f"{tracking_uri} runs MLflow {server}; build the image with mlflow=={server}"
        )
    return client


def check_parameters(text: str) -> None:
    try:
        parameters = json.loads(text)
    except ValueError as exc:
        raise TrainerError(f"MLPLATFORM_PARAMETERS is not valid JSON: {exc}") from exc
    if not isinstance(parameters, dict) or not all(isinstance(v, str) for v in parameters.values()):
        raise TrainerError('MLPLATFORM_PARAMETERS must be a JSON object of strings, like {"alpha": "0.5"}')


def log(message: str) -> None:
    print(f"mlplatform: {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> None:
    if not argv:
        log("error: no command given (for example: python train.py)")
        sys.exit(2)
    try:
        if parameters := os.environ.get("MLPLATFORM_PARAMETERS"):
            check_parameters(parameters)
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
        if tracking_uri.startswith(("http://", "https://")):
            timeout = float(os.environ.get("MLPLATFORM_TRACKING_TIMEOUT", "30"))
            version = check_versions(tracking_uri, timeout)
            log(f"MLflow {version} matches the tracking server at {tracking_uri}")
    except TrainerError as exc:
        log(f"error: {exc}")
        sys.exit(1)
    try:
        os.execvp(argv[0], argv)  # noqa: S606 - the container's command, as Kubernetes would run it
    except OSError as exc:
        log(f"error: cannot run {argv[0]!r}: {exc.strerror}")
        sys.exit(127)


if __name__ == "__main__":
    main(sys.argv[1:])
