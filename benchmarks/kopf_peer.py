"""The plain kopf peer of the operator benchmarks: it only creates a suspended Job per TrainingRun.

No MLflow, no status, no events of its own, no daemons: what any kopf operator costs for one Job per
object, with kopf's defaults (but for standalone mode: no peering objects). It creates the Job with the
client ours uses (lightkube) and runs, as ours does in the benchmarks, from the operator image's
environment, so the two differ in what they do, not in their libraries. The benchmarks start it (as
reconcile.py and footprint.py do) against one namespace:

    python benchmarks/kopf_peer.py --namespace NS [--health-port 28081]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import kopf
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_namespaced_resource

GROUP, VERSION, PLURAL = "mlplatform.dev", "v1alpha1", "trainingruns"
CONFLICT = 409
Job = create_namespaced_resource("batch", "v1", "Job", "jobs")


def build_job(name: str, namespace: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"mlplatform.dev/trainingrun": name},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "TrainingRun",
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "suspend": True,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "trainer", "image": "mlplatform/trainer-minimal:0.1.0"}],
                }
            },
        },
    }


@kopf.on.startup()
async def connect(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.peering.standalone = True
    memo["api"] = AsyncClient()


@kopf.on.create(GROUP, VERSION, PLURAL)
async def create_job(name: str, namespace: str | None, uid: str, memo: Any, **_: Any) -> None:
    assert namespace is not None  # TrainingRuns are namespaced
    try:
        await memo["api"].create(Job(build_job(name, namespace, uid)), namespace=namespace)
    except ApiError as exc:
        if exc.status.code != CONFLICT:  # created by an earlier attempt
            raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--health-port", type=int, default=28081)
    args = parser.parse_args()
    kopf.configure(verbose=False)
    asyncio.run(
        kopf.operator(
            namespaces=[args.namespace],
            standalone=True,
            liveness_endpoint=f"http://127.0.0.1:{args.health_port}/healthz",
        )
    )


if __name__ == "__main__":
    main()
