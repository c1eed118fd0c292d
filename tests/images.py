"""Manifests of the official `postgres` and `minio/minio` images as a chart runs them: the containers,
their credentials Secret, a restricted non-root security context, a Deployment or StatefulSet with its
Service. The local node maps both images to host programs (local-images.yaml)."""

from __future__ import annotations

from typing import Any

from kube import stateful_set_with_claim

Manifest = dict[str, Any]

POSTGRES_PORT = 5432
POSTGRES_DATA = "/var/lib/postgresql/data"  # the official image's volume; PGDATA is a folder inside it
MINIO_PORT = 9000
MINIO_DATA = "/data"


def secret(name: str, data: dict[str, str]) -> Manifest:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def _from_secret(variable: str, name: str, key: str) -> Manifest:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}


def postgres_container(password_secret: str | None, user: str = "app", database: str = "appdb") -> Manifest:
    """The official image's documented environment; the password from key `password` of a Secret
    (None: no password, which the image refuses). Ready once it answers on its Unix socket."""
    env: list[Manifest] = [
        {"name": "POSTGRES_USER", "value": user},
        {"name": "POSTGRES_DB", "value": database},
        {"name": "PGDATA", "value": f"{POSTGRES_DATA}/pgdata"},
    ]
    if password_secret:
        env.append(_from_secret("POSTGRES_PASSWORD", password_secret, "password"))
    return {
        "name": "postgres",
        "image": "postgres:15",
        "env": env,
        "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT}],
        "readinessProbe": {
            "exec": {"command": ["pg_isready", "-U", user, "-d", database]},
            "periodSeconds": 2,
        },
        "volumeMounts": [{"name": "data", "mountPath": POSTGRES_DATA}],
    }


def minio_container(credentials_secret: str) -> Manifest:
    """`minio server /data` through the image's entrypoint; root user and password from keys `user` and
    `password` of a Secret."""
    return {
        "name": "minio",
        "image": "minio/minio",
        "args": ["server", MINIO_DATA, "--console-address", ":9001"],
        "env": [
            _from_secret("MINIO_ROOT_USER", credentials_secret, "user"),
            _from_secret("MINIO_ROOT_PASSWORD", credentials_secret, "password"),
        ],
        "ports": [{"name": "s3", "containerPort": MINIO_PORT}, {"name": "console", "containerPort": 9001}],
        "readinessProbe": {
            "httpGet": {"path": "/minio/health/ready", "port": "s3"},
            "periodSeconds": 2,
        },
        "volumeMounts": [{"name": "data", "mountPath": MINIO_DATA}],
    }


def non_root(container: Manifest, uid: int, fs_group: int) -> tuple[Manifest, Manifest]:
    """(pod securityContext, container) under the `restricted` Pod Security Standard, as uid `uid`."""
    pod_context = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": fs_group,
        "fsGroup": fs_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return pod_context, {**container, "securityContext": restricted}


def with_service(
    name: str,
    container: Manifest,
    port: int,
    pod_context: Manifest | None = None,
    claim_size: str | None = None,
) -> list[Manifest]:
    """A one-replica workload of `container` and a Service on `port`. Its volume `data` is an emptyDir
    in a Deployment, or, with `claim_size`, a claim template of a StatefulSet (the default class)."""
    labels = {"app": name}
    pod_spec: Manifest = {"terminationGracePeriodSeconds": 10}
    if pod_context:
        pod_spec["securityContext"] = pod_context
    if claim_size is None:
        template = {"metadata": {"labels": labels}, "spec": {**pod_spec, "containers": [container]}}
        template["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
        spec = {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}
        workload = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}
    else:
        workload = stateful_set_with_claim(name, container, None, claim_size, **pod_spec)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": labels, "ports": [{"port": port, "targetPort": port}]},
    }
    return [workload, service]
