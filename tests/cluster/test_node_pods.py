"""The local node runs pods for real: Jobs complete or fail with their exit codes, images that cannot
be mapped fail like a failed pull, volumes and env references reach the process, and logs are served."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from kubernetes import client

from kube import apply, container_state, eventually, finished, job_outcome, kubectl, pod, pods_of, python_pod

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_node")]


def job(name: str, command: list[str], image: str = "python:3.11-slim", **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            **spec,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": image, "command": command}],
                }
            },
        },
    }


def test_job_runs_python_and_completes_and_its_logs_are_served(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    script = (
        "import socket, sys; print('trained on', socket.gethostname()); print('to stderr', file=sys.stderr)"
    )
    apply(kubectl_bin, kubeconfig, namespace, job("hello", ["python3", "-c", script]))
    core = client.CoreV1Api(api_client)
    assert job_outcome(api_client, namespace, "hello") == "Complete"

    [done] = pods_of(core, namespace, "job-name=hello")
    terminated = container_state(done).terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")
    assert done.status.phase == "Succeeded"
    logs = kubectl(kubectl_bin, kubeconfig, "logs", "-n", namespace, done.metadata.name).stdout
    assert f"trained on {done.metadata.name}" in logs
    assert "to stderr" in logs
    tail = (
        kubectl(
            kubectl_bin,
            kubeconfig,
            "logs",
            "-n",
            namespace,
            done.metadata.name,
            "--tail=1",
            "--timestamps",
        )
        .stdout.strip()
        .splitlines()
    )
    assert len(tail) == 1 and tail[0].split(" ", 1)[0].endswith("Z")


def test_job_exiting_3_fails_with_exit_code_3(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    apply(kubectl_bin, kubeconfig, namespace, job("broken", ["python3", "-c", "raise SystemExit(3)"]))
    core = client.CoreV1Api(api_client)
    assert job_outcome(api_client, namespace, "broken") == "Failed"
    [failed] = pods_of(core, namespace, "job-name=broken")
    terminated = container_state(failed).terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")
    assert failed.status.phase == "Failed"


def test_job_with_unknown_image_fails_with_an_image_error(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    manifest = job(
        "ghost", ["train"], image="registry.example/nobody/no-such-image:1", activeDeadlineSeconds=15
    )
    apply(kubectl_bin, kubeconfig, namespace, manifest)
    core = client.CoreV1Api(api_client)

    def waiting() -> client.V1ContainerStateWaiting | None:
        pods = pods_of(core, namespace, "job-name=ghost")
        state = container_state(pods[0]) if pods else None
        return (
            state.waiting
            if state and state.waiting and state.waiting.reason in ("ErrImagePull", "ImagePullBackOff")
            else None
        )

    state = eventually(waiting, what="an image pull error")
    assert "registry.example/nobody/no-such-image:1" in state.message
    assert job_outcome(api_client, namespace, "ghost") == "Failed"


def test_configmap_and_secret_reach_the_process_as_files_and_env(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="settings"), data={"mode": "fast", "nested.conf": "a=1\n"}
        ),
    )
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="creds"),
            data={"password": base64.b64encode(b"s3cr3t").decode()},
        ),
    )
    script = """
import os, pathlib
env = os.environ
print('env', env['MODE'], env['PASSWORD'], env['POD'], env['GREETING'])
secret = pathlib.Path('/etc/creds/password')
nested = pathlib.Path('/etc/settings/conf/a.conf').read_text().strip()
mode = pathlib.Path('/etc/settings/mode').read_text()
print('files', mode, nested, secret.read_text(), oct(secret.stat().st_mode & 0o777))
print('workdir', os.getcwd())
print('ip', env['IP'])
"""
    apply(
        kubectl_bin,
        kubeconfig,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "reader"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "main",
                        "image": "python:3.11",
                        "command": ["python3", "-c", script],
                        "workingDir": "/work/dir",
                        "env": [
                            {
                                "name": "MODE",
                                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}},
                            },
                            {
                                "name": "PASSWORD",
                                "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
                            },
                            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "GREETING", "value": "hello-$(POD)"},
                            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        ],
                        "volumeMounts": [
                            {"name": "settings", "mountPath": "/etc/settings"},
                            {"name": "creds", "mountPath": "/etc/creds"},
                        ],
                    }
                ],
                "volumes": [
                    {
                        "name": "settings",
                        "configMap": {
                            "name": "settings",
                            "items": [
                                {"key": "mode", "path": "mode"},
                                {"key": "nested.conf", "path": "conf/a.conf"},
                            ],
                        },
                    },
                    {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                ],
            },
        },
    )
    reader = finished(core, namespace, "reader")
    logs = kubectl(kubectl_bin, kubeconfig, "logs", "-n", namespace, "reader").stdout
    assert "env fast s3cr3t reader hello-reader" in logs
    assert "files fast a=1 s3cr3t 0o400" in logs
    assert "workdir /work/dir" in logs
    assert reader.status.phase == "Succeeded"
    assert f"ip {reader.status.pod_ip}" in logs


def test_missing_secret_holds_the_container_until_it_exists(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path
) -> None:
    core = client.CoreV1Api(api_client)
    token = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}
    apply(
        kubectl_bin,
        kubeconfig,
        namespace,
        python_pod("patient", "import os; print(os.environ['TOKEN'])", container={"env": [token]}),
    )

    def config_error() -> client.V1ContainerStateWaiting | None:
        state = container_state(pod(core, namespace, "patient"))
        return (
            state.waiting
            if state and state.waiting and state.waiting.reason == "CreateContainerConfigError"
            else None
        )

    waiting = eventually(config_error, what="CreateContainerConfigError")
    assert waiting.message == 'secret "later" not found'
    assert pod(core, namespace, "patient").status.phase == "Pending"

    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="later"), string_data={"token": "arrived"}),
    )
    eventually(
        lambda: pod(core, namespace, "patient").status.phase == "Succeeded",
        timeout=60,
        what="the pod ran once the Secret existed",
    )
    assert kubectl(kubectl_bin, kubeconfig, "logs", "-n", namespace, "patient").stdout.strip() == "arrived"


def test_host_path_volume_writes_reach_the_host(
    api_client: client.ApiClient, namespace: str, kubectl_bin: Path, kubeconfig: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "from-host.txt").write_text("host says hi")
    script = (
        "import pathlib; d = pathlib.Path('/data');"
        " print((d / 'from-host.txt').read_text()); (d / 'from-pod.txt').write_text('pod says hi')"
    )
    manifest = python_pod(
        "writer",
        script,
        container={"volumeMounts": [{"name": "shared", "mountPath": "/data"}]},
        volumes=[{"name": "shared", "hostPath": {"path": str(shared), "type": "Directory"}}],
    )
    apply(kubectl_bin, kubeconfig, namespace, manifest)
    core = client.CoreV1Api(api_client)
    assert finished(core, namespace, "writer").status.phase == "Succeeded"
    assert (shared / "from-pod.txt").read_text() == "pod says hi"
    assert "host says hi" in kubectl(kubectl_bin, kubeconfig, "logs", "-n", namespace, "writer").stdout
