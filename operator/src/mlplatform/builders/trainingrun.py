"""The Job of a TrainingRun: the trainer image, run against the MLflow run the operator created.

The pod receives the trainer contract (trainer_images/README.md) as environment: the tracking server,
the experiment, the run to resume and the parameters. Credentials only ever arrive by Secret reference.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

from mlplatform import names
from mlplatform.api.trainingrun import GitSource, TrainingRunSpec
from mlplatform.builders.common import (
    RESTRICTED_CONTAINER_SECURITY,
    RESTRICTED_POD_SECURITY,
    Manifest,
    env_var,
    owner_reference,
    pod_options,
    secret_env,
    short_name,
    standard_labels,
)

TRAINER_CONTAINER = "trainer"
CLONE_CONTAINER = "git-clone"
WORKSPACE = "/workspace"
SCRATCH = "/tmp"  # noqa: S108 - an emptyDir inside the pod: HOME and temporary files of the trainer
COMPONENT = "trainer"
KIND_LABEL = "trainingrun"

# Clones one revision into the workspace. Repository and revision arrive as environment variables, never
# spliced into the script; a shallow fetch is tried first, a full one where the server cannot do shallow
# (a commit id on some servers, git's "dumb" HTTP protocol). The workspace volume belongs to root, as
# an emptyDir does on any kubelet, so git is told that this one directory is safe.
CLONE_SCRIPT = """set -eu
git config --global --add safe.directory "$WORKSPACE"
git init -q "$WORKSPACE"
cd "$WORKSPACE"
git remote add origin "$GIT_REPOSITORY"
git fetch -q --depth 1 origin "$GIT_REVISION" 2>/dev/null || git fetch -q origin "$GIT_REVISION"
git checkout -q FETCH_HEAD
echo "cloned $GIT_REPOSITORY at $(git rev-parse HEAD)"
"""
# Git asks this helper for credentials; it reads them from the environment (filled from the Secret).
CREDENTIAL_HELPER = '!f() { echo "username=${GIT_USERNAME}"; echo "password=${GIT_PASSWORD}"; }; f'


@dataclass(frozen=True)
class TrainerSettings:
    """What the operator's configuration adds to every trainer pod."""

    tracking_uri: str  # the tracking server as pods reach it
    tracking_secret: str | None = None  # a Secret with MLFLOW_TRACKING_* credentials, in each namespace
    git_image: str = "alpine/git:2.47.2"


@dataclass(frozen=True)
class RunContext:
    """The MLflow run the trainer resumes."""

    experiment_name: str
    experiment_id: str
    run_id: str


def job_name(trainingrun: str) -> str:
    """One Job per TrainingRun, named after it (shortened to fit the `job-name` pod label)."""
    return short_name(trainingrun)


def labels(trainingrun: str) -> dict[str, str]:
    return {
        **standard_labels(KIND_LABEL, trainingrun, COMPONENT),
        names.LABEL_TRAININGRUN: short_name(trainingrun),
    }


def build_job(
    name: str, namespace: str, uid: str, *, spec: TrainingRunSpec, run: RunContext, settings: TrainerSettings
) -> Manifest:
    """The Job that runs a TrainingRun, owned by it."""
    job_labels = labels(name)
    job_spec: Manifest = {
        "backoffLimit": spec.backoff_limit,
        "suspend": spec.suspend,
        "template": {"metadata": {"labels": job_labels}, "spec": pod_spec(spec, run, settings)},
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name),
            "namespace": namespace,
            "labels": job_labels,
            "ownerReferences": [owner_reference(names.TRAININGRUN_KIND, name, uid)],
        },
        "spec": job_spec,
    }


def pod_spec(spec: TrainingRunSpec, run: RunContext, settings: TrainerSettings) -> Manifest:
    pod: Manifest = {
        "restartPolicy": "Never",
        "securityContext": spec.pod_security_context or RESTRICTED_POD_SECURITY,
        "containers": [trainer_container(spec, run, settings)],
        "volumes": volumes(spec),
        # A trainer talks to MLflow, not to the Kubernetes API: no token unless an account is named.
        "automountServiceAccountToken": spec.service_account_name is not None,
    }
    if spec.source is not None and spec.source.git is not None:
        pod["initContainers"] = [clone_container(spec.source.git, settings)]
    pod.update(pod_options(spec))
    return pod


def trainer_container(spec: TrainingRunSpec, run: RunContext, settings: TrainerSettings) -> Manifest:
    container: Manifest = {
        "name": TRAINER_CONTAINER,
        "image": spec.image,
        "env": trainer_env(spec, run, settings),
        "securityContext": spec.security_context or RESTRICTED_CONTAINER_SECURITY,
        # When the trainer fails without writing a termination message, its log tail says why.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": volume_mounts(spec),
    }
    if (args := trainer_args(spec)) is not None:
        container["args"] = args  # the image's entrypoint checks the client, then runs these
    if (workdir := working_dir(spec)) is not None:
        container["workingDir"] = workdir
    env_from = list(spec.env_from)
    if settings.tracking_secret:
        env_from.append({"secretRef": {"name": settings.tracking_secret, "optional": True}})
    optional: Manifest = {
        "imagePullPolicy": spec.image_pull_policy,
        "envFrom": env_from,
        "resources": spec.resources,
    }
    container.update({key: value for key, value in optional.items() if value})
    return container


def trainer_args(spec: TrainingRunSpec) -> list[str] | None:
    """The command the image's entrypoint runs: spec.command, an MLproject entry point, or the image's CMD."""
    if spec.command is not None:
        return list(spec.command)
    if spec.entry_point is None:
        return None
    args = ["mlflow", "run", ".", "--entry-point", spec.entry_point, "--env-manager", "local"]
    args += ["--run-id", f"$({names.ENV_RUN_ID})"]
    for key, value in sorted(spec.parameters.items()):
        args += ["-P", f"{key}={value}"]
    return args


def working_dir(spec: TrainingRunSpec) -> str | None:
    """The code's directory: the workspace (or a path inside a git checkout); the image's own otherwise."""
    if spec.source is None:
        return None
    git = spec.source.git
    if git is not None and git.path:
        return posixpath.normpath(posixpath.join(WORKSPACE, git.path))
    return WORKSPACE


def trainer_env(spec: TrainingRunSpec, run: RunContext, settings: TrainerSettings) -> list[Manifest]:
    contract = [
        env_var(names.ENV_TRACKING_URI, settings.tracking_uri),
        env_var(names.ENV_EXPERIMENT_NAME, run.experiment_name),
        env_var(names.ENV_RUN_ID, run.run_id),
        env_var(names.ENV_PARAMETERS, json.dumps(spec.parameters, sort_keys=True)),
    ]
    # The user's variables come between HOME and the contract, so they may move HOME but never the run.
    return [env_var("HOME", SCRATCH), *spec.env, *contract]


def volumes(spec: TrainingRunSpec) -> list[Manifest]:
    found: list[Manifest] = [{"name": "scratch", "emptyDir": {}}]
    if spec.source is not None and spec.source.config_map is not None:
        found.append({"name": "workspace", "configMap": {"name": spec.source.config_map.name}})
    elif spec.source is not None:
        found.append({"name": "workspace", "emptyDir": {}})
    return found


def volume_mounts(spec: TrainingRunSpec) -> list[Manifest]:
    mounts: list[Manifest] = [{"name": "scratch", "mountPath": SCRATCH}]
    if spec.source is not None:
        read_only = spec.source.config_map is not None
        mounts.append({"name": "workspace", "mountPath": WORKSPACE, "readOnly": read_only})
    return mounts


def clone_container(git: GitSource, settings: TrainerSettings) -> Manifest:
    env = [
        env_var("HOME", SCRATCH),
        env_var("WORKSPACE", WORKSPACE),
        env_var("GIT_REPOSITORY", git.repository),
        env_var("GIT_REVISION", git.revision),
        env_var("GIT_TERMINAL_PROMPT", "0"),  # fail, never wait for a password nobody types
    ]
    if git.credentials_secret is not None:
        secret = git.credentials_secret.name
        env += [
            secret_env(names.ENV_GIT_USERNAME, secret, "username"),
            secret_env(names.ENV_GIT_PASSWORD, secret, "password"),
            env_var("GIT_CONFIG_COUNT", "1"),
            env_var("GIT_CONFIG_KEY_0", "credential.helper"),
            env_var("GIT_CONFIG_VALUE_0", CREDENTIAL_HELPER),
        ]
    return {
        "name": CLONE_CONTAINER,
        "image": settings.git_image,
        "command": ["sh", "-c", CLONE_SCRIPT],
        "env": env,
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "workspace", "mountPath": WORKSPACE},
            {"name": "scratch", "mountPath": SCRATCH},
        ],
    }
