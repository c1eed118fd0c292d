"""The GitOps layout of examples/gitops/: every overlay renders with `kubectl kustomize` and the apiserver
accepts what it renders (server-side dry run, with the CRDs installed); the Flux and Argo CD objects of
platform/ are dry-run where their CRDs are served and checked as YAML where not, their chart values are
rendered by `helm template`, and every path they name exists."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube import kubectl

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds")]
ROOT = Path(__file__).resolve().parents[2]
GITOPS = ROOT / "examples" / "gitops"
OVERLAYS = sorted(p.name for p in (GITOPS / "models" / "overlays").iterdir() if p.is_dir())
CHART = ROOT / "charts" / "mlplatform"
# Paths the platform objects name in the operator's repository (ROOT) and the team's (examples/gitops).
OPERATOR_REPO = "https://github.com/example-org/mlplatform-operator"
TEAM_REPO = "https://github.com/example-org/team-models"
Manifest = dict[str, Any]


def render(kubectl_bin: Path, kubeconfig: Path, folder: Path) -> list[Manifest]:
    rendered = kubectl(kubectl_bin, kubeconfig, "kustomize", str(folder)).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def dry_run(kubectl_bin: Path, kubeconfig: Path, manifests: list[Manifest]) -> str:
    text = yaml.safe_dump_all(manifests)
    return kubectl(kubectl_bin, kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=text).stdout


def served(kubectl_bin: Path, kubeconfig: Path, manifest: Manifest) -> bool:
    """Whether the apiserver serves the manifest's kind (its CRD is installed)."""
    group_version = manifest["apiVersion"]
    listed = kubectl(kubectl_bin, kubeconfig, "api-resources", f"--api-group={group_version.split('/')[0]}")
    return any(line.split()[-1] == manifest["kind"] for line in listed.stdout.splitlines()[1:] if line)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_an_overlay_renders_and_the_apiserver_accepts_it(
    overlay: str, kubectl_bin: Path, kubeconfig: Path, namespace: str
) -> None:
    manifests = render(kubectl_bin, kubeconfig, GITOPS / "models" / "overlays" / overlay)
    [environment] = of_kind(manifests, "Namespace")
    ours = [m for m in manifests if m["kind"] != "Namespace"]
    assert {m["metadata"]["namespace"] for m in ours} == {environment["metadata"]["name"]}
    assert dry_run(kubectl_bin, kubeconfig, [environment]).strip().endswith("(server dry run)")
    for manifest in ours:  # into this test's namespace: the overlay's own does not exist here
        manifest["metadata"]["namespace"] = namespace
    answer = dry_run(kubectl_bin, kubeconfig, ours)
    for manifest in ours:
        assert f"{manifest['kind'].lower()}.mlplatform.dev/{manifest['metadata']['name']} created" in answer
    stored = kubectl(kubectl_bin, kubeconfig, "get", "mlplatform", "-n", namespace, "-o", "name").stdout
    assert stored.strip() == ""


def test_overlays_name_their_own_run_and_serve_the_same_deployment(
    kubectl_bin: Path, kubeconfig: Path
) -> None:
    rendered = {o: render(kubectl_bin, kubeconfig, GITOPS / "models" / "overlays" / o) for o in OVERLAYS}
    runs = {o: of_kind(m, "TrainingRun")[0] for o, m in rendered.items()}
    deployments = {o: of_kind(m, "ModelDeployment")[0] for o, m in rendered.items()}
    assert len({r["metadata"]["name"] for r in runs.values()}) == len(OVERLAYS)
    assert {d["metadata"]["name"] for d in deployments.values()} == {"diabetes"}
    staging, production = deployments["staging"]["spec"], deployments["production"]["spec"]
    assert (staging["model"]["alias"], staging["replicas"]) == ("challenger", 1)
    assert (production["model"]["alias"], production["replicas"]) == ("champion", 3)
    # What staging serves is what its runs promote.
    assert runs["staging"]["spec"]["model"]["promote"]["alias"] == "challenger"


def chart_values(manifest: Manifest) -> dict[str, Any]:
    """The chart values a HelmRelease or an Application holds inline."""
    if manifest["kind"] == "HelmRelease":
        values: dict[str, Any] = manifest["spec"]["values"]
        return values
    found: dict[str, Any] = manifest["spec"]["source"]["helm"]["valuesObject"]
    return found


def repository_path(url: str, path: str) -> Path:
    """Where a path of one of the two repositories the objects name is in this checkout."""
    roots = {OPERATOR_REPO: ROOT, TEAM_REPO: GITOPS}
    assert url in roots, f"unexpected repository {url}"
    return roots[url] / path


def check_paths(manifests: list[Manifest]) -> None:
    """Every chart and overlay path the Flux or Argo CD objects name exists in the repository named."""
    sources = {m["metadata"]["name"]: m["spec"]["url"] for m in of_kind(manifests, "GitRepository")}
    for release in of_kind(manifests, "HelmRelease"):
        chart = release["spec"]["chart"]["spec"]
        assert (repository_path(sources[chart["sourceRef"]["name"]], chart["chart"]) / "Chart.yaml").exists()
    for kustomization in of_kind(manifests, "Kustomization"):
        spec = kustomization["spec"]
        assert (
            repository_path(sources[spec["sourceRef"]["name"]], spec["path"]) / "kustomization.yaml"
        ).exists()
    for application in of_kind(manifests, "Application"):
        source = application["spec"]["source"]
        assert repository_path(source["repoURL"], source["path"]).is_dir(), source


@pytest.mark.parametrize("tool", ["flux", "argocd"])
def test_the_platform_objects_parse_name_real_paths_and_values_the_chart_takes(
    tool: str, kubectl_bin: Path, kubeconfig: Path, helm_bin: Path
) -> None:
    manifests = render(kubectl_bin, kubeconfig, GITOPS / "platform" / tool)
    expected = {
        "flux": {"Namespace", "GitRepository", "HelmRelease", "Kustomization"},
        "argocd": {"Application"},
    }
    assert {m["kind"] for m in manifests} == expected[tool]
    check_paths(manifests)
    checked = [m for m in manifests if m["kind"] != "Namespace" and served(kubectl_bin, kubeconfig, m)]
    if checked:
        dry_run(kubectl_bin, kubeconfig, checked)
    for manifest in of_kind(manifests, "HelmRelease") + of_kind(manifests, "Application"):
        if manifest["kind"] == "Application" and manifest["spec"]["source"]["path"] != "charts/mlplatform":
            continue
        values = yaml.safe_dump(chart_values(manifest))
        rendered = helm_template(helm_bin, values)
        kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered) if doc}
        assert {"Deployment", "Ingress"} <= kinds, kinds


def helm_template(helm_bin: Path, values: str) -> str:
    """`helm template` of the chart with `values` (its schema, if any, checks them)."""
    result = subprocess.run(
        [str(helm_bin), "template", "mlplatform", str(CHART), "-n", "mlplatform", "-f", "-"],
        input=values,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
