"""Command line of gymchurn: load questionnaires, run the monthly job."""

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer

from gymchurn import runtime
from gymchurn.runtime import configure_environment
from gymchurn.schema import format_month, parse_month
from gymchurn.settings import get_settings

# Tracebacks without local variables: those can hold the database password.
app = typer.Typer(
    add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(db_app, name="db")

logger = logging.getLogger("gymchurn.cli")

# Exit code of a run stopped by bad or missing data; 2 is taken by usage errors.
EXIT_FAILED = 1


def _month(text: str) -> dt.date:
    try:
        return parse_month(text)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


def _previous_month(timezone: str) -> dt.date:
    today = dt.datetime.now(ZoneInfo(timezone)).date()
    return (today.replace(day=1) - dt.timedelta(days=1)).replace(day=1)


class _StderrHandler(logging.StreamHandler):
    """Log to whatever ``sys.stderr`` is at the time of each record."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _configure_logging() -> None:
    package = logging.getLogger("gymchurn")
    if not any(isinstance(h, _StderrHandler) for h in package.handlers):
        handler = _StderrHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")
        )
        package.addHandler(handler)
    package.setLevel(logging.INFO)
    # Prefect gives the root logger a console handler of its own; without
    # this, warnings would print twice.
    package.propagate = False


def _fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _settings():
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as err:
        problems = "; ".join(
            f"{'_'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in err.errors()
        )
        raise _fail(f"invalid setting (GYMCHURN_* environment variables): {problems}", 2) from None


def _engine():
    """Return the job's engine, or exit with a message when the database is unreachable."""
    from gymchurn import db

    settings = _settings()
    try:
        engine = db.get_engine(settings)
        db.upgrade(engine)
    except db.DatabaseUrlError as err:
        raise _fail(str(err), 2) from None
    except Exception as err:
        if not db.is_transient(err):
            raise
        reason = str(getattr(err, "orig", err)).strip().splitlines()[0]
        raise _fail(f"cannot connect to the database: {reason}") from None
    return engine


@app.callback()
def main() -> None:
    """Score every client's probability of leaving next month."""
    _configure_logging()
    configure_environment(_settings().home)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or update the crm and churn schemas; safe to repeat."""
    from gymchurn import db

    engine = _engine()
    typer.echo(
        f"schema up to date on {db.describe(engine)} ({len(db.migration_files())} files applied)"
    )


def _load_summary(file: Path, summary, has_outcomes: bool) -> str:
    questionnaires = (
        f"questionnaires: {summary.questionnaires_inserted} new, "
        f"{summary.questionnaires_updated} changed"
    )
    if summary.questionnaires_removed:
        questionnaires += f", {summary.questionnaires_removed} replaced"
    if has_outcomes:
        outcomes = f"outcomes: {summary.outcomes_inserted} new, {summary.outcomes_updated} changed"
        if summary.outcomes_removed:
            outcomes += f", {summary.outcomes_removed} removed"
    else:
        outcomes = "no Churn column, no outcomes loaded"
    month = format_month(summary.month)
    return f"{file}: {summary.rows_read} rows for {month}; {questionnaires}; {outcomes}"


@app.command("load-csv")
def load_csv(
    file: Annotated[Path, typer.Argument(help="Questionnaire CSV, one row a client.")],
    month: Annotated[str, typer.Option(help="Month the answers describe, YYYY-MM.")],
    replace: Annotated[
        bool,
        typer.Option(
            "--replace", help="Delete the month's questionnaires and outcomes before loading."
        ),
    ] = False,
) -> None:
    """Load a questionnaire CSV into crm.questionnaires, and its Churn column into
    crm.churn_outcomes."""
    from gymchurn import db
    from gymchurn.loader import (
        CsvFormatError,
        LoadConflictError,
        load_questionnaire_file,
        read_questionnaire_csv,
    )

    load_month = _month(month)
    try:
        loaded = read_questionnaire_csv(file)
    except CsvFormatError as err:
        raise _fail(str(err)) from None
    if loaded.ignored_columns:
        logger.info("%s: ignored column(s) %s", file, ", ".join(loaded.ignored_columns))
    if loaded.ids_assigned:
        logger.info(
            "%s has no client_id column: clients numbered 1..%d in file order (the same "
            "file gets the same ids; add a client_id column to follow clients across files)",
            file,
            len(loaded.questionnaires),
        )
    engine = _engine()
    try:
        summary = load_questionnaire_file(engine, loaded, load_month, replace=replace)
    except LoadConflictError as err:
        raise _fail(str(err)) from None
    typer.echo(_load_summary(file, summary, loaded.outcomes is not None))
    typer.echo(f"database: {db.describe(engine)}")


# The signal the job process gets for each signal `run` forwards. Prefect
# swaps its own handler in for SIGTERM during a flow run and re-sends the
# signal afterwards, which can land in the middle of recording the failure,
# so SIGTERM travels as SIGUSR1, which Prefect leaves alone.
_FORWARDED_AS = {signal.SIGINT: signal.SIGINT, signal.SIGTERM: signal.SIGUSR1}


def _stop_on_signal(signum, frame):
    # Raising lets the flow record the failure and Prefect stop its temporary
    # server. The name is kept because an interrupt inside Prefect's own code
    # can come out as another exception.
    name = "SIGTERM" if signum == signal.SIGUSR1 else signal.Signals(signum).name
    runtime.received_signals.append(name)
    raise KeyboardInterrupt(f"stopped by signal {name}")


# Set in the environment of the job process that `run` starts.
_JOB_PROCESS = "GYMCHURN_JOB_PROCESS"


def _run_in_own_session(label: str) -> int:
    """Run the month in a child process with a session of its own.

    Ctrl-C in a terminal signals the whole foreground process group, Prefect's
    temporary server included, which would then stop before the flow could
    record its failure. The child and its server get a new session, and this
    process forwards SIGINT and SIGTERM to the child alone.

    Returns:
        The exit code for this process: the child's, or 130 when a signal
        stopped a run that then failed.
    """
    command = [sys.executable, "-m", "gymchurn.cli", "run", "--month", label]
    child = subprocess.Popen(command, env={**os.environ, _JOB_PROCESS: "1"}, start_new_session=True)
    forwarded = []

    def forward(signum, frame):
        forwarded.append(signal.Signals(signum).name)
        child.send_signal(_FORWARDED_AS[signum])

    for signum in _FORWARDED_AS:
        signal.signal(signum, forward)
    code = child.wait()
    if forwarded and code != 0:
        typer.echo(f"error: run for {label} stopped by {forwarded[0]}", err=True)
        return 130
    return code


@app.command("run")
def run(
    month: Annotated[
        str | None,
        typer.Option(
            help="Month to score, YYYY-MM. Default: the month before today in the "
            "business timezone."
        ),
    ] = None,
) -> None:
    """Run the monthly scoring flow for one month."""
    settings = _settings()
    run_month = _previous_month(settings.timezone) if month is None else _month(month)
    label = format_month(run_month)
    if os.environ.get(_JOB_PROCESS) != "1":
        # Check the database here, so that a bad URL gives one line before
        # any Prefect start; the job process's flow upgrades the schema itself.
        _engine()
        raise typer.Exit(_run_in_own_session(label))

    from flows.monthly_scoring import monthly_scoring

    # Set each: a job started in the background by a shell inherits an ignored
    # SIGINT, and SIGTERM also comes straight to this process when a
    # supervisor signals it rather than its parent.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, _stop_on_signal)
    try:
        result = monthly_scoring(month=label)
    except KeyboardInterrupt as err:
        reason = str(err) or "Ctrl-C"
        raise _fail(
            f"run for {label} interrupted ({reason}); its published rows are as before", 130
        ) from None
    except Exception as err:  # a run that got as far as the database is in churn.runs
        if runtime.received_signals:
            stopped = f"run for {label} interrupted ({runtime.received_signals[0]})"
            raise _fail(f"{stopped}; its published rows are as before", 130) from None
        raise _fail(f"run for {label} failed: {err}") from None
    typer.echo(_run_summary(result))


def _run_summary(result: dict) -> str:
    auc = result["realised_roc_auc"]
    model = f"{result['mode']}, model {result['model_version']}"
    if auc is not None:
        model += f", realised ROC-AUC {auc:.4f}"
    return (
        f"{result['month']}: {result['rows_read']} read, {result['rows_scored']} scored, "
        f"{result['rows_quarantined']} quarantined ({model})\n"
        f"tables: churn.scores, churn.clusters, churn.runs (run {result['run_id']})\n"
        f"at-risk list: {Path(result['at_risk_path']).resolve()}"
    )


if __name__ == "__main__":
    app()
