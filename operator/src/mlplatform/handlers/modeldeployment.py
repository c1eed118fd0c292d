"""ModelDeployment handlers: a pass per ModelDeployment, on a timer and whenever something wakes it, keeps
it serving the version its selector resolves to, and rolls back a version that does not become ready.

Level-triggered: each pass resolves the selector in the registry, applies the Deployment (the version
pinned in its pod template), Service, autoscaler and disruption budget, reads the Deployment's rollout,
and records status. What it knows between passes lives in the cluster: the version the Deployment runs
(its template), the last version that served (status.modelVersion) and the version rolled back from
(status.failedVersion). A pass runs on a timer (spec.pollIntervalSeconds), when the Deployment changes,
when the spec changes, and when a registry webhook names the model. One scheduler runs the passes of all
ModelDeployments (a timer each between passes, not a sleeping daemon each), and reads each object from an
index that keeps only what a pass reads of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NoReturn, cast

import kopf

from mlplatform import names
from mlplatform.api.base import SpecError
from mlplatform.api.conditions import Condition, ReasonedError, now_iso
from mlplatform.api.modeldeployment import (
    ModelDeploymentSpec,
    ModelSelector,
    Outcome,
    add_history,
    mark_replaced,
    parse_spec,
)
from mlplatform.builders.modeldeployment import (
    ServedVersion,
    ServingSettings,
    build_children,
    deployment_name,
    selector_labels,
    service_name,
    service_url,
)
from mlplatform.handlers.context import ObjectKey, OperatorContext
from mlplatform.handlers.passes import PassScheduler
from mlplatform.handlers.status import Logger, ObjectReconciler, Packed, slim_fields
from mlplatform.handlers.trainingrun import context
from mlplatform.jobstatus import pod_failure
from mlplatform.kube import KubeError
from mlplatform.metrics import DURATION, ERRORS, RECONCILES, ROLLOUTS
from mlplatform.serving import server_source
from mlplatform.tracking import MlflowError, MlflowUnavailable, ModelVersion

MODELDEPLOYMENT = (names.GROUP, names.VERSION, names.MODELDEPLOYMENT_PLURAL)
KIND = "modeldeployment"
CHILDREN = {names.LABEL_MODELDEPLOYMENT: kopf.PRESENT}
RETRY_SECONDS = 5.0  # after an error, the next pass comes this soon rather than at the poll interval
CONCURRENT_PASSES = 200  # as kopf's worker limit: a burst of objects queues
READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"


class ServingError(ReasonedError):
    """Why the ModelDeployment cannot serve what it asks for."""


def child_key(namespace: str | None, labels: Mapping[str, str]) -> ObjectKey:
    return (namespace or "", f"{KIND}/{labels.get(names.LABEL_MODELDEPLOYMENT, '')}")


def own_key(namespace: str | None, name: str) -> ObjectKey:
    return child_key(namespace, selector_labels(name))


@kopf.index("apps", "v1", "deployments", labels=CHILDREN)
async def modeldeployment_deployments(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, memo: Any, **_: Any
) -> Any:
    """What read_rollout reads of each Deployment (not its pod template); a change wakes its owner."""
    key = child_key(namespace, labels)
    context(memo).wake(key)
    return {key: deployment_summary(body)}


def deployment_summary(deployment: Mapping[str, Any]) -> dict[str, Any]:
    metadata, spec = deployment.get("metadata") or {}, deployment.get("spec") or {}
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    return {
        "metadata": {"generation": metadata.get("generation", 0)},
        "spec": {
            "replicas": spec.get("replicas", 1),
            "template": {"metadata": {"labels": dict(template_labels)}},
        },
        "status": dict(deployment.get("status") or {}),
    }


@kopf.index(*MODELDEPLOYMENT)
async def modeldeployment_objects(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """Each ModelDeployment as its passes read it, packed: kopf keeps no other copy of its body."""
    return {own_key(namespace, name): Packed(slim_fields(body))}


@kopf.on.event(*MODELDEPLOYMENT)
async def modeldeployment_seen(body: kopf.Body, type: str | None, memo: Any, **indexes: Any) -> None:
    """Every ModelDeployment listed or created gets its passes; one whose spec changed since its last
    pass gets one at once; a deleted one its last (which ends them). No kopf change handler: kopf would
    patch a diff-base annotation onto every object, a request and a watch event each, where the
    generation already tells a spec change."""
    passes = serving_passes(context(memo), indexes)
    key = own_key(body.metadata.namespace, body.metadata.name or "")
    if type == "DELETED" or (key in passes and spec_unobserved(body.metadata, body.status)):
        passes.wake(key)
    else:
        passes.ensure(key)


def spec_unobserved(meta: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether the object's spec changed after the status was last written (every pass writes the
    generation it acted on)."""
    return meta.get("generation") != (status or {}).get("observedGeneration")


def serving_passes(ctx: OperatorContext, indexes: Mapping[str, Any]) -> PassScheduler:
    """The scheduler of every ModelDeployment's passes, made with kopf's indexes when first needed."""
    if ctx.serving is None:
        server = ModelDeploymentPasses(
            ctx, indexes["modeldeployment_objects"], indexes["modeldeployment_deployments"]
        )
        ctx.serving = PassScheduler(server.run_pass, CONCURRENT_PASSES)
    return ctx.serving


class ModelDeploymentPasses:
    """One pass of a ModelDeployment, on the object as the index has it now, by a reconciler made for the
    pass; between passes each object keeps only that reconciler's memory, packed."""

    def __init__(
        self,
        ctx: OperatorContext,
        objects: kopf.Index[ObjectKey, Any],
        deployments: kopf.Index[ObjectKey, Any],
    ) -> None:
        self.ctx = ctx
        self.objects = objects
        self.deployments = deployments
        self.memories: dict[ObjectKey, Packed] = {}

    async def run_pass(self, key: ObjectKey) -> float | None:
        found: list[Packed] = list(self.objects.get(key, []))
        body = kopf.Body(cast(kopf.RawBody, found[0].unpack())) if found else None
        if body is None or body.metadata.get("deletionTimestamp"):
            self.memories.pop(key, None)
            self.ctx.models.pop(key, None)
            return None
        logger = kopf.LocalObjectLogger(body=body, settings=self.ctx.kopf_settings)
        reconciler = ModelDeploymentReconciler(self.ctx, body, logger, self.deployments)
        if (memory := self.memories.get(key)) is not None:
            reconciler.recall(memory.unpack())
        try:
            return await reconciler.reconcile_safely()
        finally:
            self.memories[key] = Packed(reconciler.memory())


@dataclass(frozen=True)
class Rollout:
    """What the Deployment says of the version it runs."""

    version: str | None  # the version its pod template pins (None: no Deployment yet)
    complete: bool  # every replica runs that version and is available
    failed: bool  # it did not progress within progressDeadlineSeconds
    replicas: int
    ready_replicas: int


@dataclass
class Versions:
    """What one pass decided: the version to run, the one that served so far, the one rolled back from,
    what stands in the way, and the history to record."""

    target: str
    serving: str | None
    failed: str | None
    problem: ServingError | None
    history: list[dict[str, Any]]


def read_rollout(deployment: Mapping[str, Any] | None) -> Rollout:
    """The rollout state of a Deployment, as the Deployment controller reports it."""
    if deployment is None:
        return Rollout(None, False, False, 0, 0)
    metadata, spec, status = (deployment.get(k) or {} for k in ("metadata", "spec", "status"))
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    wanted = int(spec.get("replicas", 1))
    current = status.get("observedGeneration", 0) >= metadata.get("generation", 0)
    updated, available = int(status.get("updatedReplicas") or 0), int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    progressing: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {}
    )
    return Rollout(
        version=template_labels.get(names.LABEL_MODEL_VERSION),
        complete=current and updated >= wanted and available >= wanted and total == updated,
        failed=current and progressing.get("reason") == "ProgressDeadlineExceeded",
        replicas=total,
        ready_replicas=int(status.get("readyReplicas") or 0),
    )


async def resolve(ctx: OperatorContext, selector: ModelSelector, poll_interval: float) -> ModelVersion:
    """The exact version the selector names now, or ServingError saying what is missing. ModelDeployments
    asking the same within half a poll interval share one answer: the registry is asked at most twice
    per interval per selector, and what it says reaches each of them within 1.5 intervals (a registry
    webhook naming the model drops its answers at once)."""
    question = (selector.name, selector.resolved_from)
    found = await ctx.registry.answers.ask(question, poll_interval / 2, registry_call(ctx, selector))
    if found is None:
        raise ServingError(
            "ModelNotFound", f"the registry has no {selector.resolved_from} of model {selector.name!r}"
        )
    return found


def registry_call(
    ctx: OperatorContext, selector: ModelSelector
) -> Callable[[], Awaitable[ModelVersion | None]]:
    registry, name = ctx.registry, selector.name
    if selector.alias is not None:
        return partial(registry.version_by_alias, name, selector.alias)
    if selector.stage is not None:
        return partial(registry.latest_in_stage, name, selector.stage)
    return partial(registry.find_version, name, str(selector.version))


class ModelDeploymentReconciler(ObjectReconciler):
    plural = names.MODELDEPLOYMENT_PLURAL

    def __init__(
        self, ctx: OperatorContext, body: kopf.Body, logger: Logger, deployments: kopf.Index[ObjectKey, Any]
    ) -> None:
        super().__init__(ctx, body, logger)
        self.deployments = deployments
        self.key = own_key(self.namespace, self.name)
        self.pruned_generation: int | None = None  # the generation whose unwanted children were deleted
        self.images: dict[tuple[str, str], str] = {}  # (model, version) -> the image it was trained with

    def memory(self) -> dict[str, Any]:
        images = [[model, version, image] for (model, version), image in self.images.items()]
        return {**super().memory(), "prunedGeneration": self.pruned_generation, "images": images}

    def recall(self, memory: Mapping[str, Any]) -> bool:
        if not super().recall(memory):
            return False
        self.pruned_generation = memory["prunedGeneration"]
        self.images = {(model, version): image for model, version, image in memory["images"]}
        return True

    async def reconcile_safely(self) -> float:
        """One pass; the seconds until the next one unless something wakes it sooner."""
        try:
            spec = parse_spec(self.body.get("spec"))
        except SpecError as exc:
            await self.write({}, unusable("InvalidSpec", str(exc)))
            return 3600.0  # nothing to do until the spec changes (which wakes this object's pass)
        self.ctx.models[self.key] = spec.model.name
        try:
            with DURATION.labels(KIND, "reconcile").time():
                await self.reconcile(spec)
        except ServingError as exc:
            self.logger.warning("%s: %s", exc.reason, exc.message)
            if self.status.get("modelVersion"):
                await self.write_quietly(exc.reason, exc.message)
            else:
                await self.write(
                    {"resolvedFrom": spec.model.resolved_from}, unusable(exc.reason, exc.message)
                )
            return float(spec.poll_interval_seconds)
        except (MlflowError, KubeError) as exc:
            reason = "RegistryUnavailable" if isinstance(exc, MlflowError) else "KubernetesError"
            message = str(exc) if isinstance(exc, MlflowError) else exc.message
            ERRORS.labels(KIND, reason).inc()
            self.logger.warning("%s: %s", reason, message)
            await self.write_quietly(reason, message)
            return RETRY_SECONDS
        return float(spec.poll_interval_seconds)

    async def reconcile(self, spec: ModelDeploymentSpec) -> None:
        versions = await self.decide(spec, read_rollout(self.indexed_deployment()).version)
        if versions is None:
            return
        served = ServedVersion(spec.model.name, versions.target, await self.image(spec, versions.target))
        rollout = read_rollout(await self.apply(spec, served))
        await self.record(spec, served, rollout, versions)

    async def decide(self, spec: ModelDeploymentSpec, running: str | None) -> Versions | None:
        """The versions of this pass; None when nothing can run (status says why)."""
        serving: str | None = self.status.get("modelVersion")
        failed: str | None = self.status.get("failedVersion")
        history = [dict(entry) for entry in self.status.get("history") or []]
        try:
            resolved = (await resolve(self.ctx, spec.model, spec.poll_interval_seconds)).version
        except (ServingError, MlflowUnavailable) as exc:
            problem = exc if isinstance(exc, ServingError) else ServingError("RegistryUnavailable", str(exc))
            target = running or serving  # keep running what runs
            if target is None:
                fields = {"resolvedFrom": spec.model.resolved_from}
                await self.write(fields, unusable(problem.reason, problem.message))
                return None
            return Versions(target, serving, failed, problem, history)
        if resolved != failed:
            failed = None  # the registry moved: that version may be tried again when it comes back
        return Versions(self.choose(resolved, serving, failed), serving, failed, None, history)

    @staticmethod
    def choose(resolved: str, serving: str | None, failed: str | None) -> str:
        """The version to run: the resolved one, unless it already failed to roll out and an older one
        still serves."""
        if resolved == failed and serving is not None:
            return serving
        return resolved

    async def image(self, spec: ModelDeploymentSpec, version: str) -> str:
        """spec.image, else the image the version was trained with (the tag a TrainingRun writes on the
        version, or on its run)."""
        if spec.image:
            return spec.image
        key = (spec.model.name, version)
        if key not in self.images:
            found = await self.ctx.registry.get_version(spec.model.name, version)
            image = found.tags.get(names.TAG_IMAGE)
            if image is None and found.run_id:
                image = (await self.ctx.mlflow.get_run(found.run_id)).tags.get(names.TAG_IMAGE)
            if image is None:
                raise_unknown_image(spec.model.name, version)
            self.images[key] = str(image)
        return self.images[key]

    async def apply(self, spec: ModelDeploymentSpec, served: ServedVersion) -> Mapping[str, Any] | None:
        settings = ServingSettings(
            self.ctx.settings.trainer_tracking_uri, self.ctx.settings.tracking_secret, server_source()
        )
        wanted, unwanted = build_children(
            self.name, self.namespace, self.uid, spec=spec, served=served, settings=settings
        )
        deployment: Mapping[str, Any] | None = None
        with DURATION.labels(KIND, "apply").time():
            for manifest in wanted:
                applied = await self.ctx.kube.apply(manifest)
                if manifest["kind"] == "Deployment":
                    deployment = applied
            generation = self.body.metadata.get("generation")
            if generation != self.pruned_generation:  # what a spec no longer wants goes once per change
                for kind, object_name in unwanted:
                    await self.ctx.kube.delete(kind, self.namespace, object_name)
                self.pruned_generation = generation
        return deployment

    async def record(
        self, spec: ModelDeploymentSpec, served: ServedVersion, rollout: Rollout, versions: Versions
    ) -> None:
        if versions.target != versions.serving:
            await self.follow_rollout(spec, rollout, versions)
        fields: dict[str, Any] = {
            "modelVersion": versions.serving,
            "targetVersion": versions.target,
            "failedVersion": versions.failed,
            "resolvedFrom": spec.model.resolved_from,
            "image": served.image,
            "modelUri": served.uri,
            "url": service_url(self.name, self.namespace),
            "deploymentName": deployment_name(self.name),
            "serviceName": service_name(self.name),
            "replicas": rollout.replicas,
            "readyReplicas": rollout.ready_replicas,
            "history": versions.history,
        }
        conditions = serving_conditions(rollout, versions)
        RECONCILES.labels(KIND, "ready" if conditions[0].status else "not_ready").inc()
        await self.write(fields, conditions, stamp={"lastResolved": now_iso()})

    async def follow_rollout(self, spec: ModelDeploymentSpec, rollout: Rollout, versions: Versions) -> None:
        """A version rolling out: it serves once complete; rolled back (or failed) past its deadline."""
        target, serving = versions.target, versions.serving
        if rollout.complete:
            replaced = mark_replaced(versions.history, serving or "", now_iso())
            versions.history = add_history(replaced, target, Outcome.SERVING, now_iso())
            kopf.info(
                self.body,
                reason="RolledOut",
                message=f"version {target} serves" + (f", replacing version {serving}" if serving else ""),
            )
            ROLLOUTS.labels("completed").inc()
            versions.serving = target
        elif rollout.failed:
            why = await self.failure_reason(target)
            if spec.rollout.auto_rollback and serving is not None:
                versions.history = add_history(versions.history, target, Outcome.ROLLED_BACK, now_iso(), why)
                kopf.warn(
                    self.body,
                    reason="RolledBack",
                    message=f"version {target} did not become ready ({why}); version {serving} serves again",
                )
                ROLLOUTS.labels("rolled_back").inc()
                versions.failed = target
                self.ctx.wake(self.key)  # the next pass applies the version that served
            elif not versions.history or versions.history[-1].get("version") != target:
                versions.history = add_history(versions.history, target, Outcome.FAILED, now_iso(), why)
                kopf.warn(
                    self.body, reason="RolloutFailed", message=f"version {target} did not become ready: {why}"
                )
                ROLLOUTS.labels("failed").inc()
        elif self.status.get("targetVersion") != target:
            kopf.info(
                self.body,
                reason="RollingOut",
                message=f"rolling out version {target} ({spec.model.resolved_from})",
            )

    async def failure_reason(self, version: str) -> str:
        """Why the pods of `version` are not ready, from their container statuses."""
        selector = {**selector_labels(self.name), names.LABEL_MODEL_VERSION: version}
        pods = await self.ctx.kube.list_pods(self.namespace, selector)
        found = pod_failure(pods)
        return f"{found[0]}: {found[1]}" if found else "its pods did not become ready"

    def indexed_deployment(self) -> Mapping[str, Any] | None:
        found = list(self.deployments.get(self.key, []))
        return found[0] if found else None

    # --- plumbing ------------------------------------------------------------------------------------

    async def write_quietly(self, reason: str, message: str) -> None:
        """Say in Degraded what went wrong, keeping Ready as it is (what runs keeps serving)."""
        try:
            await self.write({}, [Condition(DEGRADED, True, reason, message)])
        except KubeError as exc:
            self.logger.warning("cannot write status: %s", exc.message)


def raise_unknown_image(model: str, version: str) -> NoReturn:
    raise ServingError(
        "ImageUnknown",
        f"model {model!r} version {version} carries no {names.TAG_IMAGE} tag (it was not trained by a "
        "TrainingRun): set spec.image to an image with MLflow and the model's libraries",
    )


def unusable(reason: str, message: str) -> list[Condition]:
    """Nothing serves and nothing can until something changes."""
    return [
        Condition(READY, False, reason, message),
        Condition(PROGRESSING, False, reason, ""),
        Condition(DEGRADED, True, reason, message),
    ]


def serving_conditions(rollout: Rollout, versions: Versions) -> list[Condition]:
    """Ready, Progressing and Degraded from the rollout, the version that serves and any problem."""
    target = versions.target
    progressing = (
        Condition(PROGRESSING, False, "Complete", f"version {target} is rolled out")
        if rollout.complete
        else Condition(
            PROGRESSING, False, "ProgressDeadlineExceeded", f"version {target} did not become ready"
        )
        if rollout.failed
        else Condition(PROGRESSING, True, "RollingOut", f"rolling out version {target}")
    )
    return [ready_condition(rollout, versions), progressing, degraded_condition(rollout, versions)]


def ready_condition(rollout: Rollout, versions: Versions) -> Condition:
    target, serving = versions.target, versions.serving
    if rollout.complete and target == serving:
        return Condition(
            READY, True, "Serving", f"version {serving} serves on {rollout.ready_replicas} replica(s)"
        )
    if serving is not None and rollout.ready_replicas > 0:
        after = f" while version {target} rolls out" if target != serving else ""
        return Condition(READY, True, "Serving", f"version {serving} serves{after}")
    reason = "RolloutFailed" if rollout.failed else "RollingOut"
    return Condition(READY, False, reason, f"version {target} is not ready yet")


def degraded_condition(rollout: Rollout, versions: Versions) -> Condition:
    if versions.problem is not None:
        keeps = versions.serving or versions.target
        return Condition(
            DEGRADED,
            True,
            versions.problem.reason,
            f"{versions.problem.message}; version {keeps} keeps serving",
        )
    if versions.failed is not None:
        why = last_message(versions.history, versions.failed)
        return Condition(
            DEGRADED,
            True,
            "RolledBack",
            f"version {versions.failed} did not become ready ({why}); version {versions.serving} serves",
        )
    if rollout.failed:
        return Condition(
            DEGRADED,
            True,
            "RolloutFailed",
            f"version {versions.target} did not become ready within the progress deadline",
        )
    return Condition(DEGRADED, False, "Healthy", "")


def last_message(history: Sequence[Mapping[str, Any]] | None, version: str) -> str:
    for entry in reversed(history or []):
        if entry.get("version") == version and entry.get("message"):
            return str(entry["message"])
    return "it did not become ready"
