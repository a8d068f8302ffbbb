"""Command line of gymchurn: load questionnaires, run the monthly job."""

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer

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


@app.callback()
def main() -> None:
    """Score every client's probability of leaving next month."""
    _configure_logging()
    configure_environment(get_settings().home)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or update the crm and churn schemas; safe to repeat."""
    from gymchurn import db

    engine = db.get_engine(get_settings())
    applied = db.upgrade(engine)
    typer.echo(f"schema up to date on {db.describe(engine)} ({len(applied)} files applied)")


@app.command("load-csv")
def load_csv(
    file: Annotated[Path, typer.Argument(help="Questionnaire CSV, one row a client.")],
    month: Annotated[str, typer.Option(help="Month the answers describe, YYYY-MM.")],
) -> None:
    """Load a questionnaire CSV into crm.questionnaires, and its Churn column into
    crm.churn_outcomes."""
    from gymchurn import db
    from gymchurn.loader import CsvFormatError, load_questionnaire_file, read_questionnaire_csv

    load_month = _month(month)
    try:
        loaded = read_questionnaire_csv(file)
    except CsvFormatError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    if loaded.ignored_columns:
        logger.info("%s: ignored column(s) %s", file, ", ".join(loaded.ignored_columns))
    if loaded.ids_assigned:
        logger.info(
            "%s has no client_id column: clients numbered 1..%d in file order (the same "
            "file gets the same ids; add a client_id column to follow clients across files)",
            file,
            len(loaded.questionnaires),
        )
    engine = db.get_engine(get_settings())
    db.upgrade(engine)
    summary = load_questionnaire_file(engine, loaded, load_month)
    outcomes = (
        "no Churn column, no outcomes loaded"
        if loaded.outcomes is None
        else f"outcomes: {summary.outcomes_inserted} new, {summary.outcomes_updated} changed"
    )
    typer.echo(
        f"{file}: {summary.rows_read} rows for {format_month(load_month)}; questionnaires: "
        f"{summary.questionnaires_inserted} new, {summary.questionnaires_updated} changed; "
        f"{outcomes}"
    )


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
    settings = get_settings()
    run_month = _month(month) if month else _previous_month(settings.timezone)
    from flows.monthly_scoring import monthly_scoring

    try:
        result = monthly_scoring(month=format_month(run_month))
    except Exception as err:  # a run that got as far as the database is in churn.runs
        typer.echo(f"error: run for {format_month(run_month)} failed: {err}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
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
