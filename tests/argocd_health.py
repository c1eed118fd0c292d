"""Argo CD health checks of gitops/argocd/health/, run as Argo CD runs them, and the configuration
snippets generated from them.

Argo CD evaluates a health script in gopher-lua (Lua 5.1) with the object as the global `obj`, only the
base, table and a safe part of the os library open (no string or math library, so no string methods),
and reads `status` and `message` from the table the script returns. LuaJIT 2.1 (lupa) is Lua 5.1 too;
the script runs here in an environment holding just those libraries, so a script that works here works
in Argo CD.

`python tests/argocd_health.py` rewrites the generated snippets after a script changed; a unit test
checks they are in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lupa.luajit21 as lupa

ROOT = Path(__file__).resolve().parent.parent
HEALTH_DIR = ROOT / "gitops" / "argocd"
SCRIPTS_DIR = HEALTH_DIR / "health"
VALUES_FILE = HEALTH_DIR / "values-resource-customizations.yaml"
CONFIGMAP_PATCH_FILE = HEALTH_DIR / "argocd-cm-patch.yaml"
GROUP = "mlplatform.dev"
KINDS = ("ModelDeployment", "TrainingRun")
# The statuses Argo CD accepts from a health script; any other becomes Unknown.
HEALTH_STATUSES = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"})
BASE_FUNCTIONS = [
    "assert",
    "error",
    "ipairs",
    "next",
    "pairs",
    "pcall",
    "rawequal",
    "rawget",
    "rawset",
    "select",
    "getmetatable",
    "setmetatable",
    "tonumber",
    "tostring",
    "type",
    "unpack",
    "xpcall",
]
SAFE_OS_FUNCTIONS = ("clock", "date", "time")

# Runs `source` as a chunk whose globals are `env` alone, as Argo CD's sandbox has them.
RUN_SANDBOXED = """
function(source, env)
  local chunk, err = loadstring(source, "=health.lua")
  if chunk == nil then error(err) end
  setfenv(chunk, env)
  return chunk()
end
"""


def config_key(kind: str) -> str:
    """The argocd-cm key of a kind's health check."""
    return f"resource.customizations.health.{GROUP}_{kind}"


def script_path(kind: str) -> Path:
    return SCRIPTS_DIR / f"{GROUP}_{kind}.lua"


def health_script(kind: str) -> str:
    return script_path(kind).read_text()


def evaluate(script: str, obj: Mapping[str, Any]) -> tuple[str, str]:
    """(status, message) the health `script` gives the object `obj` (a dict as the API returns it)."""
    lua = lupa.LuaRuntime(register_eval=False, register_builtins=False)
    lua.execute('getmetatable("").__index = nil')  # no string library: `s:sub()` fails as in Argo CD
    globals_ = lua.globals()
    env = lua.table_from({name: globals_[name] for name in BASE_FUNCTIONS})
    env["table"] = globals_["table"]
    env["os"] = lua.table_from({name: globals_["os"][name] for name in SAFE_OS_FUNCTIONS})
    env["obj"] = lua.table_from(dict(obj), recursive=True)
    result = lua.eval(RUN_SANDBOXED)(script, env)
    if result is None:
        return "", ""  # Argo CD: no health (the built-in assessment applies)
    status, message = str(result["status"] or ""), str(result["message"] or "")
    if status not in HEALTH_STATUSES:
        raise ValueError(f"the script returned {status!r}, which Argo CD reads as Unknown")
    return status, message


def health(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(status, message) of one of our objects, by the health script of its kind."""
    return evaluate(health_script(str(obj["kind"])), obj)


def _literal_block(text: str, indent: int) -> str:
    """`text` as the body of a YAML literal block (`|`) indented by `indent` spaces."""
    pad = " " * indent
    return "".join(f"{pad}{line}" if line.strip() else "\n" for line in text.splitlines(keepends=True))


def _entries(indent: int) -> str:
    pad = " " * indent
    return "".join(
        f"{pad}{config_key(kind)}: |\n{_literal_block(health_script(kind), indent + 2)}" for kind in KINDS
    )


def render_values() -> str:
    """The argo-cd Helm chart's values that install both health checks."""
    return (
        "# Generated from gitops/argocd/health/*.lua by `python tests/argocd_health.py`; do not edit.\n"
        "# Argo CD health checks of the mlplatform.dev kinds, as values of the argo-cd Helm chart:\n"
        "#   helm upgrade --install argocd argo/argo-cd -n argocd \\\n"
        "#     -f gitops/argocd/values-resource-customizations.yaml\n"
        "configs:\n"
        "  cm:\n" + _entries(4)
    )


def render_configmap_patch() -> str:
    """A merge patch of argocd-cm that installs both health checks (Argo CD installed from manifests)."""
    return (
        "# Generated from gitops/argocd/health/*.lua by `python tests/argocd_health.py`; do not edit.\n"
        "# Argo CD health checks of the mlplatform.dev kinds, for an Argo CD installed from its manifests:\n"
        "#   kubectl -n argocd patch configmap argocd-cm --type merge \\\n"
        "#     --patch-file gitops/argocd/argocd-cm-patch.yaml\n"
        "# or list this file under `patches:` of the kustomization that installs Argo CD.\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: argocd-cm\n"
        "  namespace: argocd\n"
        "data:\n" + _entries(2)
    )


GENERATED = {VALUES_FILE: render_values, CONFIGMAP_PATCH_FILE: render_configmap_patch}


if __name__ == "__main__":
    for path, render in GENERATED.items():
        path.write_text(render())
        print(f"wrote {path.relative_to(ROOT)}")
