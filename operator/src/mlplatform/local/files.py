"""Writing the local platform's files: only when their content changes, private when they hold secrets.

Some components watch their files (kube-proxy exits when its configuration changes), so an idempotent
`up` must leave an unchanged file untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE = 0o600


def write_if_changed(path: Path, content: str | bytes, mode: int = 0o644) -> bool:
    """Write `content` to `path` unless it already holds exactly that; return whether it wrote."""
    data = content.encode() if isinstance(content, str) else content
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    staged = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    staged.chmod(mode)
    staged.replace(path)
    return True
