"""The platform's model server (server.py), as the operator hands it to serving pods.

server.py runs inside the model's own image and imports MLflow, so the operator never imports it: it
reads the file and mounts it into each serving pod from a ConfigMap.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

SCRIPT_NAME = "mlplatform_serving.py"  # the file's name in the pod: uvicorn's workers import it by it


@functools.cache  # read once: it is part of the installed operator
def server_source() -> str:
    return resources.files(__package__).joinpath("server.py").read_text(encoding="utf-8")


def source_digest(source: str) -> str:
    """A short digest of the server's source: a new server is a new pod template, hence a rollout."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]
