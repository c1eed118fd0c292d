"""The operator image holds only the operator's libraries (operator/requirements.txt): the operator must
run without the local platform's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Installed here for the local platform and the tests, absent from the operator image.
NOT_IN_IMAGE = ("kubernetes", "kubernetes_asyncio", "cryptography", "psutil", "uv")

PROBE = f"""
import sys
for name in {NOT_IN_IMAGE!r}:
    sys.modules[name] = None  # an import of it fails, as in the image
from mlplatform.cli import cli
command = cli.get_command(None, "operator")
assert command is not None and command.name == "operator", command
import mlplatform.controller, mlplatform.handlers.trainingrun, mlplatform.handlers.modeldeployment
import mlplatform.webhooks, mlplatform.kube
print("ok")
"""


def test_the_operator_runs_without_the_local_platforms_libraries() -> None:
    found = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, check=False, timeout=120
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "ok"


def test_the_local_command_says_what_it_needs_where_it_is_not_installed() -> None:
    probe = "\n".join(
        [
            "import sys",
            "sys.modules['cryptography'] = None",
            "from mlplatform.cli import main",
            "main(['local', 'up'])",
        ]
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=False, timeout=120
    )
    assert found.returncode == 1
    assert "'local' needs the Python package 'cryptography'" in found.stderr
