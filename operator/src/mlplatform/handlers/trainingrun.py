"""TrainingRun handlers: a runner per TrainingRun that can change carries it from MLflow run to result.

The runner is level-triggered: it starts from what the cluster and MLflow hold (the run tagged with the
object's uid, the Job named after it), so a restarted operator resumes every unfinished TrainingRun
without a second run or a second Job. It sleeps until a watch of its Job or pods wakes it (or a resync
timer), reads them from kopf's indexes, and writes status only when something changed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from functools import partial
from typing import Any, TypeVar, cast

import kopf

from mlplatform import names
from mlplatform.aio import wait_woken
from mlplatform.api.base import SpecError
from mlplatform.api.conditions import ReasonedError, done, in_progress, now_iso, stalled
from mlplatform.api.trainingrun import Phase, TrainingRunSpec, parse_spec
from mlplatform.builders.common import short_name
from mlplatform.builders.trainingrun import RunContext, TrainerSettings, build_job, job_name
from mlplatform.handlers.context import ObjectKey, OperatorContext
from mlplatform.handlers.runners import Runners
from mlplatform.handlers.status import Logger, ObjectReconciler, Packed, slim_body
from mlplatform.jobstatus import Observation, observe
from mlplatform.kube import KubeError
from mlplatform.metrics import DURATION, ERRORS, RECONCILES
from mlplatform.promotion import Decision, check_gate, decide, format_metric, key_metric
from mlplatform.registry import ModelNotLogged
from mlplatform.tracking import MlflowError, MlflowUnavailable, Run, run_url

TRAININGRUN = (names.GROUP, names.VERSION, names.TRAININGRUN_PLURAL)
KIND = "trainingrun"
CHILDREN = {names.LABEL_TRAININGRUN: kopf.PRESENT}
RESYNC_SECONDS = 60.0  # a lost watch event costs at most this long
BACKOFF_SECONDS = (1, 2, 4, 8, 15, 30, 60)
SUSPENDED = "Suspended"  # the reason jobstatus.observe gives a suspended Job
DELETE_ATTEMPTS = 5  # then deletion lets go of an unreachable MLflow, with a warning event
T = TypeVar("T")


class RunError(ReasonedError):
    """The run cannot succeed."""


def phase_of(status: Mapping[str, Any] | None) -> Phase | None:
    value = str((status or {}).get("phase"))
    return Phase(value) if value in set(Phase) else None


def unfinished(status: Mapping[str, Any], **_: Any) -> bool:
    phase = phase_of(status)
    return phase is None or not phase.finished


def finished(status: Mapping[str, Any], **_: Any) -> bool:
    return not unfinished(status)


def needs_watching(spec: Mapping[str, Any], status: Mapping[str, Any], **_: Any) -> bool:
    """Whether the TrainingRun needs its runner: not once finished, nor while its Job is recorded as
    suspended as the spec asks (nothing can happen until the spec changes, which brings the runner back;
    it resumes from the cluster and MLflow as after a restart)."""
    ready: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    parked = bool(spec.get("suspend")) and ready.get("reason") == SUSPENDED
    return unfinished(status) and not parked


def child_key(namespace: str | None, labels: Mapping[str, str]) -> ObjectKey:
    return (namespace or "", labels.get(names.LABEL_TRAININGRUN, ""))


def own_key(namespace: str | None, name: str) -> ObjectKey:
    """The key a TrainingRun's children are indexed under: its name as their label carries it."""
    return child_key(namespace, {names.LABEL_TRAININGRUN: short_name(name)})


def recorded_job_name(status: Mapping[str, Any], name: str) -> str:
    """The Job status recorded, or the one this TrainingRun's Job is named (not yet recorded)."""
    return str(status.get("jobName") or job_name(name))


# --- watches: Jobs and pods kept in indexes (which also wake their TrainingRun's runner) ----------------
# Indexes rather than event handlers: kopf runs them before any handler, quietly, and keeps their latest
# state, so a runner reads its children without an API call.


@kopf.index("batch", "v1", "jobs", labels=CHILDREN)
async def trainingrun_jobs(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, memo: Any, **_: Any
) -> Any:
    key = child_key(namespace, labels)
    context(memo).wake(key)
    return {key: Packed(job_summary(body))}


def job_summary(job: Mapping[str, Any]) -> dict[str, Any]:
    """What the runner reads of a Job (jobstatus.observe and the suspend sync): an index keeps one per
    TrainingRun, so not its pod template."""
    spec = job.get("spec") or {}
    return {
        "metadata": {"name": job["metadata"]["name"]},
        "spec": {k: spec[k] for k in ("suspend", "activeDeadlineSeconds") if k in spec},
        "status": dict(job.get("status") or {}),
    }


@kopf.index("", "v1", "pods", labels=CHILDREN)
async def trainingrun_pods(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, memo: Any, **_: Any
) -> Any:
    key = child_key(namespace, labels)
    context(memo).wake(key)
    metadata = {"name": body.metadata.name, "creationTimestamp": body.metadata.get("creationTimestamp")}
    return {key: {"metadata": metadata, "status": dict(body.get("status") or {})}}


@kopf.index(*TRAININGRUN)
async def trainingrun_phases(uid: str, status: Mapping[str, Any], memo: Any, **_: Any) -> Any:
    """Counts objects by phase for the metrics (the deletion handler forgets them)."""
    phase = str((status or {}).get("phase") or Phase.PENDING)
    context(memo).phases[uid] = phase
    return {phase: uid}


def context(memo: Any) -> OperatorContext:
    found: OperatorContext = memo["context"]
    return found


# --- the TrainingRun ------------------------------------------------------------------------------


@kopf.on.event(*TRAININGRUN)
async def trainingrun_seen(body: kopf.Body, type: str | None, memo: Any, **indexes: Any) -> None:
    """Every TrainingRun listed or changed that can change has a runner, which carries it from creation
    to its result and holds a slim copy of it; a finished, parked or deleted one has none. kopf passes
    its indexes by their function's name."""
    ctx = context(memo)
    runners = ctx.trainingruns = ctx.trainingruns or Runners()
    key = own_key(body.metadata.namespace, body.metadata.name)
    if type == "DELETED":
        runners.forget(key, body.metadata.uid or "")
    elif body.metadata.get("deletionTimestamp") or not needs_watching(body.spec, body.status):
        runners.stop(key)
    else:
        jobs, pods = indexes["trainingrun_jobs"], indexes["trainingrun_pods"]
        slim = kopf.Body(cast(kopf.RawBody, slim_body(body)))
        runners.ensure(key, slim, partial(new_reconciler, ctx, jobs, pods))


def new_reconciler(
    ctx: OperatorContext, jobs: kopf.Index[ObjectKey, Any], pods: kopf.Index[ObjectKey, Any], body: kopf.Body
) -> TrainingRunReconciler:
    logger = kopf.ObjectLogger(body=body, settings=ctx.kopf_settings)
    return TrainingRunReconciler(ctx, body, logger, jobs, pods)


@kopf.on.update(*TRAININGRUN, field="spec")
async def spec_changed(
    body: kopf.Body, diff: kopf.Diff, status: Mapping[str, Any], patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    """A started run keeps the spec it started with; only spec.suspend still applies."""
    changed = sorted({".".join(("spec", *map(str, item[1]))) for item in diff} - {"spec.suspend"})
    if changed and (finished(status) or status.get("jobName")):
        kopf.warn(
            body,
            reason="SpecChangeIgnored",
            message=f"{', '.join(changed)} changed after the run started; a new TrainingRun trains again",
        )
    patch.status["observedGeneration"] = body.metadata.get("generation")
    context(memo).wake(own_key(body.metadata.namespace, body.metadata.name))


@kopf.on.delete(*TRAININGRUN, id="cleanup")
async def delete_trainingrun(
    body: kopf.Body,
    status: Mapping[str, Any],
    memo: Any,
    retry: int,
    logger: Logger,
    **_: Any,
) -> None:
    """Stop the Job and its pods, and mark an unfinished MLflow run KILLED. An unreachable MLflow holds the
    deletion back for a few bounded retries only, then the object goes with a warning event."""
    ctx = context(memo)
    ctx.phases.pop(body.metadata.uid or "", None)
    ctx.creating_runs.discard(body.metadata.uid or "")
    namespace, name = body.metadata.namespace or "", body.metadata.name
    await ctx.kube.delete_job(namespace, recorded_job_name(status, name))
    run_id = (status.get("mlflow") or {}).get("runId")
    if not run_id or finished(status):
        return
    try:
        await ctx.mlflow.end_run(run_id, "KILLED")
        kopf.info(body, reason="RunKilled", message=f"MLflow run {run_id} marked KILLED")
    except MlflowError as exc:
        if retry + 1 < DELETE_ATTEMPTS:
            raise kopf.TemporaryError(f"cannot mark run {run_id} KILLED yet: {exc}", delay=2**retry) from exc
        logger.warning("giving up marking run %s KILLED: %s", run_id, exc)
        kopf.warn(
            body, reason="RunNotKilled", message=f"MLflow run {run_id} could not be marked KILLED: {exc}"
        )


class TrainingRunReconciler(ObjectReconciler):
    plural = names.TRAININGRUN_PLURAL

    def __init__(
        self,
        ctx: OperatorContext,
        body: kopf.Body,
        logger: Logger,
        jobs: kopf.Index[ObjectKey, Any],
        pods: kopf.Index[ObjectKey, Any],
    ) -> None:
        super().__init__(ctx, body, logger)
        self.jobs = jobs
        self.pods = pods
        self.key = own_key(self.namespace, self.name)

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.body.metadata["creationTimestamp"])

    async def run(self) -> None:
        waker = self.ctx.waker(self.key)
        try:
            spec = self.parse()
            run = await self.retrying("create the MLflow run", lambda: self.ensure_run(spec))
            # Passed on, not held here: `follow` lets go of the Job as created once the watch has it.
            await self.follow(
                spec, run, waker, await self.retrying("create the Job", lambda: self.ensure_job(spec, run))
            )
        except RunError as error:
            await self.retrying("record the failure", partial(self.record_failure, error, None))
        finally:
            self.ctx.drop_waker(self.key, waker)

    def parse(self) -> TrainingRunSpec:
        try:
            spec = parse_spec(self.body.get("spec"))
            check_gate(spec.model.promote if spec.model else None)
        except SpecError as exc:
            raise RunError("InvalidSpec", str(exc)) from None
        return spec

    # --- steps, each safe to run again -------------------------------------------------------------

    async def ensure_run(self, spec: TrainingRunSpec) -> RunContext:
        """The MLflow run of this object: the one recorded or tagged with its uid, else a new one."""
        experiment_name = spec.experiment_name(self.namespace)
        with DURATION.labels(KIND, "mlflow_run").time():
            try:
                return await self.ensure_run_in(spec, experiment_name)
            except MlflowError as error:
                # A remembered experiment may have been deleted since: look it up again, once, so that the
                # error (if any) says what is wrong with it.
                if isinstance(error, MlflowUnavailable) or not self.ctx.mlflow.forget_experiment(
                    experiment_name
                ):
                    raise
                return await self.ensure_run_in(spec, experiment_name)

    async def ensure_run_in(self, spec: TrainingRunSpec, experiment_name: str) -> RunContext:
        experiment_id = await self.ctx.mlflow.get_or_create_experiment(experiment_name)
        run_id = (self.status.get("mlflow") or {}).get("runId")
        if not run_id and self.ctx.may_have_a_run(self.uid, self.created):
            tagged = await self.ctx.mlflow.find_runs_by_tag(experiment_id, names.TAG_UID, self.uid)
            run_id = tagged[0].run_id if tagged else None
        if not run_id:
            self.ctx.creating_runs.add(self.uid)  # a request that fails may have landed: search next time
            run_id = await self.create_run(spec, experiment_id)
        await self.ctx.mlflow.log_params(run_id, spec.parameters)
        return RunContext(experiment_name, experiment_id, run_id)

    async def create_run(self, spec: TrainingRunSpec, experiment_id: str) -> str:
        tags = {
            **spec.tags,
            names.TAG_NAMESPACE: self.namespace,
            names.TAG_NAME: self.name,
            names.TAG_UID: self.uid,
            names.TAG_IMAGE: spec.image,
            names.TAG_MLFLOW_SOURCE_NAME: f"{names.TRAININGRUN_KIND}/{self.namespace}/{self.name}",
            names.TAG_MLFLOW_SOURCE_TYPE: "JOB",
        }
        run = await self.ctx.mlflow.create_run(experiment_id, self.name, tags, int(time.time() * 1000))
        return run.run_id

    async def ensure_job(self, spec: TrainingRunSpec, run: RunContext) -> Mapping[str, Any] | None:
        """Create the Job once, and return it; None if the status records it (a Job recorded and gone since
        is left for `follow` to report)."""
        if self.status.get("jobName"):
            return None
        settings = self.ctx.settings
        trainer = TrainerSettings(settings.trainer_tracking_uri, settings.tracking_secret, settings.git_image)
        manifest = build_job(self.name, self.namespace, self.uid, spec=spec, run=run, settings=trainer)
        with DURATION.labels(KIND, "create_job").time():
            try:
                job = await self.ctx.kube.create_job(manifest)
            except KubeError as exc:
                if exc.status == 422:
                    raise RunError("InvalidSpec", f"the Job was refused: {exc.message}") from None
                raise
        owners = [o.get("uid") for o in job["metadata"].get("ownerReferences") or []]
        if self.uid not in owners:
            raise RunError(
                "JobConflict", f"a Job named {job['metadata']['name']} exists and is not this run's"
            )
        name = job["metadata"]["name"]
        message = f"Job {name} runs MLflow run {run.run_id} (experiment {run.experiment_id})"
        kopf.info(self.body, reason="JobCreated", message=message)
        return job_summary(job)

    def run_fields(self, run: RunContext, job: Mapping[str, Any]) -> dict[str, Any]:
        """What the status records of the Job and the MLflow run, once the Job exists."""
        mlflow_status = {
            "experimentId": run.experiment_id,
            "experimentName": run.experiment_name,
            "runId": run.run_id,
            "runUrl": run_url(self.ctx.settings.run_link_base, run.experiment_id, run.run_id),
        }
        return {"jobName": job["metadata"]["name"], "mlflow": mlflow_status}

    async def follow(
        self, spec: TrainingRunSpec, run: RunContext, waker: asyncio.Event, created: Mapping[str, Any] | None
    ) -> None:
        """Watch the Job until the run ends, then record the result. A Job just created is observed as the
        API returned it (the watch may not have brought it yet), and the first status write records it."""
        fields = self.run_fields(run, created) if created is not None else {}
        while True:
            waker.clear()
            observation = await self.observe(spec, run, created)
            created = None
            if observation.phase.finished:
                await self.retrying("record the result", partial(self.record_result, spec, run, observation))
                return
            await self.record_progress(observation, fields)
            if fields:
                self.ctx.creating_runs.discard(self.uid)  # the status names the run now
                fields = {}
            await self.sync_suspend()
            await wait_woken(waker, RESYNC_SECONDS)

    async def observe(
        self, spec: TrainingRunSpec, run: RunContext, created: Mapping[str, Any] | None = None
    ) -> Observation:
        job = self.indexed_job() or created or await self.ctx.kube.read_job(self.namespace, self.job_name)
        if job is None:
            return await self.job_gone(run)
        return observe(job, list(self.pods.get(self.key, [])))

    def indexed_job(self) -> Mapping[str, Any] | None:
        found: list[Packed] = list(self.jobs.get(self.key, []))
        return found[0].unpack() if found else None

    @property
    def job_name(self) -> str:
        return recorded_job_name(self.status, self.name)

    async def job_gone(self, run: RunContext) -> Observation:
        """The Job went before its result was recorded (deleted by hand, or by its TTL meanwhile)."""
        mlflow_run = await self.ctx.mlflow.get_run(run.run_id)
        if mlflow_run.status == "FINISHED":
            return Observation(Phase.SUCCEEDED, "Succeeded", "the trainer finished (its Job is gone)")
        return Observation(
            Phase.FAILED, "JobDeleted", f"Job {self.job_name} was deleted before the run finished"
        )

    async def sync_suspend(self) -> None:
        job = self.indexed_job()
        wanted = bool((self.body.get("spec") or {}).get("suspend", False))
        if job is not None and bool((job.get("spec") or {}).get("suspend")) != wanted:
            await self.ctx.kube.suspend_job(self.namespace, self.job_name, wanted)

    async def record_progress(self, observation: Observation, extra: Mapping[str, Any]) -> None:
        fields: dict[str, Any] = {**extra, "phase": observation.phase.value}
        if observation.started_at:
            fields["startTime"] = observation.started_at
        if observation.phase is Phase.RUNNING and self.status.get("phase") != Phase.RUNNING:
            kopf.info(self.body, reason="Started", message=observation.message)
        await self.write(fields, in_progress(observation.reason, observation.message))

    async def record_result(self, spec: TrainingRunSpec, run: RunContext, observation: Observation) -> None:
        if observation.phase is Phase.FAILED:
            await self.record_failure(RunError(observation.reason, observation.message), observation)
            return
        try:
            await self.record_success(spec, run, observation)
        except RunError as failure:
            await self.record_failure(failure, observation)

    async def record_success(self, spec: TrainingRunSpec, run: RunContext, observation: Observation) -> None:
        mlflow_run = await self.ctx.mlflow.end_run(run.run_id, "FINISHED")
        fields: dict[str, Any] = {
            "phase": Phase.SUCCEEDED.value,
            "metrics": mlflow_run.metrics,
            "completionTime": observation.finished_at or now_iso(),
        }
        if observation.started_at:
            fields["startTime"] = observation.started_at
        if (shown := format_metric(key_metric(spec, mlflow_run.metrics), mlflow_run.metrics)) is not None:
            fields["keyMetric"] = shown
        message = f"MLflow run {run.run_id} finished"
        if spec.model is not None:
            fields["model"] = await self.register(spec, run, mlflow_run)
            message += f"; model {spec.model.name} version {fields['model']['version']}"
        kopf.info(self.body, reason="Succeeded", message=message)
        RECONCILES.labels(KIND, "succeeded").inc()
        # The last step: a finished status ends this runner.
        await self.write(fields, done("Succeeded", message))

    async def register(self, spec: TrainingRunSpec, run: RunContext, mlflow_run: Run) -> dict[str, Any]:
        assert spec.model is not None
        model = spec.model
        registry = self.ctx.registry
        tags = {names.TAG_NAMESPACE: self.namespace, names.TAG_NAME: self.name, names.TAG_IMAGE: spec.image}
        try:
            version = await registry.register(
                model.name, run.run_id, model.artifact_path, run.experiment_id, tags
            )
        except ModelNotLogged:
            raise RunError(
                "ModelNotLogged",
                f"the run logged no model named {model.artifact_path!r} (spec.model.artifactPath); "
                "log it with mlflow.<flavor>.log_model(..., name=...)",
            ) from None
        kopf.info(self.body, reason="Registered", message=f"model {model.name} version {version.version}")
        status: dict[str, Any] = {"name": model.name, "version": version.version}
        if model.promote is not None:
            decision = await self.promote(spec, version.version, mlflow_run)
            status["promotion"] = {
                "promoted": decision.promoted,
                "reason": decision.reason,
                "message": decision.message,
            }
            if decision.promoted:
                status["promotedTo"] = model.promote.target_name
            kopf.event(self.body, type="Normal", reason=decision.reason, message=decision.message)
        return status

    async def promote(self, spec: TrainingRunSpec, version: str, mlflow_run: Run) -> Decision:
        assert spec.model is not None and spec.model.promote is not None
        promote, registry, name = spec.model.promote, self.ctx.registry, spec.model.name
        holder = (
            await registry.version_by_alias(name, promote.alias)
            if promote.alias
            else await registry.latest_in_stage(name, str(promote.stage))
        )
        if holder is not None and holder.version == version:
            return Decision(True, "Promoted", f"version {version} already holds {promote.target}")
        holder_value: tuple[str, float | None] | None = None
        if holder is not None:
            metric = promote.better_than.metric if promote.better_than else None
            holder_run = await self.ctx.mlflow.get_run(holder.run_id) if holder.run_id and metric else None
            holder_value = (holder.version, holder_run.metrics.get(metric) if holder_run and metric else None)
        decision = decide(promote, version, mlflow_run.metrics, mlflow_run.params, holder_value)
        if decision.promoted and promote.alias:
            await registry.set_alias(name, promote.alias, version)
        elif decision.promoted:
            await registry.transition_stage(name, version, str(promote.stage))
        return decision

    async def record_failure(self, failure: RunError, observation: Observation | None) -> None:
        if observation is not None and observation.stop_job:
            await self.ctx.kube.delete_job(self.namespace, self.job_name)
        if run_id := (self.status.get("mlflow") or {}).get("runId"):
            await self.mark_run_failed(run_id, failure)
        fields: dict[str, Any] = {"phase": Phase.FAILED.value, "completionTime": now_iso()}
        if observation is not None and observation.finished_at:
            fields["completionTime"] = observation.finished_at
        kopf.warn(self.body, reason=failure.reason, message=failure.message)
        RECONCILES.labels(KIND, "failed").inc()
        # The last step: a finished status ends this runner.
        await self.write(fields, stalled(failure.reason, failure.message))

    async def mark_run_failed(self, run_id: str, failure: RunError) -> None:
        """End the MLflow run FAILED with the reason as a tag; a run MLflow refuses to touch is only logged
        (an unreachable MLflow is retried by the caller)."""
        try:
            await self.ctx.mlflow.set_tags(
                run_id, {names.TAG_FAILURE: f"{failure.reason}: {failure.message}"}
            )
            await self.ctx.mlflow.end_run(run_id, "FAILED")
        except MlflowUnavailable:
            raise
        except MlflowError as exc:
            self.logger.warning("cannot mark MLflow run %s FAILED: %s", run_id, exc)

    # --- plumbing ------------------------------------------------------------------------------------

    async def retrying(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """Run `step` until it succeeds: an unreachable MLflow or API server is waited out with back-off and
        said in the conditions; an error no retry can mend ends the run."""
        for attempt in range(1_000_000):
            try:
                return await step()
            except MlflowUnavailable as exc:
                reason, message = "MlflowUnavailable", f"cannot {what}: {exc}; retrying"
            except MlflowError as exc:
                raise RunError("MlflowError", f"cannot {what}: {exc}") from None
            except KubeError as exc:
                if exc.status in (400, 404, 422):
                    raise RunError("KubernetesError", f"cannot {what}: {exc.message}") from None
                reason, message = "KubernetesUnavailable", f"cannot {what}: {exc.message}; retrying"
            ERRORS.labels(KIND, reason).inc()
            self.logger.warning("%s (attempt %d)", message, attempt + 1)
            await self.write_quietly(reason, message)
            await asyncio.sleep(BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)])
        raise AssertionError("unreachable")

    async def write_quietly(self, reason: str, message: str) -> None:
        try:
            await self.write({}, in_progress(reason, message))
        except KubeError as exc:
            self.logger.warning("cannot write status: %s", exc.message)
