"""Fixtures of the cluster tier's CRD tests: the CRDs installed, and kubectl against the session cluster."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crds import install_crds
from kube import kubectl


@pytest.fixture(scope="module")
def crds(kubectl_bin: Path, kubeconfig: Path) -> list[str]:
    names = install_crds(kubectl_bin, kubeconfig)
    # A second install changes nothing: other tests install the same files at any time.
    assert install_crds(kubectl_bin, kubeconfig) == names
    return names


@pytest.fixture
def run_kubectl(kubectl_bin: Path, kubeconfig: Path) -> Callable[..., Any]:
    def run(*args: str, stdin: str | None = None, check: bool = True) -> Any:
        return kubectl(kubectl_bin, kubeconfig, *args, stdin=stdin, check=check)

    return run
