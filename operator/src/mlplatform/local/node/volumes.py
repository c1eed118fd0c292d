"""Volume contents (pure) and the kubelet's atomic writer for them.

configMap, secret, downwardAPI and projected volumes are rendered to a list of files; the writer puts
them in place the way the kubelet does — a timestamped folder, a `..data` link switched atomically, and
a link per top-level name — so a process reading the volume never sees half of an update.
A persistentVolumeClaim volume is mounted as the kubelet mounts it: as the volume source of the
PersistentVolume bound to the claim (a hostPath or local folder on this host).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from mlplatform.local.node.environment import ContainerConfigError, Manifest, field_value, resource_value

DEFAULT_MODE = 0o644
DATA_LINK = "..data"


class VolumeError(Exception):
    """A volume cannot be set up yet (a missing ConfigMap, say): the pod waits in ContainerCreating."""


@dataclass(frozen=True)
class VolumeFile:
    path: str
    content: bytes
    mode: int = DEFAULT_MODE


@dataclass(frozen=True)
class VolumeLookups:
    """Objects the pod's volumes refer to, fetched by the caller; None marks one that does not exist."""

    config_maps: Mapping[str, Mapping[str, bytes] | None] = field(default_factory=dict)
    secrets: Mapping[str, Mapping[str, bytes] | None] = field(default_factory=dict)
    tokens: Mapping[str, str] = field(
        default_factory=dict
    )  # service-account token per audience ("" = default)
    node_allocatable: Mapping[str, str] = field(default_factory=dict)
    claims: Mapping[str, Manifest | None] = field(default_factory=dict)  # PersistentVolumeClaims by name
    persistent_volumes: Mapping[str, Manifest | None] = field(default_factory=dict)  # bound to those claims


class ClaimError(VolumeError):
    """A claim the pod uses cannot be mounted yet (missing, unbound, being deleted)."""

    def __init__(self, volume: str, namespace: str, claim: str, problem: str) -> None:
        super().__init__(
            f"Unable to attach or mount volumes: unmounted volumes=[{volume}]: "
            f"error processing PVC {namespace}/{claim}: {problem}"
        )


def _safe_path(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or path.startswith(".."):
        raise VolumeError(f"invalid volume item path {path!r}")
    return str(pure)


def _key_files(
    kind: str, name: str, data: Mapping[str, bytes] | None, source: Manifest, default_mode: int
) -> list[VolumeFile]:
    if data is None:
        if source.get("optional"):
            return []
        raise VolumeError(f'{kind} "{name}" not found')
    items = source.get("items")
    if not items:
        return [VolumeFile(key, value, default_mode) for key, value in sorted(data.items())]
    files = []
    for item in items:
        if item["key"] not in data:
            if source.get("optional"):
                continue
            raise VolumeError(f'{kind} "{name}" has no key {item["key"]!r}')
        files.append(VolumeFile(_safe_path(item["path"]), data[item["key"]], item.get("mode", default_mode)))
    return files


def _downward_files(
    pod: Manifest, items: Sequence[Manifest], default_mode: int, allocatable: Mapping[str, str]
) -> list[VolumeFile]:
    files = []
    containers = {c["name"]: c for c in pod["spec"].get("containers", [])}
    for item in items:
        try:
            if "fieldRef" in item:
                value = field_value(pod, item["fieldRef"]["fieldPath"])
            else:
                ref = item["resourceFieldRef"]
                value = resource_value(
                    containers.get(ref.get("containerName", ""), {}),
                    ref["resource"],
                    ref.get("divisor"),
                    allocatable,
                )
        except ContainerConfigError as exc:
            raise VolumeError(str(exc)) from exc
        files.append(VolumeFile(_safe_path(item["path"]), value.encode(), item.get("mode", default_mode)))
    return files


def _projected_files(pod: Manifest, projected: Manifest, lookups: VolumeLookups) -> list[VolumeFile]:
    mode = projected.get("defaultMode", DEFAULT_MODE)
    files: list[VolumeFile] = []
    for source in projected.get("sources") or []:
        if token := source.get("serviceAccountToken"):
            audience = token.get("audience", "")
            if audience not in lookups.tokens:
                raise VolumeError(f"no service-account token for audience {audience!r} yet")
            files.append(VolumeFile(_safe_path(token["path"]), lookups.tokens[audience].encode(), mode))
        elif config_map := source.get("configMap"):
            name = config_map["name"]
            files += _key_files("configmap", name, lookups.config_maps.get(name), config_map, mode)
        elif secret := source.get("secret"):
            name = secret["name"]
            files += _key_files("secret", name, lookups.secrets.get(name), secret, mode)
        elif downward := source.get("downwardAPI"):
            files += _downward_files(pod, downward.get("items") or [], mode, lookups.node_allocatable)
        else:
            raise VolumeError(f"unsupported projected source {sorted(source)}")
    return files


def rendered_files(volume: Manifest, pod: Manifest, lookups: VolumeLookups) -> list[VolumeFile] | None:
    """The files of a volume rendered from API objects, or None for a volume that is a plain folder."""
    if config_map := volume.get("configMap"):
        name = config_map["name"]
        return _key_files(
            "configmap",
            name,
            lookups.config_maps.get(name),
            config_map,
            config_map.get("defaultMode", DEFAULT_MODE),
        )
    if secret := volume.get("secret"):
        name = secret["secretName"]
        return _key_files(
            "secret", name, lookups.secrets.get(name), secret, secret.get("defaultMode", DEFAULT_MODE)
        )
    if downward := volume.get("downwardAPI"):
        return _downward_files(
            pod,
            downward.get("items") or [],
            downward.get("defaultMode", DEFAULT_MODE),
            lookups.node_allocatable,
        )
    if projected := volume.get("projected"):
        return _projected_files(pod, projected, lookups)
    if "emptyDir" in volume or binds_host_folder(volume):
        return None
    kinds = sorted(k for k in volume if k != "name")
    raise VolumeError(
        f"volume {volume['name']!r}: the local node does not support {', '.join(kinds)} volumes"
    )


def binds_host_folder(volume: Manifest) -> bool:
    """Whether the pod sees a real host folder (hostPath, or the one a claim's volume is) rather than one
    the node made for it."""
    return "hostPath" in volume or "persistentVolumeClaim" in volume


def read_only_volume(volume: Manifest) -> bool:
    """Volumes every mount of which is read-only, whatever the volumeMount says."""
    rendered = any(k in volume for k in ("configMap", "secret", "projected", "downwardAPI"))
    return rendered or bool((volume.get("persistentVolumeClaim") or {}).get("readOnly"))


def claim_names(pod: Manifest) -> set[str]:
    volumes = pod["spec"].get("volumes") or []
    return {v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}


def bound_volume_name(claim: Manifest) -> str:
    """The PersistentVolume a claim is bound to; ValueError in the kubelet's words when there is none."""
    namespace, name = claim["metadata"]["namespace"], claim["metadata"]["name"]
    if claim["metadata"].get("deletionTimestamp"):
        raise ValueError(f"can't start pod because PVC {namespace}/{name} is being deleted")
    phase = (claim.get("status") or {}).get("phase", "")
    volume_name: str = claim["spec"].get("volumeName") or ""
    if phase != "Bound" or not volume_name:
        raise ValueError(
            f"PVC {namespace}/{name} has non-bound phase ({phase!r}) or empty pvc.Spec.VolumeName "
            f"({volume_name!r})"
        )
    return volume_name


def host_folder_source(volume: Manifest, claim: Manifest) -> Manifest:
    """The hostPath source that mounts PersistentVolume `volume`, checked to be bound to `claim`."""
    name, spec = volume["metadata"]["name"], volume["spec"]
    claim_uid, ref_uid = claim["metadata"]["uid"], (spec.get("claimRef") or {}).get("uid")
    if ref_uid != claim_uid:
        raise ValueError(
            f"found PV object {name!r} but its ClaimRef.UID ({ref_uid!r}) points to a different "
            f"PVC.UID ({claim_uid!r})"
        )
    if "hostPath" in spec:
        return dict(spec["hostPath"])
    if "local" in spec:  # a local volume's folder must exist already
        return {"path": spec["local"]["path"], "type": "Directory"}
    raise ValueError(f"PV {name} is neither a hostPath nor a local volume, the kinds the local node mounts")


def _claim_source(claim_name: str, lookups: VolumeLookups) -> Manifest:
    claim = lookups.claims.get(claim_name)
    if claim is None:
        raise ValueError(
            f'failed to fetch PVC from API server: persistentvolumeclaims "{claim_name}" not found'
        )
    volume_name = bound_volume_name(claim)
    volume = lookups.persistent_volumes.get(volume_name)
    if volume is None:
        raise ValueError(
            f'failed to fetch PV {volume_name} from API server: persistentvolumes "{volume_name}" not found'
        )
    return host_folder_source(volume, claim)


def claim_sources(pod: Manifest, lookups: VolumeLookups) -> dict[str, Manifest]:
    """The hostPath source of each claim volume of the pod (by volume name): its bound volume's folder."""
    sources = {}
    for volume in pod["spec"].get("volumes") or []:
        if "persistentVolumeClaim" in volume:
            claim_name = volume["persistentVolumeClaim"]["claimName"]
            try:
                sources[volume["name"]] = _claim_source(claim_name, lookups)
            except ValueError as exc:
                namespace = pod["metadata"]["namespace"]
                raise ClaimError(volume["name"], namespace, claim_name, str(exc)) from exc
    return sources


def with_claim_sources(pod: Manifest, sources: Mapping[str, Manifest]) -> Manifest:
    """The pod as its sandbox is built: each claim volume replaced by its bound volume's hostPath source."""
    volumes = [
        {"name": v["name"], "hostPath": sources[v["name"]]} if v["name"] in sources else v
        for v in pod["spec"].get("volumes") or []
    ]
    return {**pod, "spec": {**pod["spec"], "volumes": volumes}}


def _volume_references(pod: Manifest) -> tuple[set[str], set[str]]:
    config_maps: set[str] = set()
    secrets: set[str] = set()
    for volume in pod["spec"].get("volumes") or []:
        sources = [volume, *((volume.get("projected") or {}).get("sources") or [])]
        config_maps |= {s["configMap"]["name"] for s in sources if "configMap" in s}
        secrets |= {s["secret"].get("secretName") or s["secret"]["name"] for s in sources if "secret" in s}
    return config_maps, secrets


def _env_references(pod: Manifest) -> tuple[set[str], set[str]]:
    config_maps: set[str] = set()
    secrets: set[str] = set()
    spec = pod["spec"]
    for container in [*(spec.get("initContainers") or []), *spec.get("containers", [])]:
        refs = [
            *(container.get("envFrom") or []),
            *(v.get("valueFrom") or {} for v in container.get("env") or []),
        ]
        config_maps |= {r[k]["name"] for r in refs for k in ("configMapRef", "configMapKeyRef") if k in r}
        secrets |= {r[k]["name"] for r in refs for k in ("secretRef", "secretKeyRef") if k in r}
    return config_maps, secrets


def referenced_objects(pod: Manifest) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets a pod's volumes, env and envFrom refer to."""
    volume_maps, volume_secrets = _volume_references(pod)
    env_maps, env_secrets = _env_references(pod)
    return volume_maps | env_maps, volume_secrets | env_secrets


def token_audiences(pod: Manifest) -> set[str]:
    audiences = set()
    for volume in pod["spec"].get("volumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "serviceAccountToken" in source:
                audiences.add(source["serviceAccountToken"].get("audience", ""))
    return audiences


def write_atomically(target: Path, files: Sequence[VolumeFile], gid: int | None = None) -> bool:
    """Make `target` hold exactly `files`; return whether anything changed."""
    target.mkdir(parents=True, exist_ok=True)
    current = target / DATA_LINK
    if current.is_symlink() and _same_contents(current, files):
        return False
    payload = target / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    for file in files:
        path = payload / file.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(file.content)
        path.chmod(file.mode)
        if gid is not None:
            os.chown(path, -1, gid)
    payload.mkdir(exist_ok=True)
    staged = target / "..data_tmp"
    staged.unlink(missing_ok=True)
    staged.symlink_to(payload.name)
    staged.rename(current)  # the atomic switch
    top_level = {PurePosixPath(f.path).parts[0] for f in files}
    for name in top_level:
        link = target / name
        if not link.is_symlink():
            link.symlink_to(f"{DATA_LINK}/{name}")
    for entry in target.iterdir():
        if entry.name.startswith(".."):
            if entry.name not in (DATA_LINK, payload.name):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        elif entry.name not in top_level:
            entry.unlink()
    return True


def _same_contents(data_dir: Path, files: Sequence[VolumeFile]) -> bool:
    existing = {str(p.relative_to(data_dir)): p for p in data_dir.rglob("*") if p.is_file()}
    if set(existing) != {f.path for f in files}:
        return False
    return all(
        existing[f.path].read_bytes() == f.content and existing[f.path].stat().st_mode & 0o7777 == f.mode
        for f in files
    )
