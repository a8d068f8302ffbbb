"""The steps of one monthly run, as plain functions.

The Prefect flow in ``flows/monthly_scoring.py`` calls these in order. Each
step takes and returns plain values, so it can be run and tested without
Prefect. The choice of the month's model is in :mod:`gymchurn.registry`.
"""

import datetime as dt
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals
from sklearn.metrics import roc_auc_score
from sqlalchemy.engine import Engine

from gymchurn import (
    at_risk,
    batch_rules,
    binary_copy,
    db,
    history,
    lifecycle,
    reasons,
    rescoring,
    runtime,
)
from gymchurn import segments as segments_module
from gymchurn.drivers import Drivers, can_hold_out, find_drivers
from gymchurn.holdout import HOLDOUT
from gymchurn.insights import MonthInsights, build_insights
from gymchurn.joins import by_client, column_for, concat_by_column, lined_up
from gymchurn.measures import load_measures
from gymchurn.registry import ChosenModel, promote
from gymchurn.schema import CHURNED, CLIENT_ID, FEATURES, INTEGER_FEATURES, MONTH, format_month
from gymchurn.segments import CLUSTER_ID, Segmentation
from gymchurn.settings import Settings, get_settings
from gymchurn.validation import (
    FAILED_VALUES,
    RESULT_COLUMNS,
    ROW_NUMBER,
    DataValidationError,
    ValidationReport,
    build_data_docs,
    describe_examples,
    validate_questionnaires,
    validation_result_rows,
)

logger = logging.getLogger(__name__)

RISK_TIERS = ("high", "medium", "low")


class ReportPlaceError(IsADirectoryError):
    """The month's report cannot be moved to its place, which is a folder."""


class NoDataError(RuntimeError):
    """The month has nothing the job can score or train on."""


def start_run(
    engine: Engine, run_id: uuid.UUID, month: dt.date, retrain_policy: str | None = None
) -> db.MonthLock:
    """Bring the schema up to date, take the month's lock and record the run as running.

    The run's row gets its ``retrain_policy`` at once, so that a run that
    fails before it publishes still shows the policy it ran with.

    Only the holder of the month's lock records a run as running, so a
    ``running`` row of the month that the new holder finds belongs to a
    process that died (SIGKILL, a lost machine): it is marked failed.

    Returns:
        The month's lock; the caller releases it once the run's outcome is
        recorded.

    Raises:
        db.MonthBusyError: another run of the month holds the lock. The
            rejected run is recorded as running, for the caller to mark failed.
    """
    db.ensure_schema(engine)
    run = {"run_id": run_id, "month": month, "retrain_policy": retrain_policy}
    lock = db.MonthLock(engine, month)
    if not lock.try_acquire():
        with engine.begin() as conn:
            holder = db.execute(conn, "running_run_of_month", {"month": month}).first()
            db.execute(conn, "insert_run", run)
        label = format_month(month)
        other = "another run" if holder is None else f"run {holder.run_id}"
        raise db.MonthBusyError(
            f"{other} of {label} is in progress and has the month's lock; wait for it to "
            f"end, then run --month {label} again if its outcome is not the one wanted"
        )
    try:
        with engine.begin() as conn:
            abandoned = db.execute(
                conn,
                "abandon_month_runs",
                {
                    "run_id": run_id,
                    "month": month,
                    "message": f"abandoned: the process stopped without recording an "
                    f"outcome; found by run {run_id}",
                },
            ).all()
            db.execute(conn, "insert_run", run)
    except BaseException:
        lock.release()
        raise
    for row in abandoned:
        logger.warning(
            "run %s for %s, started %s, was still marked running: marked failed as abandoned",
            row.run_id,
            format_month(month),
            row.started_at,
        )
    logger.info("run %s for %s started on %s", run_id, format_month(month), db.describe(engine))
    return lock


def fail_run(
    engine: Engine, run_id: uuid.UUID, error: BaseException, counts: dict | None = None
) -> bool:
    """Record why a run failed; the month's published rows stay as they were.

    Only a run still ``running`` is marked failed: a run stopped after its
    publish transaction committed stays ``succeeded``, and what stopped it is
    appended to its message, because its report or at-risk list may be
    missing. A failure to record
    (the database is gone) is logged, not raised, so the caller goes on to
    raise the error that stopped the run.

    Returns:
        False when the run had already been published, True otherwise.
    """
    status = "failed_validation" if isinstance(error, DataValidationError) else "failed"
    counts = dict(counts or {})
    if isinstance(error, DataValidationError) and getattr(error, "report", None) is not None:
        counts["rows_quarantined"] = error.report.n_quarantined
    params = {
        "run_id": run_id,
        "status": status,
        "message": _failure_message(error),
        "rows_read": counts.get("rows_read"),
        "rows_quarantined": counts.get("rows_quarantined"),
    }
    # Wait for a database that is gone for a while; every attempt uses new
    # connections, because an interrupt can leave a pooled one half used.
    delays = _record_retry_seconds()
    for attempt, delay in enumerate([*delays, None], start=1):
        try:
            with engine.begin() as conn:
                recorded = db.execute(conn, "fail_run", params).first() is not None
                if not recorded:
                    status = db.execute(conn, "run_status", {"run_id": run_id}).scalar()
                if not recorded and status == "succeeded":
                    db.execute(
                        conn,
                        "note_failure_after_publish",
                        {"run_id": run_id, "note": _after_publish_note(error)},
                    )
            if recorded or status != "succeeded":
                # No row (the run stopped before it was recorded), or one
                # already failed: the month's published rows are as before.
                return True
            logger.warning("run %s stopped after the month was published: %s", run_id, error)
            return False
        except Exception as record_error:
            engine.dispose()
            if delay is None:
                logger.error(
                    "run %s: could not record its failure in churn.runs after %d attempts: %s",
                    run_id,
                    attempt,
                    db.connection_error_reason(record_error),
                )
                break
            logger.warning(
                "run %s: could not record its failure (attempt %d): %s; retrying in %g s",
                run_id,
                attempt,
                db.connection_error_reason(record_error),
                delay,
            )
            time.sleep(delay)
    return True


def _record_retry_seconds() -> list[float]:
    from gymchurn.settings import get_settings

    try:
        return [0.0, *get_settings().db_retry_seconds]
    except Exception:  # an invalid setting must not hide the run's own error
        return [0.0]


def record_validation_failure(
    engine: Engine, run_id: uuid.UUID, month: dt.date, error: DataValidationError, settings
) -> Path | None:
    """Write a rejected batch's rules and findings to ``churn.validation_results``, with Data Docs.

    Returns:
        The Data Docs index, or None when they could not be built.
    """
    rows = validation_result_rows(
        month, run_id=run_id, findings=getattr(error, "findings", ()), error=error
    )
    docs = None
    try:
        docs = build_data_docs([error], _docs_folder(settings, month, run_id))
    except Exception as docs_error:  # the failure itself must still be recorded
        logger.warning("run %s: Data Docs not built: %s", run_id, docs_error)
    with engine.begin() as conn:
        _write_results(conn, rows)
        if docs is not None:
            db.execute(conn, "set_run_data_docs_path", {"path": str(docs), "run_id": run_id})
    return docs


def _docs_folder(settings, month: dt.date, run_id: uuid.UUID) -> Path:
    return (settings.output_dir / "data_docs" / format_month(month) / str(run_id)).resolve()


def _write_results(conn, rows: list[dict]) -> int:
    if not rows:
        return 0
    values = ([row[name] for name in RESULT_COLUMNS] for row in rows)
    return db.copy_rows(conn, "churn.validation_results", RESULT_COLUMNS, values)


def _failure_message(error: BaseException) -> str:
    if runtime.received_signals:
        return f"interrupted ({runtime.received_signals[0]}) before the month was published"
    if not isinstance(error, Exception):
        # Ctrl-C, SIGTERM, or Prefect's own termination signal.
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return f"interrupted ({reason}) before the month was published"
    return f"{type(error).__name__}: {error}"


def _after_publish_note(error: BaseException) -> str:
    """Return a sentence naming what stopped a run after its month was published."""
    if runtime.received_signals:
        cause = f"interrupted ({runtime.received_signals[0]})"
    elif not isinstance(error, Exception):
        cause = f"interrupted ({type(error).__name__})"
    else:
        cause = f"failed ({type(error).__name__}: {error})"
    return (
        f"Then {cause} after the month was published: the report or the at-risk list "
        "may be missing; run the month again."
    )


def _tidy_extract(frame: pd.DataFrame) -> pd.DataFrame:
    """Convert the text columns of a frame read with COPY, in place.

    COPY ... CSV writes dates as text and booleans as ``t``/``f``. Each distinct
    month becomes one ``datetime.date`` that all its rows share, so a month of a
    million rows keeps one date object, not a million.
    """
    codes, texts = pd.factorize(frame[MONTH])
    months = np.array([dt.date.fromisoformat(str(text)[:10]) for text in texts], dtype=object)
    frame[MONTH] = months[codes]
    churned = frame[CHURNED]
    frame[CHURNED] = np.where(churned.isna(), np.nan, (churned == "t").to_numpy(dtype="float64"))
    return frame


def _number_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Number the rows of ``frame`` from 1 in a ``row_number`` column, in place."""
    frame[ROW_NUMBER] = np.arange(1, len(frame) + 1, dtype="int64")
    return frame


def _read_month(conn, month: dt.date, chunk_rows: int) -> pd.DataFrame:
    """Read the month's questionnaires with COPY, ``chunk_rows`` rows at a time.

    Each chunk is converted and its integer answers shrunk before the next is
    read, so the CSV text and the parser's int64 and object columns are never
    held for the whole month. Concatenating keeps, for each column, a dtype
    that fits every chunk's values: the one shrinking the whole column gives.
    """
    frames = []
    for frame in db.read_frames(
        conn, "questionnaires_for_month", {"month": month}, chunk_rows=chunk_rows
    ):
        _compact_integers(_tidy_extract(frame))
        frames.append(frame)
    if len(frames) > 1:
        logger.info(
            "extract: %s read in %d chunks of at most %d rows (read_chunk_rows)",
            format_month(month),
            len(frames),
            chunk_rows,
        )
    scoring = frames[0] if len(frames) == 1 else concat_by_column(frames)
    return _number_rows(scoring)


def _compact_integers(frame: pd.DataFrame) -> None:
    """Store each integer feature without nulls in the smallest integer dtype that fits.

    A month's frame lives for the whole run: the flags, contract lengths, ages and
    lifetimes then take 1 or 2 bytes a row instead of 8, about 69 MB less at 1,000,000
    clients. A feature with a null stays float64, as read. The model and the
    reasons convert the features to float64 before computing with them.
    """
    for column in INTEGER_FEATURES:
        if pd.api.types.is_integer_dtype(frame[column].dtype):
            frame[column] = pd.to_numeric(frame[column], downcast="integer")


@dataclass(frozen=True)
class MonthData:
    """Questionnaires of a run: the month to score, and what it needs of earlier months."""

    month: dt.date
    scoring: pd.DataFrame
    """The month's questionnaires, every row, with ``churned`` where outcomes are known."""
    history: pd.DataFrame
    """Candidates for training: the labelled questionnaires of the earlier months whose
    labels may be trained on, those with the lowest sample keys (see
    :mod:`gymchurn.history`), every one when there are fewer than
    :func:`gymchurn.history.candidate_rows`. Has a ``sample_key`` column."""
    earlier: tuple[batch_rules.MonthProfile, ...] = ()
    """One profile of each earlier month, labelled or not, for the batch rules."""
    faults: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Cells the loader could not read, of this month and of the rows of ``history``."""


def _tidy_faults(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame(columns=[CLIENT_ID, MONTH, "column", "line", "raw_value", "fault"])
    tidy = frame.copy()
    tidy["raw_value"] = tidy["raw_value"].fillna("").astype(str)
    return tidy


def extract(engine: Engine, month: dt.date, settings: Settings | None = None) -> MonthData:
    """Read the month's questionnaires, a profile of each earlier month and training candidates.

    The month's rows come with COPY, ``settings.read_chunk_rows`` at a time,
    each chunk shrunk as it arrives (see :func:`_read_month`). Earlier months
    come as one batch-rule profile each, computed by SQL aggregates, and as a
    bounded sample of their labelled rows drawn in SQL (:mod:`gymchurn.history`),
    so the memory a run needs does not grow with the number of earlier months.
    Load faults are read for the month and for the sampled rows. The earlier
    months and the faults are read on a second connection, at the same time.
    """
    settings = settings or get_settings()
    started = time.perf_counter()
    # Checked first: the earlier months alone took 16.7 s to read at
    # 1,000,000 simulated clients a month, only to fail afterwards.
    with engine.connect() as conn:
        if not db.execute(conn, "month_has_questionnaires", {"month": month}).scalar_one():
            raise _no_questionnaires(month, engine)
    # The earlier months are read on a second connection while this one
    # streams the month: the server computes their profiles and sample while
    # this process parses. At 1,000,000 simulated clients the reads took
    # 10.5 s one after the other and 9.2 s side by side.
    with ThreadPoolExecutor(max_workers=1) as pool:
        reading = pool.submit(_read_earlier, engine, month, settings)
        with engine.connect() as conn:
            scoring = _read_month(conn, month, settings.read_chunk_rows)
        earlier, candidates, faults = reading.result()
    n_month_faults = int((faults[MONTH] == month).sum())
    logger.info(
        "extract: %d questionnaires for %s; %d earlier month(s) of %d rows, %d of them "
        "labelled, profiled in SQL; %d labelled rows read as training candidates; "
        "%d unreadable cell(s) from loading in %s and %d in the candidates (%.1f s)",
        len(scoring),
        format_month(month),
        len(earlier),
        sum(profile.n_rows for profile in earlier),
        sum(profile.n_labelled for profile in earlier),
        len(candidates),
        n_month_faults,
        format_month(month),
        len(faults) - n_month_faults,
        time.perf_counter() - started,
    )
    if scoring.empty:
        # Deleted since the check above.
        raise _no_questionnaires(month, engine)
    return MonthData(month, scoring, candidates, earlier, faults)


def _no_questionnaires(month: dt.date, engine: Engine) -> NoDataError:
    # The database is named: without DATABASE_URL each folder has its own
    # embedded database, and a load made from another folder is not in this one.
    return NoDataError(
        f"no questionnaires for {format_month(month)} in crm.questionnaires of "
        f"{db.describe(engine)}; load them first with: gymchurn load-csv FILE "
        f"--month {format_month(month)}"
    )


def _read_earlier(engine: Engine, month: dt.date, settings: Settings):
    """Read the profiles of the months before ``month``, the training candidates and the faults.

    Returns:
        The profiles, the candidates and the load faults of ``month`` and of the candidates.
    """
    with engine.connect() as conn:
        earlier = history.read_month_profiles(conn, month)
        months = _training_months(earlier, settings)
        if months:
            n_candidates = history.candidate_rows(
                settings.max_training_rows, settings.max_invalid_share
            )
            candidates = history.read_training_candidates(
                conn, months, n_candidates, settings.random_seed
            )
            candidates = _number_rows(_tidy_extract(candidates))
        else:
            candidates = _empty_candidates()
        # Not through COPY and read_csv, which would read a raw 'NaN' as a float.
        result = db.execute(
            conn,
            "faults_of_month_and_rows",
            {
                "month": month,
                "client_ids": candidates[CLIENT_ID].tolist(),
                "months": candidates[MONTH].tolist(),
            },
        )
        faults = _tidy_faults(pd.DataFrame(result.fetchall(), columns=list(result.keys())))
    return earlier, candidates, faults


def _empty_candidates() -> pd.DataFrame:
    columns = [CLIENT_ID, MONTH, *FEATURES, CHURNED, history.SAMPLE_KEY, ROW_NUMBER]
    return pd.DataFrame({column: pd.Series(dtype="float64") for column in columns})


@dataclass(frozen=True)
class CheckedData:
    """The run's rows after validation."""

    month: dt.date
    mode: str
    """``forward``: trained on earlier months; ``backtest``: out-of-fold on this month."""
    scoring: ValidationReport
    training: pd.DataFrame
    """Valid labelled rows the model is trained on."""
    training_report: ValidationReport | None
    """Validation of the training candidates drawn from earlier months; None in a backtest."""
    findings: tuple = ()
    """Batch-rule findings on the month and on the latest labelled month's labels."""
    reference_month: dt.date | None = None
    """The training month that churn rates and drivers describe (see :func:`reference_rows`);
    None in a backtest, whose own labelled rows are described."""
    labels_blocked: bool = False
    """The month's own outcomes broke a label rule and are not confirmed: the run
    neither trains on them nor measures its scores against them."""


def _faults_of(data: MonthData, months) -> pd.DataFrame | None:
    if data.faults.empty:
        return None
    return data.faults[data.faults[MONTH].isin(set(months))]


def _label_findings(earlier, settings: Settings) -> tuple[list, set]:
    """Judge the labels of the latest labelled month against the months before it.

    Args:
        earlier: The profiles of the months before the scored one.

    Returns:
        The findings, and the months whose labels are kept out of training.
    """
    labelled = [profile for profile in earlier if profile.n_labelled]
    if not labelled:
        return [], set()
    latest = max(labelled, key=lambda profile: profile.month)
    before = [profile for profile in earlier if profile.month < latest.month]
    findings = batch_rules.check_label_share(
        latest,
        before,
        labels_confirmed=latest.month in settings.confirmed_label_months,
        limits=settings.batch_limits,
    )
    blocked = {latest.month} if batch_rules.blocks_training(findings) else set()
    return findings, blocked


def _training_months(earlier, settings: Settings) -> set:
    """Return the labelled months before the scored one whose labels may be trained on."""
    _, blocked = _label_findings(earlier, settings)
    return {profile.month for profile in earlier if profile.n_labelled} - blocked


def validate_month(data: MonthData, settings: Settings) -> tuple[list, set, ValidationReport]:
    """Run the batch rules and the row suite on the month to score.

    Returns:
        The batch findings (of the month, and of the latest labelled month's
        labels), the months whose labels are kept out of training (the month
        itself among them when its own labels are), and the month's
        validation report.

    Raises:
        DataValidationError: a column or batch rule failed. Its ``findings``
            attribute lists the batch findings.
    """
    label = format_month(data.month)
    started = time.perf_counter()
    findings = list(
        batch_rules.check_batch(
            data.scoring,
            data.earlier,
            labels_confirmed=data.month in settings.confirmed_label_months,
            limits=settings.batch_limits,
        )
    )
    # So far the findings are on the month itself, its own labels among them.
    own_labels_blocked = batch_rules.blocks_training(findings)
    label_findings, blocked = _label_findings(data.earlier, settings)
    findings += label_findings
    if own_labels_blocked:
        blocked.add(data.month)
    _log_findings(label, findings)
    try:
        scoring = validate_questionnaires(
            data.scoring,
            dataset=f"questionnaires of {label}",
            max_invalid_share=settings.max_invalid_share,
            faults=_faults_of(data, [data.month]),
            chunk_rows=settings.read_chunk_rows,
        )
    except DataValidationError as error:
        error.findings = tuple(findings)
        raise
    _log_report(scoring, started)
    if batch_rules.stops_run(findings):
        # The row suite ran first, so that the rejection's Data Docs and
        # quarantine count describe the month's rows too.
        try:
            batch_rules.raise_for_errors(findings, dataset=f"questionnaires of {label}")
        except DataValidationError as error:
            error.findings = tuple(findings)
            error.report = scoring
            error.gx_results = scoring.gx_results
            raise
    return findings, blocked, scoring


def check(data: MonthData, settings: Settings) -> CheckedData:
    """Validate the month and the training candidates, run the batch rules, decide how to score.

    Every row of the month is validated. Of the earlier months, only the training
    candidates that :func:`extract` drew are, at most
    :func:`gymchurn.history.candidate_rows` of them: enough that
    ``max_training_rows`` stay valid unless validation rejects them.

    Raises:
        DataValidationError: a column or batch rule failed; nothing may be written.
            Its ``findings`` attribute lists the batch findings.
        NoDataError: there is nothing labelled to train on.
    """
    label = format_month(data.month)
    findings, blocked, scoring = validate_month(data, settings)
    labels_blocked = data.month in blocked
    months = _training_months(data.earlier, settings)
    if months:
        started = time.perf_counter()
        n_candidates = history.candidate_rows(
            settings.max_training_rows, settings.max_invalid_share
        )
        candidates = history.select_candidates(data.history, months, n_candidates)
        candidates = candidates.assign(
            **{ROW_NUMBER: np.arange(1, len(candidates) + 1, dtype="int64")}
        )
        history_report = validate_questionnaires(
            candidates,
            dataset=f"labelled questionnaires before {label}",
            max_invalid_share=settings.max_invalid_share,
            faults=_faults_of(data, months),
        )
        _log_report(history_report, started)
        training = training_sample(history_report.valid, settings)
        _drop_validation_columns(scoring.valid)
        return CheckedData(
            data.month,
            "forward",
            scoring,
            training,
            history_report,
            tuple(findings),
            _reference_month(training),
            labels_blocked,
        )

    training = scoring.valid[scoring.valid[CHURNED].notna()]
    if labels_blocked:
        training = training.iloc[:0]
    if training.empty:
        raise NoDataError(
            f"no labelled questionnaires before {label} and no outcomes for {label} that "
            "can be trained on: load a file with a Churn column for an earlier month "
            "(or this one) first"
        )
    logger.info(
        "no labelled month before %s: backtest on its own %d outcomes", label, len(training)
    )
    _drop_validation_columns(scoring.valid)
    return CheckedData(
        data.month,
        "backtest",
        scoring,
        training,
        None,
        tuple(findings),
        labels_blocked=labels_blocked,
    )


def _drop_validation_columns(valid: pd.DataFrame) -> None:
    """Delete the month's valid rows' ``month`` and ``row_number``, which only validation reads.

    Each takes 8 bytes a client for the rest of the run: 160 MB at ten million clients.
    """
    for column in (MONTH, ROW_NUMBER):
        del valid[column]


def training_sample(candidates: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Return the valid candidates a model trains on, sorted by month and client.

    Past ``settings.max_training_rows`` rows, only that many are kept: those with
    the lowest sample keys, so the same stored rows give the same sample whatever
    their order. The ``sample_key`` column is dropped.
    """
    n_rows = settings.max_training_rows
    if len(candidates) > n_rows:
        logger.info(
            "check: training on the %d of %d valid candidate rows with the lowest sample "
            "keys (max_training_rows)",
            n_rows,
            len(candidates),
        )
        candidates = candidates.sort_values(
            [history.SAMPLE_KEY, MONTH, CLIENT_ID], kind="stable"
        ).head(n_rows)
    ordered = candidates.sort_values([MONTH, CLIENT_ID], kind="stable")
    return ordered.drop(columns=[history.SAMPLE_KEY], errors="ignore")


def _log_findings(label: str, findings) -> None:
    for finding in findings:
        level = logging.ERROR if finding.severity == batch_rules.ERROR else logging.WARNING
        logger.log(level, "batch rule %s on %s: %s", finding.rule, label, finding.message)


def _log_report(report: ValidationReport, started: float) -> None:
    logger.info(
        "validate %s: %d rows, %d valid, %d quarantined (%.1f s)",
        report.dataset,
        report.n_rows,
        report.n_valid,
        report.n_quarantined,
        time.perf_counter() - started,
    )
    for rule in report.rules:
        if rule.n_failed:
            examples = ", ".join(f"client {client}: {value}" for client, value in rule.examples)
            logger.warning(
                "validate %s: rule %s (%s) failed on %d row(s), for example %s",
                report.dataset,
                rule.rule,
                rule.description,
                rule.n_failed,
                examples,
            )


def risk_tiers(probabilities: np.ndarray, settings: Settings) -> pd.Categorical:
    """Return ``high``, ``medium`` or ``low`` for each probability.

    With ``risk_capacity`` set, the ``risk_capacity`` highest probabilities
    at or above the medium threshold are ``high`` (ties broken by row order),
    and the others from the medium threshold are ``medium``. A client below
    the medium threshold stays ``low`` even when the capacity is not filled,
    which is logged as a warning. The tiers come as a categorical of
    :data:`RISK_TIERS`: one byte a client where text would take 24.
    """
    codes = np.full(len(probabilities), RISK_TIERS.index("low"), dtype="int8")
    at_risk = probabilities >= settings.risk_medium_threshold
    codes[at_risk] = RISK_TIERS.index("medium")
    if settings.risk_capacity is None:
        codes[probabilities >= settings.risk_high_threshold] = RISK_TIERS.index("high")
    else:
        n_at_risk = int(at_risk.sum())
        if n_at_risk < settings.risk_capacity:
            logger.warning(
                "score: GYMCHURN_RISK_CAPACITY is %d, but only %d client(s) have a churn "
                "probability of at least GYMCHURN_RISK_MEDIUM_THRESHOLD (%g): the high tier "
                "contains only those %d, and the others stay low",
                settings.risk_capacity,
                n_at_risk,
                settings.risk_medium_threshold,
                n_at_risk,
            )
        order = np.argsort(-probabilities, kind="stable")
        codes[order[: min(settings.risk_capacity, n_at_risk)]] = RISK_TIERS.index("high")
    return pd.Categorical.from_codes(codes, categories=RISK_TIERS)


def client_chunks(checked: CheckedData, chunk_rows: int) -> list[pd.DataFrame]:
    """Split the month's valid questionnaires into chunks of at most ``chunk_rows`` rows.

    Positions are split and taken with ``iloc``, because ``np.array_split`` on a
    DataFrame returns arrays with pandas 3 and numpy 2.4.
    """
    if chunk_rows < 1:
        raise ValueError(f"invalid chunk_rows {chunk_rows}: expected at least 1")
    clients = checked.scoring.valid
    return [
        clients.iloc[start : start + chunk_rows] for start in range(0, len(clients), chunk_rows)
    ] or [clients]


def reason_reference(checked: CheckedData) -> dict[str, float]:
    """Reference values the month's reasons are measured against, from the training rows."""
    return reasons.reference_values(checked.training)


def score_chunk(pipeline, clients: pd.DataFrame, reference: dict[str, float]) -> pd.DataFrame:
    """Score one chunk of clients and phrase each client's top reasons.

    Returns:
        One row a client, in the order of ``clients``: ``client_id``,
        ``churn_probability`` (the fitted model's) and ``reasons`` (a
        categorical of each client's phrases joined, see
        :func:`gymchurn.reasons.phrase_sets`).
    """
    attribution = reasons.attribute_rescored(
        rescoring.rescorer(pipeline, clients),
        clients,
        reference,
        min_probability=reasons.DEFAULT_MIN_CONTRIBUTION,
    )
    return pd.DataFrame(
        {
            CLIENT_ID: clients[CLIENT_ID].to_numpy(),
            "churn_probability": attribution.probability,
            "reasons": reasons.phrase_sets(attribution, clients),
        }
    )


def combine_scores(
    chosen: ChosenModel,
    settings: Settings,
    chunks: list[pd.DataFrame],
    started: float,
    clients: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Join the scored chunks and give each client its risk tier.

    Tiers are given on the whole month, because ``risk_capacity`` ranks all
    clients. In a backtest a labelled client gets its out-of-fold probability.
    When ``clients``, the frame the chunks were taken from, lists the same
    clients in the same order, the scores share its ``client_id`` column.
    """
    scored = pd.concat([chunk.drop(columns="reasons") for chunk in chunks], ignore_index=True)
    # pandas.concat would turn categoricals with other categories into objects.
    phrases = union_categoricals([chunk["reasons"] for chunk in chunks])
    client_ids = scored[CLIENT_ID].to_numpy()
    if clients is not None and lined_up(scored, clients):
        client_ids = clients[CLIENT_ID].to_numpy()
    probabilities = scored["churn_probability"].to_numpy()
    if chosen.out_of_fold is not None:
        out_of_fold = chosen.out_of_fold.reindex(client_ids).to_numpy()
        probabilities = np.where(np.isnan(out_of_fold), probabilities, out_of_fold)
    del scored
    scores = pd.DataFrame(
        {
            CLIENT_ID: client_ids,
            "churn_probability": probabilities,
            "risk_tier": risk_tiers(probabilities, settings),
            "reasons": phrases,
        },
        copy=False,
    )
    counts = scores["risk_tier"].value_counts()
    logger.info(
        "score: %d clients in %d chunk(s), %s, with reasons (%.1f s)",
        len(scores),
        len(chunks),
        ", ".join(f"{counts.get(tier, 0)} {tier}" for tier in RISK_TIERS),
        time.perf_counter() - started,
    )
    return scores


def score(chosen: ChosenModel, checked: CheckedData, settings: Settings) -> pd.DataFrame:
    """Score every valid questionnaire of the month and give each client's top reasons.

    The clients are scored in chunks of ``settings.chunk_rows``, one after the
    other. The flow scores the same chunks as tasks of its task runner.

    Returns:
        One row a client: ``client_id``, ``churn_probability``, ``risk_tier``,
        ``reasons`` (a categorical of joined phrases). In a backtest a
        labelled client gets its out-of-fold probability and a client without
        a label the fitted model's. The reasons always explain the fitted
        model's probability.
    """
    started = time.perf_counter()
    reference = reason_reference(checked)
    chunks = [
        score_chunk(chosen.pipeline, chunk, reference)
        for chunk in client_chunks(checked, settings.chunk_rows)
    ]
    return combine_scores(chosen, settings, chunks, started, checked.scoring.valid)


def realised_roc_auc(scores: pd.DataFrame, checked: CheckedData) -> float | None:
    """ROC-AUC of the month's scores against its outcomes, when both classes are known.

    None as well when the outcomes are kept out by a label rule.
    """
    if checked.labels_blocked:
        return None
    labels = _outcomes(checked, scores)
    known = ~np.isnan(labels)
    if len(np.unique(labels[known])) < 2:
        return None
    return float(roc_auc_score(labels[known], scores["churn_probability"].to_numpy()[known]))


def _outcomes(checked: CheckedData, scores: pd.DataFrame) -> np.ndarray:
    """Return each scored client's ``churned`` (NaN when unknown), in the order of ``scores``."""
    return np.asarray(column_for(checked.scoring.valid, CHURNED, scores), dtype="float64")


def _reference_month(training: pd.DataFrame) -> dt.date | None:
    """Return the latest training month whose labels allow the drivers' held-out rows.

    The drivers hold out a stratified share of the month's rows, which needs
    a few leavers and a few who stayed. A latest month without them, such as
    one whose rows were mostly quarantined, gives way to the month before it,
    with a warning.
    """
    if training.empty:
        return None
    months = sorted(set(training[MONTH]), reverse=True)
    for month in months:
        labels = training.loc[training[MONTH] == month, CHURNED].to_numpy(dtype="int64")
        if can_hold_out(labels):
            break
    else:
        month = months[0]
    if month != months[0]:
        latest = training.loc[training[MONTH] == months[0], CHURNED]
        logger.warning(
            "check: the latest labelled month, %s, has %d valid row(s) with %d leaver(s), "
            "too few to measure churn rates and drivers on; they describe %s instead",
            format_month(months[0]),
            len(latest),
            int(latest.sum()),
            format_month(month),
        )
    return month


def reference_rows(checked: CheckedData) -> pd.DataFrame:
    """Labelled rows that the month's churn rates describe.

    In a backtest these are the month's own labelled clients; otherwise the
    rows of ``checked.reference_month``: the latest labelled month the model
    trained on, unless it has too few leavers or too few who stayed.
    """
    training = checked.training
    if checked.mode == "backtest" or training.empty:
        return training
    month = checked.reference_month or max(training[MONTH])
    return training[training[MONTH] == month]


def previous_segments(engine: Engine, month: dt.date) -> pd.DataFrame | None:
    """Mean answers of each segment of the latest published month before ``month``."""
    with engine.connect() as conn:
        previous = db.read_frame(conn, "clusters_before_month", {"month": month})
    return None if previous.empty else previous


def segment(
    checked: CheckedData, settings: Settings, previous: pd.DataFrame | None = None
) -> Segmentation:
    """Split the month's valid clients into segments, keeping the ids of ``previous``."""
    started = time.perf_counter()
    fitted = fit_segments(checked, settings, previous)
    assignments = [
        assign_segments(fitted, chunk) for chunk in client_chunks(checked, settings.chunk_rows)
    ]
    return describe_segments(fitted, checked, assignments, started)


def fit_segments(
    checked: CheckedData, settings: Settings, previous: pd.DataFrame | None = None
) -> segments_module.SegmentModel:
    """Fit the month's segments on a sample of its valid clients; see :mod:`gymchurn.segments`."""
    return segments_module.fit_segments(
        checked.scoring.valid,
        reference_rows(checked),
        n_clusters=settings.n_clusters,
        seed=settings.random_seed,
        previous=previous,
    )


def assign_segments(fitted: segments_module.SegmentModel, clients: pd.DataFrame) -> pd.DataFrame:
    """Assign one chunk of clients to the month's segments."""
    return segments_module.assign_segments(fitted, clients)


def describe_segments(
    fitted: segments_module.SegmentModel,
    checked: CheckedData,
    assignments: list[pd.DataFrame],
    started: float,
) -> Segmentation:
    """Profile and name the month's segments from the assigned chunks."""
    segments = segments_module.describe_segments(
        fitted, checked.scoring.valid, pd.concat(assignments, ignore_index=True)
    )
    logger.info(
        "segment: %d segments, ids %s; %s (%.1f s)",
        len(segments.profiles),
        "matched to the previous month's" if segments.matched else "ordered by churn rate",
        "; ".join(
            f"{row.cluster_id} {row.name}: {row.size}" for row in segments.profiles.itertuples()
        ),
        time.perf_counter() - started,
    )
    return segments


def explain(chosen: ChosenModel, checked: CheckedData, settings: Settings) -> Drivers:
    """Measure the month's drivers of churn on held-out labelled rows.

    A champion that trained only on months before the reference rows is
    measured as it is; any other model is refitted outside the held-out rows.
    """
    reference = reference_rows(checked)
    unseen = (
        chosen.training_months is not None
        and not reference.empty
        and max(chosen.training_months) < min(reference[MONTH])
    )
    return find_drivers(
        chosen.pipeline, checked.training, reference, seed=settings.random_seed, refit=not unseen
    )


def advise(
    checked: CheckedData,
    scores: pd.DataFrame,
    segments: Segmentation,
    drivers: Drivers,
    settings: Settings,
) -> MonthInsights:
    """Turn the month's scores, segments and drivers into target groups and measures."""
    return build_insights(
        checked.month,
        checked.scoring.valid,
        reference_rows(checked),
        scores,
        segments,
        drivers,
        load_measures(settings.measures_file),
    )


def _quarantine_rows(report: ValidationReport, run_id: uuid.UUID, dataset: str):
    for row in report.quarantined.to_dict("records"):
        data = {name: (None if pd.isna(row[name]) else row[name]) for name in FEATURES}
        yield [
            run_id,
            row[MONTH],
            int(row[CLIENT_ID]),
            dataset,
            json.dumps(data),
            list(row["failed_rules"]),
            json.dumps(row.get(FAILED_VALUES) or {}, default=_json_value),
        ]


def _locate_quarantined(conn, run_id: uuid.UUID) -> None:
    """Give the run's quarantined rows the file and line their questionnaires were loaded from."""
    first = db.execute(conn, "locate_quarantined_rows", {"run_id": run_id}).one_or_none()
    if first is None:
        return
    if first.line is None:
        place = f"{first.source_file}, which no longer has it"
    else:
        place = f"{first.source_file} line {first.line}"
    logger.info(
        "publish: %d quarantined row(s) located in the files they were loaded from, the "
        "first at %s (client %d); each row's file and line are in churn.quarantine",
        first.n_located,
        place,
        first.client_id,
    )
    n_gone = first.n_located - first.n_with_line
    if n_gone:
        logger.warning(
            "publish: %d quarantined row(s) come from a file that was loaded again without "
            "them, so a corrected file did not replace them; load it with --replace to keep "
            "only its clients",
            n_gone,
        )


def _quarantine_to_replace(chosen: ChosenModel) -> str:
    """Name the query that deletes the quarantine rows a rerun of the month replaces.

    Only a run that trains records the training rows it left out, so a rerun
    that loads a saved model keeps the earlier run's record of them.
    """
    if chosen.trained:
        return "delete_month_quarantine"
    return "delete_month_scoring_quarantine"


def _json_value(value):
    # numpy scalars and dates in the failing values.
    if hasattr(value, "item"):
        return value.item()
    return str(value)


@dataclass(frozen=True)
class PublishedRun:
    """Counts of a published month."""

    run_id: uuid.UUID
    month: dt.date
    mode: str
    rows_read: int
    rows_quarantined: int
    rows_scored: int
    model_version: str
    realised_roc_auc: float | None


def document(settings: Settings, run_id: uuid.UUID, checked: CheckedData) -> Path | None:
    """Build the run's Data Docs from its validation results.

    Returns:
        The ``index.html`` path, or None when GX could not build them; the run
        goes on without, because the results are also in ``churn.validation_results``.
    """
    reports = [checked.scoring]
    if checked.training_report is not None:
        reports.append(checked.training_report)
    try:
        path = build_data_docs(reports, _docs_folder(settings, checked.month, run_id))
    except Exception as error:
        logger.warning("run %s: Data Docs not built: %s", run_id, error)
        return None
    logger.info("validate: Data Docs written to %s", path)
    return path


def publish(
    engine: Engine,
    run_id: uuid.UUID,
    checked: CheckedData,
    chosen: ChosenModel,
    scores: pd.DataFrame,
    segments: Segmentation,
    data_docs: Path | None = None,
    insights: MonthInsights | None = None,
    report: Path | None = None,
    before_commit: Callable[[], object] | None = None,
) -> PublishedRun:
    """Replace the month's scores, segments, findings and quarantine in one transaction.

    A rerun of the month replaces the rows of the earlier run and marks that
    run superseded, so the month never contains rows of two runs. The
    exception is the quarantine's training rows, which only a run that trains
    writes and replaces. Without
    ``insights`` the month's drivers, recommendations and findings are left
    empty and no client gets a suggested action. ``report`` is the path the
    month's report will be moved to.

    ``before_commit`` is called inside the transaction, after the new
    scores are indexed and before they are swapped in: when it raises,
    nothing is published. The flow waits there for the report, rendered while
    the database builds the new scores' indexes. Readers of ``churn.scores``
    and writers of ``churn.runs`` wait only for the swap and the few writes
    after it, not for the report.
    """
    started = time.perf_counter()
    month = checked.month
    auc = realised_roc_auc(scores, checked)
    table = by_client(scores, segments.assignments, how="inner")
    if HOLDOUT not in table:
        # Scores not marked by holdout.mark_holdout have no held-out clients.
        table[HOLDOUT] = False
    table["suggested_action"] = _suggested_actions(table, insights)
    clusters = _cluster_rows(segments, table).assign(month=month, run_id=run_id)
    keys = {"month": month, "run_id": run_id}
    monitoring = _monitoring_rows(checked, chosen, scores, run_id)
    with engine.begin() as conn:
        n_scores = stage_scores(conn, month, run_id, chosen.version, table)
        index_scores(conn, month)
        for name in (
            "delete_month_clusters",
            _quarantine_to_replace(chosen),
            "delete_month_monitoring",
            "delete_month_feature_influence",
            "delete_month_feature_churn_rates",
            "delete_month_recommendations",
            "delete_month_findings",
        ):
            db.execute(conn, name, keys)
        for row in monitoring:
            db.execute(conn, "upsert_monitoring", row)
        reports = [checked.scoring]
        if checked.training_report is not None:
            reports.append(checked.training_report)
        _write_results(
            conn,
            validation_result_rows(
                month, run_id=run_id, reports=reports, findings=checked.findings
            ),
        )
        n_clusters = db.copy_rows(
            conn, "churn.clusters", CLUSTER_COLUMNS, db.frame_rows(clusters, CLUSTER_COLUMNS)
        )
        if insights is not None:
            _write_insights(conn, insights, keys)
        n_quarantined = db.copy_rows(
            conn,
            "churn.quarantine",
            QUARANTINE_COLUMNS,
            _quarantine_rows(checked.scoring, run_id, "scoring"),
        )
        if checked.training_report is not None and chosen.trained:
            db.copy_rows(
                conn,
                "churn.quarantine",
                QUARANTINE_COLUMNS,
                _quarantine_rows(checked.training_report, run_id, "training"),
            )
        _locate_quarantined(conn, run_id)
        if before_commit is not None:
            before_commit()
        # The swap checks the foreign keys of churn.scores, which locks
        # churn.runs and churn.model_versions against writes until the commit.
        # Both are written only after it: a run that wrote either before its
        # swap would deadlock with another month's run swapping at the same time.
        swap_in_scores(conn, month)
        if chosen.promote:
            promote(conn, chosen.version, chosen.reason)
        db.execute(conn, "supersede_published_run", keys)
        if data_docs is not None:
            db.execute(conn, "set_run_data_docs_path", {"path": str(data_docs), "run_id": run_id})
        if report is not None:
            db.execute(conn, "set_run_report_path", {"path": str(report), "run_id": run_id})
        published = PublishedRun(
            run_id,
            month,
            checked.mode,
            checked.scoring.n_rows,
            n_quarantined,
            n_scores,
            chosen.version,
            auc,
        )
        db.execute(
            conn,
            "finish_run",
            {
                **keys,
                "mode": checked.mode,
                "rows_read": published.rows_read,
                "rows_quarantined": n_quarantined,
                "rows_scored": n_scores,
                "training_rows": len(checked.training),
                "model_version": chosen.version,
                "realised_roc_auc": auc,
                "retrain_policy": chosen.policy,
                "model_decision": chosen.decision,
                "decision_reason": chosen.reason,
                "message": _run_message(published),
            },
        )
    logger.info(
        "publish: wrote %d scores, %d clusters, %d quarantined rows for %s (%.1f s)",
        n_scores,
        n_clusters,
        n_quarantined,
        format_month(month),
        time.perf_counter() - started,
    )
    return published


def stage_scores(
    conn, month: dt.date, run_id: uuid.UUID, model_version: str, table: pd.DataFrame
) -> int:
    """COPY the month's scores into a new table that :func:`swap_in_scores` makes its partition.

    The table (``churn.scores_YYYY_MM_next``) has no index and no foreign key
    yet, so the COPY pays for neither, and it exists only inside the caller's
    transaction. ``month``, ``run_id`` and ``model_version`` are its column
    defaults, so only the columns that differ between clients are sent.

    Returns:
        The number of rows written.
    """
    started = time.perf_counter()
    name = db.execute(
        conn,
        "prepare_scores_partition",
        {"month": month, "run_id": run_id, "model_version": model_version},
    ).scalar_one()
    # Rows in the order of the (month, risk_tier, cluster_id) index, which then
    # builds from sorted input. At 1,000,000 simulated clients the four indexes
    # of the time took 1.8 s in the order of their largest and 2.7 s in client order.
    tiers = pd.Categorical(table["risk_tier"], categories=sorted(RISK_TIERS)).codes
    order = np.lexsort((table[CLIENT_ID].to_numpy(), table[CLUSTER_ID].to_numpy(), tiers))
    columns = _score_columns(table, db.connection_encoding(conn))
    db.copy_binary(
        conn, f"churn.{name}", SCORE_COLUMNS, binary_copy.blocks(columns, order), freeze=True
    )
    n_rows = len(table)
    logger.info(
        "publish: %d scores of %s written to churn.%s (%.1f s)",
        n_rows,
        format_month(month),
        name,
        time.perf_counter() - started,
    )
    return n_rows


def index_scores(conn, month: dt.date) -> None:
    """Index the scores :func:`stage_scores` wrote and take their statistics.

    Locks nothing that readers of ``churn.scores`` or writers of
    ``churn.runs`` need. :func:`swap_in_scores` reuses the indexes.
    """
    started = time.perf_counter()
    db.execute(conn, "index_scores_partition", {"month": month})
    logger.info(
        "publish: scores of %s indexed (%.1f s)",
        format_month(month),
        time.perf_counter() - started,
    )


def swap_in_scores(conn, month: dt.date) -> None:
    """Check the foreign keys of the scores :func:`stage_scores` wrote and make them the partition.

    Indexes them first unless :func:`index_scores` did. The keys are checked
    before ``churn.scores`` is locked. The month's old partition is then
    dropped in the same transaction, which locks ``churn.scores`` until the
    commit: until then readers see the old scores, and after it the new ones.
    """
    started = time.perf_counter()
    db.execute(conn, "attach_scores_partition", {"month": month})
    logger.info(
        "publish: scores of %s swapped in as partition churn.scores_%s (%.2f s)",
        format_month(month),
        month.strftime("%Y_%m"),
        time.perf_counter() - started,
    )


def _score_columns(table: pd.DataFrame, encoding: str) -> list[binary_copy.Column]:
    """Return the :data:`SCORE_COLUMNS` of ``table`` as columns of :mod:`gymchurn.binary_copy`.

    The columns of :data:`SCORE_NUMBERS` are sent as numbers of their
    PostgreSQL type. The others are sent as their distinct values, each
    encoded once: ``reasons`` as ``text[]`` (from the joined phrases of
    :func:`gymchurn.reasons.phrase_sets`, or from lists), the rest as text,
    with a missing value as NULL.
    """
    columns = []
    for name in SCORE_COLUMNS:
        column = table[name]
        if name in SCORE_NUMBERS:
            wire = SCORE_NUMBERS[name]
            columns.append(binary_copy.Numbers(column.to_numpy(dtype=wire.newbyteorder("=")), wire))
        elif name == "reasons":
            columns.append(_reason_arrays(column, encoding))
        else:
            if isinstance(column.dtype, pd.CategoricalDtype):
                # The categorical's own codes: one byte a row, not factorize's eight.
                codes, distinct = column.cat.codes.to_numpy(), column.cat.categories
            else:
                codes, distinct = pd.factorize(column)
            # A missing value has code -1 and gets the last payload, NULL.
            texts = [str(value) for value in distinct]
            payloads = [*binary_copy.text_payloads(texts, encoding), None]
            codes = np.where(codes < 0, np.asarray(len(texts), dtype=codes.dtype), codes)
            columns.append(binary_copy.Coded(codes, payloads))
    return columns


def _reason_arrays(column: pd.Series, encoding: str) -> binary_copy.Coded:
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        sets = [reasons.split_phrases(text) for text in column.cat.categories]
    else:
        codes, distinct = pd.factorize(column.map(tuple))
        sets = list(distinct)
    payloads = [binary_copy.text_array_payload(items, encoding) for items in sets]
    return binary_copy.Coded(codes, payloads)


def _suggested_actions(table: pd.DataFrame, insights: MonthInsights | None):
    """Return each client's suggested measure from ``insights``, missing for all without it."""
    if insights is None:
        return np.full(len(table), None, dtype=object)
    return column_for(insights.scores, "suggested_action", table)


def _cluster_rows(segments: Segmentation, scored: pd.DataFrame) -> pd.DataFrame:
    """The segments' profiles with their expected churners and their differences as JSON."""
    by_cluster = scored.groupby(CLUSTER_ID)["churn_probability"]
    ids = segments.profiles[CLUSTER_ID]
    clusters = segments.profiles.assign(
        expected_churners=by_cluster.sum().reindex(ids, fill_value=0.0).to_numpy(),
        expected_churn_rate=by_cluster.mean().reindex(ids).to_numpy(),
        differences=[
            json.dumps({name: round(float(value), 4) for name, value in row.items()})
            for _, row in segments.differences.reindex(ids).iterrows()
        ],
    )
    return clusters


def _write_insights(conn, insights: MonthInsights, keys: dict) -> None:
    """Write the month's drivers, churn rates by value, recommendations and findings."""
    drivers = insights.drivers
    influence = drivers.influence.assign(holdout_rows=drivers.holdout_rows, **keys)
    db.copy_rows(
        conn,
        "churn.feature_influence",
        INFLUENCE_COLUMNS,
        db.frame_rows(influence, INFLUENCE_COLUMNS),
    )
    rates = drivers.churn_by_value.assign(**keys)
    db.copy_rows(
        conn, "churn.feature_churn_rates", RATE_COLUMNS, db.frame_rows(rates, RATE_COLUMNS)
    )
    measures = insights.measures.rename(columns={"rank": "group_rank", "group": "group_name"})
    measures = measures.assign(position=np.arange(1, len(measures) + 1), **keys)
    db.copy_rows(
        conn,
        "churn.recommendations",
        RECOMMENDATION_COLUMNS,
        db.frame_rows(measures, RECOMMENDATION_COLUMNS),
    )
    findings = [
        [keys["month"], kind, position, text, keys["run_id"]]
        for kind, texts in (("conclusion", insights.conclusions), ("pattern", insights.patterns))
        for position, text in enumerate(texts, start=1)
    ]
    db.copy_rows(conn, "churn.findings", ["month", "kind", "position", "text", "run_id"], findings)


def _monitoring_rows(
    checked: CheckedData, chosen: ChosenModel, scores: pd.DataFrame, run_id: uuid.UUID
) -> list[dict]:
    """Rows of ``churn.monitoring``: drift and scores of the month, and realised metrics."""
    base = {"model_version": chosen.version, "run_id": run_id}
    rows = [
        {**base, "month": checked.month, "metric": "psi", "feature": name, "value": value}
        for name, value in chosen.drift.items()
    ]
    probabilities = scores["churn_probability"].to_numpy()
    high = (scores["risk_tier"] == "high").to_numpy()
    distribution = lifecycle.score_distribution(probabilities, high)
    labels = _outcomes(checked, scores)
    known = ~np.isnan(labels)
    # Outcomes kept out by a label rule would report a false model failure.
    if known.any() and not checked.labels_blocked:
        distribution.update(
            lifecycle.realised_metrics(labels[known] == 1, probabilities[known], high[known])
        )
    rows += [
        {**base, "month": checked.month, "metric": metric, "feature": "", "value": value}
        for metric, value in distribution.items()
    ]
    if chosen.last_month is not None:
        # The earlier month's scores meet their outcomes only now.
        month, metrics, version = chosen.last_month
        rows += [
            {**base, "model_version": version, "month": month, "metric": metric}
            | {"feature": "", "value": value}
            for metric, value in metrics.items()
        ]
    return rows


def _run_message(run: PublishedRun) -> str:
    text = (
        f"{run.rows_read} read, {run.rows_scored} scored, {run.rows_quarantined} quarantined; "
        f"model {run.model_version}, {run.mode}"
    )
    if run.realised_roc_auc is not None:
        text += f"; realised ROC-AUC {run.realised_roc_auc:.4f}"
    return text


# Columns of churn.scores sent with COPY, in the order _score_columns writes them:
# the numbers first, so that each row is one record of numbers and one framed
# combination of texts (see gymchurn.binary_copy). The month, the run and the
# model are not sent, because they are column defaults of the table the
# scores are written to (see stage_scores).
SCORE_COLUMNS = [
    CLIENT_ID,
    "churn_probability",
    CLUSTER_ID,
    HOLDOUT,
    "risk_tier",
    "reasons",
    "suggested_action",
]
# The number columns of SCORE_COLUMNS, by the binary form of their
# PostgreSQL type (bigint, double precision, smallint, boolean).
SCORE_NUMBERS = {
    CLIENT_ID: np.dtype(">i8"),
    "churn_probability": np.dtype(">f8"),
    CLUSTER_ID: np.dtype(">i2"),
    HOLDOUT: np.dtype("?"),
}
CLUSTER_COLUMNS = [
    "month",
    CLUSTER_ID,
    "name",
    "size",
    "share",
    "churn_rate",
    "expected_churners",
    "expected_churn_rate",
    *FEATURES,
    "traits",
    "differences",
    "run_id",
]
INFLUENCE_COLUMNS = [
    "month",
    "feature",
    "label",
    "rank",
    "permutation_importance",
    "permutation_std",
    "lr_coefficient",
    "direction",
    "holdout_rows",
    "run_id",
]
RATE_COLUMNS = [
    "month",
    "feature",
    "bin_order",
    "bin_label",
    "lower",
    "upper",
    "clients",
    "churned",
    "churn_rate",
    "run_id",
]
RECOMMENDATION_COLUMNS = [
    "month",
    "position",
    "group_rank",
    CLUSTER_ID,
    "group_name",
    "measure",
    "action",
    "why",
    "clients",
    "expected_churners",
    "run_id",
]
QUARANTINE_COLUMNS = [
    "run_id",
    "month",
    CLIENT_ID,
    "dataset",
    "row_data",
    "failed_rules",
    "failed_values",
]


def deliver(engine: Engine, settings: Settings, run: PublishedRun) -> Path:
    """Write the month's at-risk list, as the view ``churn.at_risk`` has it, to CSV.

    The file is the one ``gymchurn at-risk --month M`` writes without filters.
    """
    started = time.perf_counter()
    filters = at_risk.AtRiskFilters()
    path = settings.output_dir / at_risk.file_name(run.month, filters, "csv")
    with engine.connect() as conn:
        n_clients = at_risk.export_at_risk(conn, run.month, filters, path, "csv")
    with engine.begin() as conn:
        db.execute(
            conn, "set_run_at_risk_path", {"path": str(path.resolve()), "run_id": run.run_id}
        )
    logger.info(
        "deliver: %d at-risk clients written to %s (%.1f s)",
        n_clients,
        path,
        time.perf_counter() - started,
    )
    return path


def report_path(settings: Settings, month: dt.date) -> Path:
    """Return the path the month's report is published at."""
    return (settings.output_dir / "reports" / f"report_{format_month(month)}.html").resolve()


def staged_report_path(settings: Settings, month: dt.date, run_id: uuid.UUID) -> Path:
    """Return where run ``run_id`` writes the month's report before it is published."""
    final = report_path(settings, month)
    return final.with_name(f".{final.stem}.{run_id}.html")


def _quality_rows(checked: CheckedData) -> pd.DataFrame:
    reports = [checked.scoring]
    if checked.training_report is not None:
        reports.append(checked.training_report)
    return pd.DataFrame(
        [
            {
                "dataset": report.dataset,
                "rule": rule.rule,
                "description": rule.description,
                "failed_rows": rule.n_failed,
                "examples": describe_examples(rule),
            }
            for report in reports
            for rule in report.rules
        ],
        columns=["dataset", "rule", "description", "failed_rows", "examples"],
    )


def render_report(
    settings: Settings,
    run_id: uuid.UUID,
    checked: CheckedData,
    chosen: ChosenModel,
    scores: pd.DataFrame,
    insights: MonthInsights,
    data_docs: Path | None = None,
    campaign=None,
) -> Path:
    """Write the month's report beside its final place, to be moved there on publishing.

    ``campaign`` is the :class:`gymchurn.campaigns.Measurement` of the run, whose
    previous month's results the report shows; None leaves that section empty.

    Returns:
        The staged file; :func:`place_report` moves it once the month is published,
        so that the report never describes rows that were not published.
    """
    from gymchurn.report import write_report

    staged = staged_report_path(settings, checked.month, run_id)
    run = {
        "run_id": run_id,
        "month": checked.month,
        "mode": checked.mode,
        "rows_read": checked.scoring.n_rows,
        "rows_quarantined": checked.scoring.n_quarantined,
        "rows_scored": len(scores),
        "model_version": chosen.version,
        "realised_roc_auc": realised_roc_auc(scores, checked),
        "data_docs_path": None if data_docs is None else str(data_docs),
    }
    model_facts = {
        "version": chosen.version,
        "algorithm": chosen.algorithm,
        "decision": chosen.decision,
        "reason": chosen.reason,
        "metrics": chosen.metrics,
    }
    return write_report(
        insights,
        staged,
        run=run,
        model=model_facts,
        quality=_quality_rows(checked),
        findings=list(checked.findings),
        campaign=campaign,
    )


def check_report_place(final: Path) -> None:
    """Raise when a staged report could not replace ``final``, before the month is published.

    Raises:
        ReportPlaceError: ``final`` is a folder, which ``os.replace`` cannot replace.
    """
    if final.is_dir():
        raise ReportPlaceError(
            f"{final} is a folder, so the month's report cannot be placed there; move "
            "that folder away and run the month again"
        )


def place_report(staged: Path, final: Path) -> Path:
    """Move a staged report to its published place."""
    os.replace(staged, final)
    logger.info("deliver: report moved into place at %s", final)
    return final
