"""Credentials of one local MLflow stack: generated once, kept in files of mode 0600, never on a command line.

Processes receive them through their environment (MinIO's root user, the tracking server's S3 keys) or
through a file (libpq's PGPASSFILE); PostgreSQL itself only ever sees a SCRAM verifier of the password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from mlplatform.local.config import StateLayout
from mlplatform.local.errors import LocalError

SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)


@dataclass(frozen=True)
class StackCredentials:
    postgres_password: str
    minio_user: str
    minio_password: str

    @classmethod
    def generate(cls) -> StackCredentials:
        return cls(
            postgres_password=secrets.token_urlsafe(24),
            minio_user=f"mlplatform-{secrets.token_hex(4)}",
            minio_password=secrets.token_urlsafe(24),
        )

    def values(self) -> list[str]:
        """Every secret value, for tests that check none leaks."""
        return [self.postgres_password, self.minio_password, self.webhook_encryption_key]

    @property
    def webhook_encryption_key(self) -> str:
        """The Fernet key the tracking server encrypts webhook secrets with: one for every worker and
        restart (else stored secrets cannot be read back), derived from this stack's own secret."""
        digest = hashlib.sha256(b"mlflow-webhook-key:" + self.minio_password.encode()).digest()
        return base64.urlsafe_b64encode(digest).decode()


def credentials_file(layout: StateLayout) -> Path:
    return layout.secrets / "stack.json"


def pgpass_file(layout: StateLayout) -> Path:
    return layout.secrets / "pgpass"


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read, created with that mode (no window of exposure)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def pgpass_line(user: str, password: str) -> str:
    """A libpq password file entry for `user` on any host, port and database of this stack."""
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:{user}:{escaped}\n"


def load_credentials(layout: StateLayout) -> StackCredentials:
    path = credentials_file(layout)
    try:
        return StackCredentials(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise LocalError(f"cannot read the MLflow stack's credentials in {path}: {exc}") from exc


def ensure_credentials(layout: StateLayout, database_user: str) -> StackCredentials:
    """This stack's credentials, generated on first use; the pgpass file written beside them."""
    layout.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    layout.secrets.chmod(0o700)
    if credentials_file(layout).exists():
        credentials = load_credentials(layout)
    else:
        credentials = StackCredentials.generate()
        write_private(credentials_file(layout), json.dumps(asdict(credentials), indent=2))
    write_private(pgpass_file(layout), pgpass_line(database_user, credentials.postgres_password))
    return credentials


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, as libpq computes it).

    Setting a role's password to its verifier keeps the password itself out of SQL and server logs.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
