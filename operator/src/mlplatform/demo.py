"""`mlplatform demo`: the platform end to end on the cluster of $KUBECONFIG, as a user would run it.

Installs (or upgrades) the chart with Helm, waits for MLflow and the operator, applies the TrainingRun
example and waits for it to train and be promoted, applies the ModelDeployment example and waits for it
to serve, then sends a prediction from a pod in the cluster and prints it. Every step prints its time; a
failing step is named, with the log tail that explains it. Run again on a running platform, each step
finds its work done and passes at once. `make demo` runs it on the local platform; hack/kind-e2e.sh on
kind. Talks to the cluster only through kubectl and helm, as a user's shell would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from mlplatform import names

Manifest = dict[str, Any]

REPOSITORY = Path(__file__).resolve().parents[3]
TRAININGRUN_EXAMPLE = "examples/trainingrun-promotion.yaml"
MODELDEPLOYMENT_EXAMPLE = "examples/modeldeployment-alias.yaml"
# One row of the scikit-learn example's diabetes features, as examples/modeldeployment-alias.yaml shows.
PREDICTION_INPUT: dict[str, Any] = {
    "dataframe_split": {
        "columns": ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"],
        "data": [[0.04, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]],
    }
}
PREDICTION_POD = "mlplatform-demo-prediction"
PREDICTION_SCRIPT = """\
import json, os, sys, time, urllib.request
request = urllib.request.Request(os.environ["URL"], data=os.environ["BODY"].encode(),
                                 headers={"Content-Type": "application/json"})
for attempt in range(20):
    try:
        print(urllib.request.urlopen(request, timeout=10).read().decode())
        sys.exit(0)
    except OSError as exc:
        print(f"{os.environ['URL']}: {exc}", file=sys.stderr)
        time.sleep(3)
sys.exit(1)
"""


class StepFailed(click.ClickException):
    """A step that did not finish: its name, why, and what to read."""


@dataclass(frozen=True)
class DemoSettings:
    namespace: str = "mlplatform"
    release: str = "mlplatform"
    workload_namespace: str = "mlplatform-demo"
    chart: Path = REPOSITORY / "charts" / "mlplatform"
    helm_args: tuple[str, ...] = ()
    timeout: int = 900
    python_image: str = "python:3.11-slim"

    @property
    def mlflow_service(self) -> str:
        return (
            f"{self.release}-mlflow" if "mlplatform" in self.release else f"{self.release}-mlplatform-mlflow"
        )

    @property
    def operator_deployment(self) -> str:
        return self.mlflow_service.removesuffix("-mlflow") + "-operator"


def helm_install_args(settings: DemoSettings) -> list[str]:
    """`helm upgrade --install`: installs the first time, and is a no-op upgrade on a running platform."""
    return [
        "helm", "upgrade", "--install", settings.release, str(settings.chart),
        "--namespace", settings.namespace, "--create-namespace",
        "--wait", "--timeout", f"{settings.timeout}s",
        *settings.helm_args,
    ]  # fmt: skip


def prediction_pod(settings: DemoSettings, url: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """A pod that posts `body` to `url` and prints the answer; it meets the "restricted" standard."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": PREDICTION_POD,
            "namespace": settings.workload_namespace,
            "labels": {"app.kubernetes.io/name": PREDICTION_POD, "app.kubernetes.io/part-of": "mlplatform"},
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65534,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "predict",
                    "image": settings.python_image,
                    "command": ["python3", "-c", PREDICTION_SCRIPT],
                    "env": [{"name": "URL", "value": url}, {"name": "BODY", "value": json.dumps(body)}],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def example_name(example: str) -> str:
    """The name in an example's manifest (each example holds one object)."""
    return str(yaml.safe_load((REPOSITORY / example).read_text())["metadata"]["name"])


def condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    found = [c for c in obj.get("status", {}).get("conditions", []) if c.get("type") == kind]
    return found[0] if found else {}


def trainingrun_outcome(run: Mapping[str, Any]) -> str | None:
    """None while it runs; "" once it succeeded and its model was promoted; else why it will not."""
    status = run.get("status", {})
    if status.get("observedGeneration") != run["metadata"].get("generation"):
        return None
    if condition(run, "Stalled").get("status") == "True":
        return f"{condition(run, 'Stalled').get('reason')}: {condition(run, 'Stalled').get('message')}"
    if status.get("phase") != "Succeeded":
        return None
    model = status.get("model", {})
    if model.get("promotedTo"):
        return ""
    return f"not promoted: {model.get('promotion', {}).get('message', 'no promotion decision')}"


def modeldeployment_outcome(deployment: Mapping[str, Any]) -> str | None:
    """None while it rolls out; "" once Ready; else why it will not be."""
    ready = condition(deployment, "Ready")
    if ready.get("status") == "True":
        return ""
    if ready.get("reason") in {"ModelNotFound", "InvalidSpec", "ImageUnknown", "RolloutFailed"}:
        return f"{ready['reason']}: {ready.get('message')}"
    return None


@dataclass
class Demo:
    settings: DemoSettings
    echo: Callable[[str], None] = click.echo
    started: float = field(default_factory=time.monotonic)

    def run(self, *argv: str, stdin: str | None = None, check: bool = True) -> str:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(argv[:4])} …` failed: {(done.stderr or done.stdout).strip()[-2000:]}"
            )
        return done.stdout

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return self.run("kubectl", *args, stdin=stdin, check=check)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", kind, name, "-n", namespace, "-o", "json")))

    def step(self, title: str, action: Callable[[], str], explain: Callable[[], str]) -> None:
        begun = time.monotonic()
        self.echo(f"[{begun - self.started:6.1f}s] {title} …")
        try:
            result = action()
        except (RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
            raise StepFailed(f"step '{title}' failed: {exc}\n\n{explain()}") from exc
        self.echo(
            f"[{time.monotonic() - self.started:6.1f}s] ✓ {title} ({time.monotonic() - begun:.1f}s){result}"
        )

    def wait_for(
        self, what: str, fetch: Callable[[], Manifest], outcome: Callable[[Manifest], str | None]
    ) -> Manifest:
        """Fetch the object until `outcome` says it is done (""), or why it will not be; return it."""
        deadline = time.monotonic() + self.settings.timeout
        while time.monotonic() < deadline:
            current = fetch()
            verdict = outcome(current)
            if verdict == "":
                return current
            if verdict is not None:
                raise RuntimeError(verdict)
            time.sleep(2)
        raise TimeoutError(f"{what} within {self.settings.timeout}s")

    def apply_and_wait(self, example: str, kind: str, outcome: Callable[[Manifest], str | None]) -> Manifest:
        """Apply an example into the workload namespace and wait for its outcome; its final state."""
        namespace, name = self.settings.workload_namespace, example_name(example)
        self.kubectl("apply", "-n", namespace, "-f", str(REPOSITORY / example))
        return self.wait_for(
            f"{kind} {name} did not finish", lambda: self.get(kind, name, namespace), outcome
        )

    # --- what a failing step shows -------------------------------------------------------------------

    def pods_and_logs(self, namespace: str, selector: str = "") -> str:
        selection = ["-l", selector] if selector else []
        pods = self.kubectl("get", "pods", "-n", namespace, *selection, "-o", "wide", check=False)
        tails = []
        for line in pods.splitlines()[1:]:
            name, ready = line.split()[:2]
            done, total = ready.split("/")
            if done != total and "Completed" not in line:
                logs = self.kubectl(
                    "logs", "-n", namespace, name, "--all-containers", "--tail", "20", check=False
                )
                tails.append(f"--- last log lines of {name}:\n{logs.strip()}")
        events = self.kubectl(
            "get", "events", "-n", namespace, "--sort-by=.lastTimestamp", "--field-selector", "type=Warning",
            check=False,
        )  # fmt: skip
        return "\n".join([pods.strip(), *tails, "--- warnings:", "\n".join(events.splitlines()[-10:])])

    def describe(self, kind: str, name: str, namespace: str, selector: str) -> str:
        described = self.kubectl("get", kind, name, "-n", namespace, "-o", "yaml", check=False)
        status = described[described.find("status:") :] if "status:" in described else described
        return f"{kind}/{name}:\n{status.strip()}\n\n{self.pods_and_logs(namespace, selector)}"

    # --- the steps ------------------------------------------------------------------------------------

    def install(self) -> str:
        # The examples' namespace first: a namespaced operator gets its Role there.
        self.kubectl("create", "namespace", self.settings.workload_namespace, check=False)
        self.run(*helm_install_args(self.settings))
        return ""

    def train(self) -> str:
        run = self.apply_and_wait(TRAININGRUN_EXAMPLE, "trainingrun", trainingrun_outcome)["status"]
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(run.get("metrics", {}).items())[:4])
        model = run["model"]
        return (
            f"\n         MLflow run {run['mlflow']['runId']}: {metrics}; model {model['name']} version "
            + (f"{model['version']} promoted to @{model['promotedTo']}")
        )

    def serve(self) -> str:
        deployment = self.apply_and_wait(MODELDEPLOYMENT_EXAMPLE, "modeldeployment", modeldeployment_outcome)
        status = deployment["status"]
        return f"\n         version {status['modelVersion']} serves at {status['url']}"

    def predict(self) -> str:
        namespace = self.settings.workload_namespace
        url = self.get("modeldeployment", example_name(MODELDEPLOYMENT_EXAMPLE), namespace)["status"]["url"]
        self.kubectl("delete", "pod", PREDICTION_POD, "-n", namespace, "--ignore-not-found", "--wait=true")
        pod = prediction_pod(self.settings, url, PREDICTION_INPUT)
        self.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
        self.wait_for(
            f"pod {PREDICTION_POD} did not finish",
            lambda: self.get("pod", PREDICTION_POD, namespace),
            lambda pod: self.pod_outcome(pod, namespace),
        )
        answer = self.kubectl("logs", PREDICTION_POD, "-n", namespace).strip()
        return f"\n         POST {url}\n         {json.dumps(PREDICTION_INPUT)}\n         → {answer}"

    def pod_outcome(self, pod: Manifest, namespace: str) -> str | None:
        phase = pod.get("status", {}).get("phase")
        if phase == "Succeeded":
            return ""
        if phase == "Failed":
            return "the prediction request failed: " + self.kubectl("logs", PREDICTION_POD, "-n", namespace)
        return None

    def next_steps(self) -> str:
        s = self.settings
        ip = self.kubectl(
            "get", "svc", s.mlflow_service, "-n", s.namespace, "-o", "jsonpath={.spec.clusterIP}"
        )
        return f"""
Done in {time.monotonic() - self.started:.0f}s. The MLflow UI:
  kubectl -n {s.namespace} port-forward svc/{s.mlflow_service} 5000:5000   # then http://localhost:5000
  (on the local platform the Service answers from this machine: http://{ip}:5000)
What runs:
  kubectl get trainingruns,modeldeployments -n {s.workload_namespace}
  kubectl get pods -n {s.namespace}              # MLflow, PostgreSQL, MinIO, the operator
  kubectl get pods -n {s.workload_namespace} -l {names.LABEL_MODELDEPLOYMENT}   # the model servers
  helm test {s.release} -n {s.namespace}
"""

    def main(self) -> None:
        s = self.settings
        for tool in ("kubectl", "helm"):
            if shutil.which(tool) is None:
                raise StepFailed(f"{tool} is not on PATH")
        platform_pods = f"app.kubernetes.io/instance={s.release}"
        workload = s.workload_namespace
        self.step(
            f"install the chart (helm upgrade --install {s.release} -n {s.namespace}; MLflow, PostgreSQL, "
            "MinIO, the operator)",
            self.install,
            lambda: self.pods_and_logs(s.namespace, platform_pods),
        )
        self.step(
            f"train: {TRAININGRUN_EXAMPLE} in namespace {workload}",
            self.train,
            lambda: self.describe("trainingrun", example_name(TRAININGRUN_EXAMPLE), workload,
                                  names.LABEL_TRAININGRUN),
        )  # fmt: skip
        self.step(
            f"serve: {MODELDEPLOYMENT_EXAMPLE}",
            self.serve,
            lambda: self.describe("modeldeployment", example_name(MODELDEPLOYMENT_EXAMPLE), workload,
                                  names.LABEL_MODELDEPLOYMENT),
        )  # fmt: skip
        self.step(
            "predict: one row through the model's /invocations, from a pod",
            self.predict,
            lambda: self.pods_and_logs(workload),
        )
        self.echo(self.next_steps())


def down(settings: DemoSettings, echo: Callable[[str], None] = click.echo) -> None:
    """Remove what the demo made: its workloads, the release, and the release's volumes and Secrets."""
    demo = Demo(settings, echo)
    # The custom resources first, while the operator runs and may still read them: it removes their
    # finalizers (killing the MLflow run of an unfinished TrainingRun). Deleting the namespace first could
    # remove the operator's Role there before the objects, leaving them stuck on their finalizers.
    demo.kubectl("delete", "trainingruns,modeldeployments", "--all", "-n", settings.workload_namespace,
                 "--ignore-not-found", "--wait=true", "--timeout=120s", check=False)  # fmt: skip
    demo.kubectl("delete", "namespace", settings.workload_namespace, "--ignore-not-found", "--wait=true")
    demo.run("helm", "uninstall", settings.release, "-n", settings.namespace, "--wait", check=False)
    demo.kubectl("delete", "namespace", settings.namespace, "--ignore-not-found", "--wait=true")
    echo(
        f"removed release {settings.release} and namespaces {settings.namespace}, "
        f"{settings.workload_namespace}"
    )


@click.command("demo")
@click.option(
    "--namespace", default=DemoSettings.namespace, show_default=True, help="The release's namespace."
)
@click.option("--release", default=DemoSettings.release, show_default=True)
@click.option(
    "--workload-namespace",
    default=DemoSettings.workload_namespace,
    show_default=True,
    help="Where the example TrainingRun and ModelDeployment go.",
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="A chart value (repeatable).")
@click.option("--values", "values_files", multiple=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--timeout", type=int, default=DemoSettings.timeout, show_default=True, help="Seconds per step."
)
@click.option("--down", "remove", is_flag=True, help="Remove the demo's release, namespaces and data.")
def demo(
    *,
    namespace: str,
    release: str,
    workload_namespace: str,
    sets: Sequence[str],
    values_files: Sequence[str],
    timeout: int,
    remove: bool,
) -> None:
    """The platform end to end on the cluster of $KUBECONFIG: install, train, serve, predict."""
    helm_args = tuple(a for s in sets for a in ("--set", s)) + tuple(
        a for f in values_files for a in ("-f", f)
    )
    settings = DemoSettings(namespace, release, workload_namespace, helm_args=helm_args, timeout=timeout)
    if remove:
        down(settings)
        return
    Demo(settings).main()
