"""The MLflow server image's entrypoint (images/mlflow-server/entrypoint.py), loaded as a module for tests."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from mlplatform.local.images import REPO_ROOT

ENTRYPOINT = REPO_ROOT / "images" / "mlflow-server" / "entrypoint.py"


def load_entrypoint() -> ModuleType:
    """The entrypoint as a module, loaded once; it imports only light modules at the top."""
    spec = importlib.util.spec_from_file_location("mlflow_server_entrypoint", ENTRYPOINT)
    assert spec is not None and spec.loader is not None
    if spec.name in sys.modules:
        return sys.modules[spec.name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module
