"""Pods do not see the host's private files: not the platform's state (the cluster CA's and service
accounts' keys, the MLflow stack's credentials), not the user's home or the platform's cache, not the
checkout holding the image map; yet they run their image's environment and see its folder."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from kube import finished, python_pod
from mlplatform.local import pki
from mlplatform.local.config import LocalConfig, StateLayout
from mlplatform.local.images import default_image_map
from mlplatform.local.stack.credentials import credentials_file

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_node")]

# Runs in the pod: which of the given paths it can read, what of the home it sees besides the way to its
# Python, and whether the image's own folder and environment are there.
PROBE = """
import json, os, sys
given = json.loads(sys.argv[1])

def readable(path):
    try:
        with open(path, "rb") as handle:
            handle.read(1)
        return True
    except OSError:
        return False

home = given["home"]
ways = [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)]
listing = os.listdir(home) if os.path.isdir(home) else []
print(json.dumps({
    "readable": [p for p in given["private"] if readable(p)],
    "home": [e for e in listing if not any(w.startswith(os.path.join(home, e) + "/") for w in ways)],
    "image_folder": readable("/opt/trainer/train.py"),
    "environment": sys.prefix,
    "uid": os.getuid(),
}))
"""


@pytest.fixture
def markers(local_cluster: LocalConfig) -> Iterator[list[Path]]:
    """A file of the test's own in the user's home, the platform's cache and its state directory."""
    name = f".isolation-{uuid.uuid4().hex[:8]}"
    files = [folder / name for folder in (Path.home(), local_cluster.cache_dir, local_cluster.state_dir)]
    for file in files:
        file.write_text("private\n")
    yield files
    for file in files:
        file.unlink()


def test_a_root_pod_reads_no_key_credential_or_home_file_but_runs_its_image(
    api_client: client.ApiClient, namespace: str, local_cluster: LocalConfig, markers: list[Path]
) -> None:
    # The session cluster's state: the default state directory with MLPLATFORM_TEST_CLUSTER=reuse, a
    # temporary one (under /tmp, which a pod has its own of) when the tests bring their own cluster up.
    layout = StateLayout(local_cluster.state_dir)
    ca_key = pki.key_path(layout.pki, pki.CLUSTER_CA)
    private = [
        ca_key,
        pki.key_path(layout.pki, pki.SERVICE_ACCOUNT_KEY),
        credentials_file(layout),
        default_image_map(),
        *markers,
        Path(f"/proc/1/root{ca_key}"),  # the host's root through a host process, had the pod its PIDs
    ]
    for path in private[:-1]:
        assert path.is_file(), f"{path} must exist on the host for the test to mean anything"
    given = json.dumps({"private": [str(p) for p in private], "home": str(Path.home())})
    manifest = python_pod("isolated", PROBE, given, securityContext={"runAsUser": 0})
    manifest["spec"]["containers"][0]["image"] = "mlplatform/trainer-minimal"
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, manifest)

    done = finished(core, namespace, "isolated", timeout=120)
    log = core.read_namespaced_pod_log("isolated", namespace)
    assert done.status.phase == "Succeeded", log
    seen = json.loads(log.strip().splitlines()[-1])
    assert seen["uid"] == 0
    assert seen["readable"] == []
    assert seen["home"] == []  # nothing of the home but the folders leading to the pod's Python
    assert seen["image_folder"] is True
    assert "mlplatform-trainer-minimal" in seen["environment"]
