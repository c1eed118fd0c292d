"""What one attempt of a container runs with, as the shim reads it (ContainerSpec): its command, its
environment (the image's, then the pod's, with ConfigMaps, Secrets and service links read at each start as
the kubelet reads them), its user, its mounts (the image's, the volumes', the termination log) and limits."""

from __future__ import annotations

from typing import Any

from mlplatform.local.images import ImageEnvironment, PreparedImage, prepared_key
from mlplatform.local.node import runtime
from mlplatform.local.node.api import NodeApi
from mlplatform.local.node.environment import (
    ContainerConfigError,
    Lookups,
    container_argv,
    container_env,
    quantity_bytes,
    quantity_millicores,
    service_link_env,
)
from mlplatform.local.node.layout import PodLayout
from mlplatform.local.node.podcontext import PodContext
from mlplatform.local.node.podvolumes import ObjectData, PodVolumes, volume_mounts
from mlplatform.local.node.sandbox import VOLUMES_IN_POD
from mlplatform.local.node.seccomp import effective_profile
from mlplatform.local.node.shim import ContainerSpec, Identity, Mount

Manifest = dict[str, Any]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
IMAGE_DIRECTORIES = ".image-directories"  # in the volumes folder, beside the termination logs


def texts(objects: ObjectData) -> dict[str, dict[str, str] | None]:
    """ConfigMaps' or Secrets' data as text, as environment variables take it."""
    return {
        name: None if data is None else {k: v.decode(errors="replace") for k, v in data.items()}
        for name, data in objects.items()
    }


def identity(pod: Manifest, container: Manifest, image_user: str | None) -> Identity:
    """Who the container runs as: the security contexts' user and groups (the container's over the pod's),
    else the image's numeric USER; runAsNonRoot refused for root or a user it cannot check, as the
    kubelet refuses it."""
    pod_context = pod["spec"].get("securityContext") or {}
    context = container.get("securityContext") or {}

    def pick(key: str) -> Any:
        return context.get(key, pod_context.get(key))

    uid = pick("runAsUser")
    if uid is None and image_user is not None:
        if not str(image_user).split(":")[0].isdigit():
            if pick("runAsNonRoot"):
                raise ContainerConfigError(
                    f"container has runAsNonRoot and image has non-numeric user "
                    f"({image_user}), cannot verify user is non-root"
                )
        else:
            uid = int(str(image_user).split(":")[0])
    if pick("runAsNonRoot") and not uid:
        metadata = pod["metadata"]
        raise ContainerConfigError(
            f'container has runAsNonRoot and image will run as root (pod: "{metadata["name"]}_'
            f'{metadata["namespace"]}({metadata["uid"]})", container: {container["name"]})'
        )
    gid = pick("runAsGroup")
    groups = [int(g) for g in pod_context.get("supplementalGroups") or []]
    if pod_context.get("fsGroup") is not None:
        groups.append(int(pod_context["fsGroup"]))
    drop = (context.get("capabilities") or {}).get("drop") or []
    return Identity(
        uid=None if uid is None else int(uid),
        gid=None if gid is None else int(gid),
        groups=groups,
        no_new_privs=context.get("allowPrivilegeEscalation") is False,
        drop_capabilities=list(drop),
    )


def image_env(environment: ImageEnvironment, prepared: PreparedImage, hostname: str) -> dict[str, str]:
    """What the image itself gives a process: its ENV, its venv (if any) first on PATH, the hostname."""
    env = dict(environment.env)
    env["PATH"] = env.get("PATH", DEFAULT_PATH)
    if prepared.venv is not None:
        env["PATH"] = f"{prepared.venv / 'bin'}:{env['PATH']}"
        env["VIRTUAL_ENV"] = str(prepared.venv)
    env["HOSTNAME"] = hostname
    return env


def image_mounts(
    layout: PodLayout, environment: ImageEnvironment, prepared: PreparedImage, name: str, number: int
) -> list[Mount]:
    """What the real image has that the host lacks: platform binaries where the image keeps them, its empty
    folders, fresh for each attempt (under the volumes, which every shim sees), and its code folder."""
    mounts = [Mount(str(file), path, readonly=True) for path, file in prepared.binaries.items()]
    for path, mode in environment.directories.items():
        folder = layout.volumes / IMAGE_DIRECTORIES / name / str(number) / path.strip("/")
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(mode)  # not mkdir's mode: the umask would take bits off
        mounts.append(Mount(f"{VOLUMES_IN_POD}/{folder.relative_to(layout.volumes)}", path))
    if environment.code_path:
        mounts.append(Mount(str(environment.context.resolve()), environment.code_path, readonly=True))
    return mounts


def with_addresses(pod: PodContext) -> Manifest:
    """The pod with the IPs the node knows before it reports them: fieldRef status.podIP works at once."""
    record = runtime.read_sandbox(pod.layout)
    host = pod.node.config.network.host_address
    pod_ip = host if pod.spec.get("hostNetwork") or record is None else record.ip
    addresses = {"podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "hostIP": host, "hostIPs": [{"ip": host}]}
    return {**pod.manifest, "status": {**(pod.manifest.get("status") or {}), **addresses}}


async def service_links(api: NodeApi, pod: Manifest) -> dict[str, str]:
    """The service environment variables of the pod: the `kubernetes` Service's always, its namespace's
    unless enableServiceLinks is false."""
    services = [s for s in await api.services("default") if s["metadata"]["name"] == "kubernetes"]
    if pod["spec"].get("enableServiceLinks", True):
        services = [*(await api.services(pod["metadata"]["namespace"])), *services]
    return service_link_env(services)


async def container_spec(
    pod: PodContext, volumes: PodVolumes, container: Manifest, number: int
) -> ContainerSpec:
    """The spec of attempt `number` of a container whose image is prepared, in the pod's sandbox."""
    name = container["name"]
    environment = pod.images[name]
    prepared = pod.node.environments[prepared_key(environment)]
    config_maps, secrets = await volumes.referenced_data()  # read at each start, as the kubelet does
    services = await service_links(pod.node.api, pod.manifest)
    env = image_env(environment, prepared, runtime.pod_hostname(pod.manifest))
    lookups = Lookups(texts(config_maps), texts(secrets))
    env.update(container_env(with_addresses(pod), container, lookups, services, pod.node.allocatable))
    user = identity(pod.manifest, container, environment.user)
    env.setdefault("HOME", "/root" if not user.uid else "/")
    argv = container_argv(container, environment.entrypoint, environment.cmd, env)
    limits = (container.get("resources") or {}).get("limits") or {}
    attempt = pod.layout.container(name, number)
    sandbox = runtime.read_sandbox(pod.layout)
    if sandbox is None:
        raise ContainerConfigError("the pod sandbox is gone; it will be re-created")
    termination_log = pod.layout.termination_log(name, number)
    mounts = image_mounts(pod.layout, environment, prepared, name, number)  # under the volumes
    mounts += volume_mounts(pod.manifest, container)
    if path := container.get("terminationMessagePath", DEFAULT_TERMINATION_MESSAGE_PATH):
        # Last, as the kubelet mounts it: over any volume mounted at the same place.
        in_pod = f"{VOLUMES_IN_POD}/{termination_log.relative_to(pod.layout.volumes)}"
        mounts.append(Mount(in_pod, path))
    return ContainerSpec(
        name=name,
        argv=argv,
        env=env,
        working_dir=container.get("workingDir") or environment.working_dir or "/",
        sandbox_pid=sandbox.holder.pid,
        mounts=mounts,
        identity=user,
        cgroup=runtime.container_cgroup(pod.uid, name, number),
        container_id=runtime.runc_id(pod.uid, name, number),
        runtime_dir=str(pod.layout.runtime),
        memory_bytes=quantity_bytes(limits.get("memory")),
        cpu_millicores=quantity_millicores(limits.get("cpu")),
        log_file=str(pod.layout.log(name, number)),
        state_file=str(attempt.state_file),
        exit_file=str(attempt.exit_file),
        termination_log=str(termination_log) if path else "",
        fallback_to_logs=container.get("terminationMessagePolicy") == "FallbackToLogsOnError",
        read_only_root=bool((container.get("securityContext") or {}).get("readOnlyRootFilesystem")),
        seccomp=effective_profile(pod.manifest, container),
    )
