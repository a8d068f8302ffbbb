"""The monthly scoring flow: extract, validate, model, score, segment, publish, deliver."""

import contextlib
import logging
import os
import time
import uuid
from pathlib import Path

import numpy as np
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from gymchurn import campaigns, db, holdout, registry, runtime, steps
from gymchurn.schema import format_month, parse_month, previous_month
from gymchurn.settings import get_settings
from gymchurn.validation import DataValidationError


def _released(result):
    """Return ``result`` once the step's freed memory is given back to the system.

    A stop signal received during the step and dropped by Python is raised here.
    """
    runtime.release_free_memory()
    runtime.raise_if_stopped()
    return result


def _retry_if_transient(task, task_run, state) -> bool:
    return db.is_transient(state.result(raise_on_failure=False))


# Database reads and writes are retried when the connection was lost or
# refused, which a second try can cure. Missing data, validation and training
# failures are not: they would fail the same way again.
_DB_RETRIES = {
    "retries": 2,
    "retry_delay_seconds": [2, 10],
    "retry_condition_fn": _retry_if_transient,
}


@task(cache_policy=NO_CACHE, **_DB_RETRIES)
def extract(engine, month, settings):
    return _released(steps.extract(engine, month, settings))


@task(cache_policy=NO_CACHE)
def validate(data, settings):
    return _released(steps.check(data, settings))


# Retried too: the registry is read and the new model registered in the
# database. A retry after a lost connection trains again.
@task(cache_policy=NO_CACHE, **_DB_RETRIES)
def train_or_load_model(engine, settings, checked, retrain):
    return registry.fit_or_load(engine, settings, checked, retrain)


@task(cache_policy=NO_CACHE)
def score_chunk(pipeline, clients, reference):
    return steps.score_chunk(pipeline, clients, reference)


@task(cache_policy=NO_CACHE, **_DB_RETRIES)
def previous_segments(engine, month):
    return steps.previous_segments(engine, month)


@task(cache_policy=NO_CACHE)
def fit_segments(checked, settings, previous):
    return steps.fit_segments(checked, settings, previous)


@task(cache_policy=NO_CACHE)
def assign_segments(fitted, clients):
    return steps.assign_segments(fitted, clients)


def score(chosen, checked, settings, chunks):
    """Score the chunks as tasks of the flow's task runner, then rank the whole month."""
    started = time.perf_counter()
    reference = steps.reason_reference(checked)
    futures = [score_chunk.submit(chosen.pipeline, chunk, reference) for chunk in chunks]
    results = _chunk_results(futures)
    return _released(
        steps.combine_scores(chosen, settings, results, started, checked.scoring.valid)
    )


def segment(checked, fitting, chunks):
    """Assign the chunks to the segments being fitted as tasks, then profile the segments."""
    started = time.perf_counter()
    fitted = fitting.result()
    futures = [assign_segments.submit(fitted, chunk) for chunk in chunks]
    return _released(steps.describe_segments(fitted, checked, _chunk_results(futures), started))


@task(cache_policy=NO_CACHE)
def hold_out(scores, segments, month, settings):
    return holdout.mark_holdout(
        scores, segments.assignments, month, settings.holdout_share, settings.random_seed
    )


@task(cache_policy=NO_CACHE)
def explain(chosen, checked, settings):
    return steps.explain(chosen, checked, settings)


@task(cache_policy=NO_CACHE)
def advise(checked, scores, segments, drivers, settings):
    return _released(steps.advise(checked, scores, segments, drivers, settings))


@task(cache_policy=NO_CACHE, **_DB_RETRIES)
def measure_campaigns(engine, month):
    return campaigns.measure_before(engine, month)


@task(cache_policy=NO_CACHE, **_DB_RETRIES)
def store_campaign_results(engine, measurement):
    return campaigns.store_results(engine, measurement.results, measurement.months)


@task(cache_policy=NO_CACHE)
def render_report(settings, run_id, checked, chosen, scores, insights, data_docs, campaign):
    return steps.render_report(
        settings, run_id, checked, chosen, scores, insights, data_docs, campaign
    )


@task(cache_policy=NO_CACHE)
def document(settings, run_id, checked):
    return steps.document(settings, run_id, checked)


# Publishing is one transaction: a retry after a lost connection starts afresh.
@task(cache_policy=NO_CACHE, **_DB_RETRIES)
def publish(
    engine, run_id, checked, chosen, scores, segments, data_docs, insights, report, before_commit
):
    return _released(
        steps.publish(
            engine,
            run_id,
            checked,
            chosen,
            scores,
            segments,
            data_docs,
            insights,
            report,
            before_commit,
        )
    )


def _wait_for_report_place(rendering, report: Path) -> None:
    """Wait until the report is rendered, then raise when its place is taken by a folder."""
    rendering.result()
    steps.check_report_place(report)


def _discard_report(rendering, staged: Path) -> None:
    """Wait for the report being rendered, if any, then delete its staged file.

    Called while a run fails, so it only logs its own failure: the run's is
    the one to record.
    """
    if rendering is not None:
        rendering.wait()
    try:
        staged.unlink(missing_ok=True)
    except OSError as error:
        logging.getLogger("gymchurn.flow").warning(
            "could not delete the staged report %s: %s", staged, error
        )


@task(cache_policy=NO_CACHE, **_DB_RETRIES)
def deliver(engine, settings, run):
    return steps.deliver(engine, settings, run)


def _record_rejection(engine, run_id, month, error, settings) -> None:
    try:
        steps.record_validation_failure(engine, run_id, month, error, settings)
    except Exception as record_error:
        # The run is still marked failed_validation with its message.
        logging.getLogger("gymchurn.flow").error(
            "run %s: could not record its validation results: %s", run_id, record_error
        )


def _summary(run: steps.PublishedRun, at_risk_path, report, insights, held_out: int) -> str:
    auc = "n/a" if run.realised_roc_auc is None else f"{run.realised_roc_auc:.4f}"
    lines = [
        f"# Churn scores for {format_month(run.month)}",
        "",
        "| rows read | quarantined | scored | model | mode | realised ROC-AUC |",
        "|---|---|---|---|---|---|",
        f"| {run.rows_read} | {run.rows_quarantined} | {run.rows_scored} | "
        f"{run.model_version} | {run.mode} | {auc} |",
        "",
        "## Conclusions",
        "",
        *(f"- {text}" for text in insights.conclusions),
        "",
        "## Target groups and measures",
        "",
        "| group | segment | measure | clients | expected churners |",
        "|---|---|---|---|---|",
        *(
            f"| {row.rank} | {row.group} | {row.measure} | {row.clients} | "
            f"{row.expected_churners:.1f} |"
            for row in insights.measures.itertuples()
        ),
        "",
        f"Report: `{report}`",
        "",
        f"At-risk list: `{at_risk_path}`; {held_out} clients of the high and medium tiers "
        "held out as the control group and left off the list",
    ]
    return "\n".join(lines)


def _top_at_risk(insights, scores, rows: int = 20) -> list[dict]:
    """Return the month's most likely leavers off the holdout, for the flow run's table artifact."""
    names = insights.clusters.set_index("cluster_id")["name"]
    held_out = scores.loc[scores[holdout.HOLDOUT], "client_id"]
    clients = insights.scores
    listed = np.flatnonzero(~clients["client_id"].isin(held_out).to_numpy())
    probabilities = clients["churn_probability"].to_numpy()[listed]
    if len(listed) > rows:
        # Only the clients at or above the rows-th highest probability are sorted.
        cutoff = np.partition(probabilities, len(listed) - rows)[len(listed) - rows]
        listed = listed[probabilities >= cutoff]
    top = (
        clients.iloc[listed]
        .sort_values(["churn_probability", "client_id"], ascending=[False, True])
        .head(rows)
    )
    return [
        {
            "client_id": int(row.client_id),
            "churn_probability": round(float(row.churn_probability), 4),
            "risk_tier": row.risk_tier,
            "segment": names.get(row.cluster_id, ""),
            "reasons": row.reasons,
        }
        for row in top.itertuples()
    ]


# The chunks of the scoring and segment steps run in threads, at most one a
# core (two at least). Each chunk being scored keeps its own copies of the
# features: ten chunks of 100,000 simulated clients took 1.7 GB more memory
# with a thread each than before scoring, 0.5 GB with two threads, and 9 s
# either way on two cores.
_CHUNK_THREADS = max(2, os.cpu_count() or 1)

# Threads of the steps that run beside the others: the Data Docs, the
# segments' fit, the drivers and the report. They stay in this process
# whichever task runner scores the chunks: the Data Docs and the report are
# files of this machine.
_SIDE_THREADS = 2


@flow(
    name="monthly_scoring",
    log_prints=False,
    task_runner=ThreadPoolTaskRunner(max_workers=_CHUNK_THREADS),
)
def monthly_scoring(month: str | None = None, retrain: str = "auto") -> dict:
    """Score month ``month`` (YYYY-MM) and publish its tables and at-risk list.

    Without ``month`` the run scores the month before its scheduled start in
    the business timezone (``GYMCHURN_TIMEZONE``): a run due on 1 December
    scores November, even when it starts late.
    ``retrain`` is ``auto`` (train a challenger when the data calls for it),
    ``always`` or ``never`` (load the champion).
    """
    settings = get_settings()
    # A run called outright, not through a deployment, is due now.
    due = flow_run.scheduled_start_time
    run_month = parse_month(month) if month else previous_month(settings.timezone, due)
    run_id = uuid.UUID(flow_run.id) if flow_run.id else uuid.uuid4()
    engine = db.get_engine(settings)
    counts = {}
    rendering = None
    lock = None
    side_steps = contextlib.ExitStack()
    try:
        # Inside the try: a signal right after the run row is written must
        # still mark it failed.
        lock = steps.start_run(engine, run_id, run_month, retrain)
        data = extract(engine, run_month, settings)
        counts["rows_read"] = len(data.scoring)
        checked = validate(data, settings)
        counts["rows_quarantined"] = checked.scoring.n_quarantined
        # When any row was quarantined the valid rows are a copy, so the rows
        # as read are released here rather than kept to the end of the run.
        del data
        # The Data Docs, the segments' fit, the drivers and the report work in
        # threads of this process beside the steps, filling the time a step
        # leaves a core or the database idle. Their results are taken in the
        # flow, so that a failure is raised with its own message.
        beside = side_steps.enter_context(ThreadPoolTaskRunner(max_workers=_SIDE_THREADS))
        documenting = beside.submit(
            document, {"settings": settings, "run_id": run_id, "checked": checked}
        )
        fitting = beside.submit(
            fit_segments,
            {
                "checked": checked,
                "settings": settings,
                "previous": previous_segments(engine, run_month),
            },
        )
        chosen = train_or_load_model(engine, settings, checked, retrain)
        explaining = beside.submit(
            explain, {"chosen": chosen, "checked": checked, "settings": settings}
        )
        chunks = steps.client_chunks(checked, settings.chunk_rows)
        scores = score(chosen, checked, settings, chunks)
        segments = segment(checked, fitting, chunks)
        scores = hold_out(scores, segments, run_month, settings)
        insights = advise(checked, scores, segments, explaining.result(), settings)
        campaign = measure_campaigns(engine, run_month)
        data_docs = documenting.result()
        # The publish commits only once the report is staged and its place is
        # free: a report that fails publishes nothing.
        rendering = beside.submit(
            render_report,
            {
                "settings": settings,
                "run_id": run_id,
                "checked": checked,
                "chosen": chosen,
                "scores": scores,
                "insights": insights,
                "data_docs": data_docs,
                "campaign": campaign,
            },
        )
        report = steps.report_path(settings, run_month)
        run = publish(
            engine,
            run_id,
            checked,
            chosen,
            scores,
            segments,
            data_docs,
            insights,
            report,
            lambda: _wait_for_report_place(rendering, report),
        )
        steps.place_report(rendering.result(), report)
        at_risk_path = deliver(engine, settings, run)
        store_campaign_results(engine, campaign)
    except BaseException as error:
        _discard_report(rendering, steps.staged_report_path(settings, run_month, run_id))
        if isinstance(error, DataValidationError):
            _record_rejection(engine, run_id, run_month, error, settings)
        # Ctrl-C and SIGTERM too: the run must not stay "running" forever.
        if not steps.fail_run(engine, run_id, error, counts):
            runtime.published_before_stop.append(format_month(run_month))
        raise
    finally:
        side_steps.close()
        # Released only after the outcome is recorded: the next holder marks
        # any run still "running" as abandoned.
        if lock is not None:
            lock.release()
    n_held_out = int(scores[holdout.HOLDOUT].sum())
    create_markdown_artifact(
        _summary(run, at_risk_path, report, insights, n_held_out), key="churn-run-summary"
    )
    create_table_artifact(
        _top_at_risk(insights, scores),
        key="churn-at-risk-top",
        description=f"The 20 clients most likely to leave after {format_month(run_month)}",
    )
    return {
        **run.__dict__,
        "model_decision": chosen.decision,
        "decision_reason": chosen.reason,
        "run_id": str(run_id),
        "month": format_month(run_month),
        "at_risk_path": str(at_risk_path),
        "report_path": str(report),
        "held_out": n_held_out,
    }


TASK_RUNNERS = ("default", "dask")

# Seconds to reach a Dask scheduler given by address, and seconds it may go
# without a worker: before the run until its first worker joins, and during
# the run while chunks wait. Without these checks a wrong address failed only
# after the month was read and validated, and a scheduler without workers
# hung the run.
DASK_CONNECT_SECONDS = 10
DASK_WORKER_SECONDS = 30
# Seconds between two counts of the scheduler's workers while chunks wait.
DASK_POLL_SECONDS = 1


class DaskSchedulerError(RuntimeError):
    """The Dask scheduler given by address cannot run the chunks."""


def check_dask_scheduler(address: str) -> int:
    """Return how many workers the Dask scheduler at ``address`` has, once it has one.

    Raises:
        DaskSchedulerError: no scheduler responds within :data:`DASK_CONNECT_SECONDS`,
            or it has no worker after :data:`DASK_WORKER_SECONDS`.
    """
    from distributed import Client

    try:
        client = Client(address, timeout=DASK_CONNECT_SECONDS, set_as_default=False)
    except OSError as error:
        raise DaskSchedulerError(
            f"no Dask scheduler responded at {address} ({error}); start it, or check "
            "the address and that this machine can reach its port"
        ) from None
    with client:
        try:
            client.wait_for_workers(1, timeout=DASK_WORKER_SECONDS)
        except TimeoutError:
            raise DaskSchedulerError(
                f"the Dask scheduler at {address} has no worker after "
                f"{DASK_WORKER_SECONDS} s; start one with: dask worker {address}"
            ) from None
        workers = len(client.scheduler_info()["workers"])
    logging.getLogger("gymchurn.flow").info("Dask scheduler at %s: %d worker(s)", address, workers)
    return workers


def _chunk_results(futures) -> list:
    """Wait for the chunks' task runs and return their results in order.

    Raises:
        DaskSchedulerError: the Dask scheduler given by address has had no
            worker for :data:`DASK_WORKER_SECONDS` while chunks were waiting.
    """
    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    # A local cluster lives in this process and cannot lose all its workers.
    if runner is not None and not isinstance(runner, ThreadPoolTaskRunner):
        from prefect_dask import DaskTaskRunner

        if isinstance(runner, DaskTaskRunner) and runner.address:
            _wait_while_workers(futures, runner.client, runner.address)
    return [future.result() for future in futures]


def _wait_while_workers(futures, client, address: str) -> None:
    """Wait until every future is done, counting the scheduler's workers between waits.

    Dask runs the chunks of a worker that left on the others. With no worker
    left, the scheduler keeps the chunks until one joins, which may be never,
    so the wait raises :class:`DaskSchedulerError` after :data:`DASK_WORKER_SECONDS`.
    """
    logger = logging.getLogger("gymchurn.flow")
    pending = list(futures)
    no_worker_since = None
    while pending:
        pending[0].wait(timeout=DASK_POLL_SECONDS)
        pending = [future for future in pending if not future.wrapped_future.done()]
        if not pending:
            return
        if client.nthreads():
            no_worker_since = None
            continue
        if no_worker_since is None:
            no_worker_since = time.monotonic()
            logger.warning(
                "the Dask scheduler at %s has no worker; the run fails unless one joins "
                "within %s s (%d chunk(s) waiting)",
                address,
                DASK_WORKER_SECONDS,
                len(pending),
            )
        elif time.monotonic() - no_worker_since >= DASK_WORKER_SECONDS:
            raise DaskSchedulerError(
                f"no worker has been connected to the Dask scheduler at {address} for "
                f"{DASK_WORKER_SECONDS} s while {len(pending)} chunk(s) waited; start one "
                f"with: dask worker {address}, then run the month again"
            )


class _NoDashboardLink(logging.Filter):
    """Drop prefect-dask's link to the dashboard of the local cluster, which starts none."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("The Dask dashboard is available")


def with_task_runner(task_runner: str = "default", dask_address: str | None = None):
    """Return the monthly flow with the task runner that scores and segments its chunks.

    ``default`` runs the chunks in threads of this process. ``dask`` sends them
    to the Dask scheduler at ``dask_address`` (``tcp://host:8786``). Without an
    address it starts a local cluster of threads, because each worker process of
    a cluster of processes would otherwise start a temporary Prefect server of
    its own. Workers of a remote cluster need gymchurn installed and
    ``PREFECT_API_URL`` set to a Prefect server this process uses too.

    NOTE: the tests run the chunks on a two-worker cluster of threads reached by
    its tcp address. Workers on other machines have not been tried.
    """
    if task_runner not in TASK_RUNNERS:
        raise ValueError(
            f"invalid task runner {task_runner!r}: expected one of {', '.join(TASK_RUNNERS)}"
        )
    if task_runner == "default":
        if dask_address:
            raise ValueError("a Dask address needs the dask task runner: add --task-runner dask")
        return monthly_scoring
    from prefect_dask import DaskTaskRunner

    # distributed logs every start, connection and stop of its scheduler and
    # workers at INFO: 38 lines a run on a local cluster.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if dask_address:
        check_dask_scheduler(dask_address)
        runner = DaskTaskRunner(address=dask_address)
    else:
        runner_logger = logging.getLogger("prefect.task_runner.dask")
        if not any(isinstance(f, _NoDashboardLink) for f in runner_logger.filters):
            runner_logger.addFilter(_NoDashboardLink())
        # TCP on the loopback, because distributed's in-process transport fails
        # to start with a host. Its HTTP server gets a free port, not 8787,
        # which another cluster may hold.
        runner = DaskTaskRunner(
            cluster_kwargs={
                "processes": False,
                "protocol": "tcp",
                "host": "127.0.0.1",
                "dashboard_address": None,
                "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
            }
        )
    return monthly_scoring.with_options(task_runner=runner)
