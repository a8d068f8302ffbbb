"""Command line of gymchurn: load questionnaires, run the monthly job."""

import contextlib
import datetime as dt
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer

from gymchurn import runtime
from gymchurn.cli_help import PlainHelpTyper
from gymchurn.runtime import configure_environment
from gymchurn.schema import CLIENT_ID, format_month, parse_month, previous_month
from gymchurn.settings import get_settings

# Tracebacks without local variables: those can hold the database password.
app = PlainHelpTyper(
    add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False
)
db_app = PlainHelpTyper(no_args_is_help=True, help="Database schema.")
app.add_typer(db_app, name="db")
models_app = PlainHelpTyper(no_args_is_help=True, help="Registry of churn models.")
app.add_typer(models_app, name="models")
contacts_app = PlainHelpTyper(
    no_args_is_help=True, help="Contacts made with the at-risk list, and their measured effect."
)
app.add_typer(contacts_app, name="contacts")

logger = logging.getLogger("gymchurn.cli")

# Exit code of a run stopped by bad or missing data; 2 is taken by usage errors.
EXIT_FAILED = 1


def _month(text: str) -> dt.date:
    try:
        return parse_month(text)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


def _begun_month(text: str) -> dt.date:
    """Parse the month of a questionnaire file or run, rejecting a month that has not begun.

    Questionnaires describe a month that has begun in the business timezone,
    so a later month is most likely a mistyped year, such as 2062-01 for 2026-01.
    """
    month = _month(text)
    timezone = _settings().timezone
    today = dt.datetime.now(ZoneInfo(timezone)).date()
    if month > today:
        raise typer.BadParameter(
            f"invalid month {format_month(month)}: it has not begun (today is {today} in "
            f"{timezone}), and questionnaires describe a month that has begun. "
            "Check the year and month.",
            param_hint="'--month'",
        )
    return month


# Model version names: those the job writes (v202610-798341c411) and any other
# plain name, but no quotes, spaces or semicolons.
_VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _version(text: str) -> str:
    if not _VERSION_PATTERN.fullmatch(text):
        raise typer.BadParameter(
            f"invalid model version {text!r}: expected letters, digits, '.', '_' and '-', "
            "such as v202610-798341c411; list them with: gymchurn models list"
        )
    return text


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
    runtime.quiet_explained_errors()
    runtime.hide_server_advice()


def _fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _status(message: str):
    """Show a spinner with ``message`` on stderr while a step runs, when stderr is a terminal."""
    import contextlib

    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        return contextlib.nullcontext()
    return console.status(message)


# OpenMP's thread count: a whole number, or one for each level of nested
# parallelism, separated by commas.
_OMP_THREADS = re.compile(r"[1-9][0-9]*(,[1-9][0-9]*)*")


def _settings():
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    threads = os.environ.get("OMP_NUM_THREADS")
    if threads is not None and not _OMP_THREADS.fullmatch(threads.strip()):
        # libgomp only warns about an invalid value and falls back to its own default.
        raise _fail(
            f"invalid OMP_NUM_THREADS={threads!r}: expected a whole number of threads of at "
            "least 1, such as 1 (the job's default). Unset it to use the default.",
            2,
        )
    try:
        return get_settings()
    except SettingsError as err:
        raise _fail(_list_setting_problem(err), 2) from None
    except ValidationError as err:
        problems = "; ".join(_setting_problem(error) for error in err.errors())
        raise _fail(f"invalid setting (GYMCHURN_* environment variables): {problems}", 2) from None


def _list_setting_problem(error) -> str:
    """Return the error message for a list setting that pydantic-settings could not read as JSON."""
    import json

    from gymchurn.settings import Settings

    cause = f" ({error.__cause__})" if error.__cause__ else ""
    # pydantic-settings names the field: 'error parsing value for field "x" from source ...'.
    match = re.search(r'field "(\w+)"', str(error))
    field = Settings.model_fields.get(match.group(1)) if match else None
    if field is None:
        return (
            f"invalid setting (GYMCHURN_* environment variables): {error}{cause}; list "
            'settings are JSON, for example GYMCHURN_DRIFT_FEATURES=\'["age", "lifetime"]\''
        )
    variable = f"GYMCHURN_{match.group(1).upper()}"
    example = json.dumps(list(field.default), ensure_ascii=False)
    return (
        f"invalid setting {variable}={os.environ.get(variable)!r}: not a JSON list{cause}; "
        f"list settings are JSON, for example {variable}='{example}' (the default)"
    )


def _setting_problem(error: dict) -> str:
    """Name the environment variable of a settings error, with the value it was given."""
    field = "_".join(str(part) for part in error["loc"])
    if not field:
        return f"settings: {error['msg']}"
    return f"GYMCHURN_{field.upper()}={error['input']!r}: {error['msg']}"


def _check_measures(settings) -> None:
    """Exit with a message when the measures file the runs will read is missing or malformed."""
    from gymchurn.measures import MeasuresFileError, load_measures

    try:
        load_measures(settings.measures_file)
    except MeasuresFileError as err:
        raise _fail(f"invalid setting GYMCHURN_MEASURES_FILE: {err}", 2) from None


def _engine(force_upgrade: bool = False):
    """Return the job's engine with the schema up to date.

    Exits with a message when the database is unreachable.
    """
    from gymchurn import db

    settings = _settings()
    try:
        engine = db.get_engine(settings)
        prepare = db.upgrade if force_upgrade else db.ensure_schema
        db.retry_unreachable(lambda: prepare(engine), settings.db_retry_seconds, "connect")
    except db.DatabaseUrlError as err:
        raise _fail(str(err), 2) from None
    except db.NewerSchemaError as err:
        raise _fail(str(err)) from None
    except Exception as err:
        advice = db.rejected_connection_advice(err)
        if advice is not None:
            raise _fail(
                f"the database server rejected the connection: "
                f"{db.connection_error_reason(err)}; {advice}"
            ) from None
        if not db.is_transient(err):
            raise
        attempts = len(settings.db_retry_seconds) + 1
        raise _fail(
            f"cannot connect to the database after {attempts} attempt(s): "
            f"{db.connection_error_reason(err)}; check that the server in DATABASE_URL is "
            "running and reachable, and see GYMCHURN_DB_RETRY_SECONDS for the waits"
        ) from None
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

    engine = _engine(force_upgrade=True)
    typer.echo(
        f"schema up to date on {db.describe(engine)} ({len(db.migration_files())} files applied)"
    )


@models_app.command("list")
def models_list() -> None:
    """List every registered model version with its status and cross-validated ROC-AUC."""
    from gymchurn import db

    engine = _engine()
    with engine.connect() as conn:
        rows = db.execute(conn, "list_model_versions").mappings().all()
    if not rows:
        typer.echo("no model registered yet; run: gymchurn run --month YYYY-MM")
        return
    for row in rows:
        months = sorted(str(m)[:7] for m in row["training_months"])
        span = months[0] if len(months) == 1 else f"{months[0]}..{months[-1]}"
        promoted = f", promoted {row['promoted_at']:%Y-%m-%d %H:%M}" if row["promoted_at"] else ""
        typer.echo(
            f"{row['version']}  {row['status']:<10}  {row['algorithm']:<22}  "
            f"calibration {row['calibration'] or 'n/a':<8}  "
            f"{row['training_rows']} rows of {span}  "
            f"cv ROC-AUC {row['metrics']['roc_auc']:.4f}{promoted}"
        )


@models_app.command("evaluate")
def models_evaluate(
    csv_file: Annotated[
        Path,
        typer.Option(
            "--csv", help="Questionnaire CSV with a Churn column.", exists=True, dir_okay=False
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write a reliability plot of every candidate to this PNG file."),
    ] = None,
) -> None:
    """Cross-validate every candidate on a labelled file and print its metrics table."""
    import datetime as dt
    import json

    import numpy as np

    from gymchurn.evaluation import evaluate_candidates, reliability_plot
    from gymchurn.loader import CsvFormatError, read_questionnaire_csv
    from gymchurn.schema import CHURNED, MONTH
    from gymchurn.validation import ROW_NUMBER, DataValidationError, validate_questionnaires

    settings = _settings()
    try:
        loaded = read_questionnaire_csv(csv_file)
    except CsvFormatError as err:
        raise _fail(str(err)) from None
    if loaded.outcomes is None:
        raise _fail(f"{csv_file}: no Churn column; evaluation needs labelled rows")
    frame = loaded.questionnaires.merge(loaded.outcomes, on=CLIENT_ID)
    frame = frame.assign(**{MONTH: dt.date(2000, 1, 1), ROW_NUMBER: np.arange(1, len(frame) + 1)})
    try:
        report = validate_questionnaires(
            frame,
            dataset=str(csv_file),
            max_invalid_share=settings.max_invalid_share,
            faults=loaded.faults,
            chunk_rows=settings.read_chunk_rows,
        )
    except DataValidationError as err:
        raise _fail(f"{csv_file}: {err}") from None
    rows = report.valid
    if len(rows) < len(loaded.questionnaires):
        logger.info(
            "%s: %d rows left out: %d without a label, %d quarantined by the row rules",
            csv_file,
            len(loaded.questionnaires) - len(rows),
            len(loaded.questionnaires) - len(frame),
            report.n_quarantined,
        )
    counts = rows[CHURNED].value_counts()
    if min(counts.get(True, 0), counts.get(False, 0)) < settings.cv_folds:
        raise _fail(
            f"{csv_file}: {counts.get(True, 0)} churned and {counts.get(False, 0)} retained "
            f"rows; each class needs at least {settings.cv_folds} for "
            f"{settings.cv_folds}-fold cross-validation"
        )
    evaluation = evaluate_candidates(
        rows,
        folds=settings.cv_folds,
        seed=settings.random_seed,
        threshold=settings.risk_high_threshold,
    )
    if as_json:
        typer.echo(json.dumps(evaluation.table.to_dict("records"), indent=2))
    else:
        typer.echo(
            f"{len(rows)} labelled rows of {csv_file}, {settings.cv_folds}-fold out-of-fold "
            "metrics pooled over the folds (the registry keeps each metric's mean over the "
            f"folds), decisions at {settings.risk_high_threshold}:"
        )
        typer.echo(evaluation.table.to_string(index=False, float_format="{:.4f}".format))
    if plot is not None:
        typer.echo(f"reliability plot: {reliability_plot(evaluation, plot).resolve()}", err=as_json)


@models_app.command("show")
def models_show(
    version: Annotated[
        str, typer.Argument(help="Model version, e.g. v202610-798341c411.", callback=_version)
    ],
) -> None:
    """Print everything the registry records about one model version, as JSON.

    Its metrics are means over the cross-validation folds; gymchurn models evaluate
    also shows them pooled over the folds.
    """
    import json

    from gymchurn import db

    engine = _engine()
    with engine.connect() as conn:
        row = db.execute(conn, "show_model_version", {"version": version}).mappings().first()
    if row is None:
        raise _fail(f"model version {version} not found; list them with: gymchurn models list")
    typer.echo(json.dumps(dict(row), indent=2, default=str))


@models_app.command("promote")
def models_promote(
    version: Annotated[
        str, typer.Argument(help="Model version to make the champion.", callback=_version)
    ],
) -> None:
    """Make a registered version the champion after checking its file; retire the others."""
    from gymchurn import db, model, registry

    engine = _engine()
    with engine.connect() as conn:
        row = db.execute(conn, "model_version_by_name", {"version": version}).mappings().first()
    if row is None:
        raise _fail(f"model version {version} not found; list them with: gymchurn models list")
    try:
        model.load(Path(row["artifact_path"]), row["artifact_sha256"], row["sklearn_version"])
    except model.ModelIntegrityError as err:
        raise _fail(f"cannot promote {version}: {err}") from None
    with engine.begin() as conn:
        registry.promote(conn, version, "promoted by hand with gymchurn models promote")
    typer.echo(
        f"{version} is the champion; runs with --retrain never score with it, and runs "
        "with auto keep it until a trigger fires and a challenger matches or beats it"
    )


@app.command("check-report")
def check_report(
    report: Annotated[
        Path,
        typer.Argument(
            help="Monthly report, e.g. output/reports/report_2026-10.html.",
            exists=True,
            dir_okay=False,
        ),
    ],
    screenshot: Annotated[
        Path | None,
        typer.Option(help="PNG file for the screenshot; by default the report's path with .png."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds Chromium may take for the whole check.")
    ] = 60,
) -> None:
    """Open a monthly report in headless Chromium, screenshot it, and fail on a broken page.

    Exit code 1 when a plot is missing or did not decode, the page had a script
    error, or Chromium is not installed or failed.
    """
    from gymchurn.report import BrowserCheckError, check_in_browser

    target = screenshot or report.with_suffix(".png")
    try:
        check = check_in_browser(report, target, timeout=timeout)
    except BrowserCheckError as err:
        raise _fail(str(err)) from None
    typer.echo(
        f"{report}: {check.images} plots rendered, {len(check.headings)} sections, "
        f"no script errors ({check.seconds:.1f} s)"
    )
    typer.echo(f"screenshot: {check.screenshot.resolve()}")


def _load_summary(file: Path, summary, has_outcomes: bool, replace: bool) -> str:
    questionnaires = (
        f"questionnaires: {summary.questionnaires_inserted} new, "
        f"{summary.questionnaires_updated} changed"
    )
    if replace:
        questionnaires += f" ({summary.questionnaires_removed} deleted first by --replace)"
    if has_outcomes:
        outcomes = f"outcomes: {summary.outcomes_inserted} new, {summary.outcomes_updated} changed"
        if replace:
            outcomes += f" ({summary.outcomes_removed} deleted first by --replace)"
        elif summary.outcomes_removed:
            outcomes += f", {summary.outcomes_removed} removed for an unknown label"
    else:
        outcomes = "no Churn column, no outcomes loaded"
    month = format_month(summary.month)
    text = f"{file}: {summary.rows_read} rows for {month}; {questionnaires}; {outcomes}"
    if summary.faults:
        text += (
            f"; {summary.faults} unreadable cell(s) stored as NULL and listed in "
            "crm.questionnaire_faults (their rows will be quarantined)"
        )
    return text


@app.command("load-csv")
def load_csv(
    file: Annotated[
        Path,
        typer.Argument(help="Questionnaire CSV, one row a client.", exists=True, dir_okay=False),
    ],
    month: Annotated[str, typer.Option(help="Month the answers describe, YYYY-MM.")],
    replace: Annotated[
        bool,
        typer.Option(
            "--replace", help="Delete the month's questionnaires and outcomes before loading."
        ),
    ] = False,
) -> None:
    """Load a questionnaire CSV into crm.questionnaires and its outcomes into crm.churn_outcomes.

    Exit codes: 0 loaded (also with unreadable cells, stored as NULL and
    listed); 1 the file is refused, the load would renumber a loaded month's
    clients, or the database failed; 2 an invalid argument or a missing file;
    130 stopped by Ctrl-C or SIGTERM, with nothing written.
    """
    from gymchurn import db
    from gymchurn.loader import CsvFormatError, LoadConflictError, load_csv, open_questionnaire_csv

    load_month = _begun_month(month)
    try:
        with _stopped_by_signals():
            # The file's encoding and header are checked before the database is reached.
            source = open_questionnaire_csv(file)
            engine = _engine()
            with _status(f"loading {file} into {format_month(load_month)}"):
                loaded = load_csv(engine, source, load_month, replace=replace)
    except (CsvFormatError, LoadConflictError) as err:
        raise _fail(str(err)) from None
    except KeyboardInterrupt as err:
        raise _fail(
            f"{err or 'stopped by Ctrl-C'}; nothing was loaded into {format_month(load_month)}",
            130,
        ) from None
    if source.header.ignored:
        logger.info("%s: ignored column(s) %s", file, ", ".join(source.header.ignored))
    if not source.ids_assigned:
        key = source.header.names[source.header.positions[CLIENT_ID]]
        if key != CLIENT_ID:
            logger.info("%s: column %r read as client_id, the client key", file, key)
    for fault in loaded.faults.head(10).itertuples():
        logger.warning(
            "%s: line %d, column %s: %r (%s); the row is loaded with NULL there",
            file,
            fault.line,
            fault.column,
            fault.raw_value,
            fault.fault.replace("_", " "),
        )
    if len(loaded.faults) > 10:
        logger.warning("%s: %d more unreadable cell(s)", file, len(loaded.faults) - 10)
    if source.ids_assigned:
        logger.info(
            "%s has no client_id column: clients numbered 1..%d in file order (the same "
            "file gets the same ids; add a client_id column to follow clients across files)",
            file,
            loaded.summary.rows_read,
        )
    typer.echo(_load_summary(file, loaded.summary, source.has_outcomes, replace))
    typer.echo(f"database: {db.describe(engine)}")
    _warn_if_scored(engine, loaded.summary)


def _warn_if_scored(engine, summary) -> None:
    """Warn when a load changed the questionnaires of a month whose scores are published."""
    from gymchurn import db

    changed = (
        summary.questionnaires_inserted
        + summary.questionnaires_updated
        + summary.questionnaires_removed
    )
    if not changed:
        return
    with engine.connect() as conn:
        published = db.execute(conn, "published_model_for_month", {"month": summary.month})
        scored = published.first() is not None
    if scored:
        month = format_month(summary.month)
        logger.warning(
            "%s was scored before this load changed its questionnaires: its published "
            "scores, segments and at-risk list still describe them as they were; score it "
            "again with: gymchurn run --month %s",
            month,
            month,
        )


@contacts_app.command("load")
def contacts_load(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV of contacts: client_id, date, channel, outcome.", exists=True, dir_okay=False
        ),
    ],
    month: Annotated[str, typer.Option(help="Scored month whose at-risk list was contacted.")],
) -> None:
    """Load the contacts made with a month's at-risk list into crm.contacts.

    Rows that break a rule go to crm.contact_quarantine with their reasons.
    Loading the file from the same path for the month again replaces its
    rows; a file of the same name in another folder adds to the month.
    When the month's outcomes are already loaded, its results in
    churn.campaign_results are recomputed.

    Exit codes: 0 loaded (also with quarantined rows); 1 the file cannot be
    read, the month has no published scores, or the database failed; 2 an
    invalid argument.
    """
    from gymchurn import campaigns, contacts, db
    from gymchurn.loader import CsvFormatError

    load_month = _month(month)
    engine = _engine()
    try:
        load = contacts.load_contacts(engine, file, load_month)
    except (CsvFormatError, contacts.NoPublishedScoresError) as err:
        raise _fail(str(err)) from None
    label = format_month(load_month)
    text = (
        f"{file}: {load.rows_read} rows for the list of {label}; {load.loaded} contacts "
        f"loaded ({load.clients} clients), {load.quarantined} quarantined"
    )
    if load.reason_counts:
        text += " (" + ", ".join(f"{n} {r}" for r, n in load.reason_counts.items()) + ")"
    if load.replaced:
        text += f"; {load.replaced} contacts of an earlier load of {load.source_file} replaced"
    typer.echo(text)
    if load.held_out_contacted:
        typer.echo(
            f"warning: {load.held_out_contacted} held-out client(s) were contacted; they stay in "
            "the control group and shrink the measured effect",
            err=True,
        )
    results = campaigns.refresh_month(engine, load_month)
    if results is not None:
        typer.echo(f"churn.campaign_results: {len(results)} rows of {label} recomputed")
    typer.echo(f"database: {db.describe(engine)}")


def _format_share(value) -> str:
    import math

    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _format_points(value) -> str:
    import math

    return "n/a" if value is None or math.isnan(value) else f"{100 * value:+.1f}"


def _detectable_text(value) -> str:
    import math

    if value is None or math.isnan(value):
        return "too few clients to detect any effect"
    return f"the smallest effect these groups detect is {100 * value:.1f} points"


def _difference_text(difference, lower, upper) -> str:
    return (
        f"difference {_format_points(difference)} points, 95% CI "
        f"{_format_points(lower)} to {_format_points(upper)}"
    )


def _combined_result_lines(row) -> list[str]:
    """Lines for an overall or tier row of churn.campaign_results."""
    group = "overall" if row.level == "overall" else f"{row.risk_tier} tier"
    if row.contacted_measured == 0:
        reason = "nobody contacted" if row.contacted == 0 else "no held-out client to compare"
        return [
            f"{group}: {reason}; {row.contacted} contacted, {row.held_out} held out, "
            f"{row.listed} listed with a known outcome; not measured"
        ]
    lines = [
        f"{group}: {row.contacted_measured} contacted (churn "
        f"{_format_share(row.churn_rate_contacted)}); held-out clients of the same "
        f"{row.strata_measured} risk tiers, weighted like the contacted ones, churned "
        f"{_format_share(row.churn_rate_held_out_weighted)}; "
        f"{_difference_text(row.difference, row.ci_lower, row.ci_upper)}; about "
        f"{round(row.clients_kept):,} clients kept; {_detectable_text(row.min_detectable_effect)}",
        f"  held out against every listed client of those tiers, contacted or not: "
        f"{_difference_text(row.difference_listed, row.ci_lower_listed, row.ci_upper_listed)}",
    ]
    left_out = row.held_out - row.held_out_measured
    if left_out:
        lines.append(
            f"  {left_out} held-out client(s) left out: they are in risk tiers nobody contacted "
            "(the medium tier is not on the call list), so they would compare unlike clients"
        )
    unmatched = row.contacted - row.contacted_measured
    if unmatched:
        lines.append(
            f"  {unmatched} contacted client(s) not measured: nobody of their risk tier was "
            "held out"
        )
    return lines


def _stratum_result_line(row) -> str:

    from gymchurn.campaigns import READABLE_HALF_WIDTH, too_small_to_read

    action = row.suggested_action if isinstance(row.suggested_action, str) else "no measure"
    line = (
        f"{row.risk_tier}, segment {row.cluster_id}, {action}: {row.contacted} contacted "
        f"(churn {_format_share(row.churn_rate_contacted)}), {row.held_out} held out "
        f"(churn {_format_share(row.churn_rate_held_out)}); "
        f"{_difference_text(row.difference, row.ci_lower, row.ci_upper)}"
    )
    if row.held_out == 0:
        return line + "; not measured: nobody of this stratum was held out"
    line += f"; about {round(row.clients_kept):,} clients kept"
    if too_small_to_read(row._asdict()):
        if (
            row.min_detectable_effect is None
            or row.min_detectable_effect != row.min_detectable_effect
        ):
            return line + "; too few clients to read: too few clients to detect any effect"
        return line + (
            f"; too few clients to read: the interval is wider than "
            f"+-{100 * READABLE_HALF_WIDTH:.0f} points"
        )
    return line + f"; {_detectable_text(row.min_detectable_effect)}"


@contacts_app.command("results")
def contacts_results(
    month: Annotated[str, typer.Option(help="Scored month whose list was contacted, YYYY-MM.")],
) -> None:
    """Recompute and print the measured effect of the contacts with a month's list.

    First the whole list and each risk tier, compared like with like: the
    contacted clients against held-out clients of the same risk tier, the
    tiers weighted by their contacted clients. Then each stratum
    with contacted clients: the churn rates, the difference (held out minus
    contacted, in percentage points) with its 95 % confidence interval, and
    the clients kept. Strata whose interval is wider than +-20 points, or
    too small to detect any effect, are marked too few clients to read.

    Exit codes: 0 printed; 1 nothing to measure yet (the reason is printed) or
    the database failed; 2 an invalid argument.
    """
    from gymchurn import campaigns

    report_month = _month(month)
    engine = _engine()
    results = campaigns.refresh_month(engine, report_month)
    if results is None:
        with engine.connect() as conn:
            reason = campaigns.missing_reason(conn, report_month)
        raise _fail(reason)
    label = format_month(report_month)
    typer.echo(f"effect of the contacts with the at-risk list of {label}:")
    shown = campaigns.rows_for_reading(results)
    strata = shown[shown["level"] == "stratum"]
    for row in shown[shown["level"] != "stratum"].itertuples():
        for line in _combined_result_lines(row):
            typer.echo(line)
    hidden = int((results["level"] == "stratum").sum()) - len(strata)
    typer.echo(
        f"strata with contacted clients (risk tier, segment, suggested action): {len(strata)}"
        + (f"; {hidden} strata nobody contacted not shown" if hidden else "")
    )
    for row in strata.itertuples():
        typer.echo(f"  {_stratum_result_line(row)}")


def _simulator(
    clients: int,
    seed: int,
    scenario: str,
    scenario_start: dt.date | None,
    from_csv: Path | None,
):
    from gymchurn.loader import CsvFormatError
    from gymchurn.simulation.simulator import ClientSimulator
    from gymchurn.simulation.store import read_starting_snapshot

    snapshot = None
    if from_csv is not None:
        try:
            snapshot = read_starting_snapshot(from_csv)
        except CsvFormatError as err:
            raise _fail(str(err)) from None
    try:
        return ClientSimulator(
            clients,
            seed=seed,
            scenario=scenario,
            scenario_start=scenario_start,
            first_month=None if snapshot is None else snapshot.questionnaires,
            first_outcomes=None if snapshot is None else snapshot.outcomes,
        )
    except ValueError as err:
        raise _fail(str(err), 2) from None


def _simulate_into(engine, simulator, start: dt.date, months: int, replace: bool):
    """Write the simulated months with a progress bar, and print what was written."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from gymchurn import db
    from gymchurn.simulation.store import ExistingDataError, write_simulation

    columns = [
        "simulate {task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        "months",
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(format_month(start), total=months)

        def advance(simulated):
            progress.update(task, advance=1, description=format_month(simulated.month))

        try:
            summary = write_simulation(
                engine, simulator, start, months, replace=replace, on_month=advance
            )
        except ExistingDataError as err:
            raise _fail(str(err)) from None
    for month in summary.months:
        parts = [f"{month['clients']} clients"]
        if month["joined"] is not None:
            parts.append(f"{month['joined']} new")
        if month["leaving"] is None:
            parts.append("outcomes not known yet")
        else:
            parts.append(f"{month['leaving']} leave the month after")
        typer.echo(f"{month['month']}: {', '.join(parts)}")
    replaced = (
        f", {summary.questionnaires_replaced} questionnaires replaced"
        if summary.questionnaires_replaced
        else ""
    )
    typer.echo(
        f"crm.questionnaires: {summary.questionnaires_written} rows written, "
        f"crm.churn_outcomes: {summary.outcomes_written} rows written "
        f"({format_month(summary.first)}..{format_month(summary.last)}{replaced})"
    )
    typer.echo(f"database: {db.describe(engine)}")
    return summary


@app.command("simulate")
def simulate(
    clients: Annotated[int, typer.Option(min=1, help="Clients in the first month.")] = 10_000,
    months: Annotated[int, typer.Option(min=1, help="Monthly snapshots to write.")] = 6,
    start: Annotated[str, typer.Option(metavar="MONTH", help="First month, YYYY-MM.")] = "2026-01",
    from_csv: Annotated[
        Path | None,
        typer.Option(
            help="Questionnaire CSV to start from; its Churn column gives the first "
            "month's outcomes. Default: a first month drawn from the built-in figures.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, help="Random seed; the same seed writes the same rows.")
    ] = 42,
    scenario: Annotated[
        str,
        typer.Option(
            help="steady, price_rise or promo_wave: a change in the business from "
            "--scenario-start on, described in the README."
        ),
    ] = "steady",
    scenario_start: Annotated[
        str | None,
        typer.Option(
            metavar="MONTH",
            help="Month the scenario's change begins, YYYY-MM. Default: the middle month.",
        ),
    ] = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace", help="Overwrite questionnaires and outcomes already in those months."
        ),
    ] = False,
) -> None:
    """Write simulated questionnaires and outcomes of several months into crm.

    The questionnaires go to crm.questionnaires, and the outcomes of every
    month but the last to crm.churn_outcomes.
    """
    from gymchurn.simulation.simulator import add_months

    first = _month(start)
    if scenario == "intervention":
        raise _fail(
            "the intervention scenario needs the monthly job between the months, to know "
            "whom the campaign contacted; it runs through "
            "gymchurn.simulation.campaign.simulate_campaign (see the README), not simulate",
            2,
        )
    if first.year * 12 + first.month - 1 + months > 9999 * 12:
        raise typer.BadParameter(
            f"{months} months from {start} end after 9999-12; use fewer months or an earlier start",
            param_hint="--months",
        )
    last = add_months(first, months - 1)
    change = _month(scenario_start) if scenario_start else add_months(first, months // 2)
    if scenario != "steady" and not first <= change <= last:
        raise typer.BadParameter(
            f"{format_month(change)} is outside the simulated months "
            f"{format_month(first)}..{format_month(last)}",
            param_hint="--scenario-start",
        )
    simulator = _simulator(clients, seed, scenario, change, from_csv)
    if scenario != "steady":
        logger.info(
            "scenario %s from %s: %s",
            scenario,
            format_month(change),
            simulator.scenario.description,
        )
    _simulate_into(_engine(), simulator, first, months, replace)


def _example_value(rule, value) -> str:
    if isinstance(value, tuple) and len(value) == len(rule.columns):
        return ", ".join(
            f"{column} {item!r}" for column, item in zip(rule.columns, value, strict=True)
        )
    return repr(value)


def _example_row(client, lines) -> str:
    if lines is None or client not in lines.index:
        return f"client {client}"
    return f"line {lines[client]} (client {client})"


def _print_validation(report, findings, lines=None) -> bool:
    """Print the failing rules and findings; return True when the batch passes.

    ``lines`` maps client ids to the lines of the file checked, which then
    name the example rows.
    """
    failing = [rule for rule in report.rules if rule.n_failed] if report is not None else []
    for finding in findings:
        typer.echo(f"batch  {finding.severity:<14} {finding.rule}: {finding.message}")
    for rule in failing:
        examples = ", ".join(
            f"{_example_row(client, lines)}: {_example_value(rule, value)}"
            for client, value in rule.examples
        )
        typer.echo(
            f"row    {rule.severity:<14} {rule.rule}: {rule.n_failed} row(s) "
            f"({rule.description}); for example {examples}"
        )
    if report is not None:
        typer.echo(
            f"{report.dataset}: {report.n_rows} rows, {report.n_valid} valid, "
            f"{report.n_quarantined} would be quarantined"
        )
    return not any(finding.severity == "error" for finding in findings)


@app.command("validate")
def validate(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="Questionnaire CSV to check without loading it.", exists=True, dir_okay=False
        ),
    ] = None,
    month: Annotated[
        str | None,
        typer.Option(help="Month in crm.questionnaires to check, YYYY-MM, with the batch rules."),
    ] = None,
    docs: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Folder to write the Data Docs HTML into.")
    ] = None,
) -> None:
    """Check a file or a loaded month against the validation rules; load and score nothing.

    Give either FILE or --month. Exit codes: 0 the batch passes; 1 it would
    stop a run, or the file cannot be read; 2 neither or both of FILE and
    --month, or another invalid argument.
    """
    import datetime as dt

    import numpy as np
    import pandas as pd

    from gymchurn import steps
    from gymchurn.loader import CsvFormatError, read_questionnaire_csv
    from gymchurn.schema import CHURNED, CLIENT_ID, MONTH
    from gymchurn.validation import (
        ROW_NUMBER,
        DataDocsError,
        DataValidationError,
        build_data_docs,
        validate_questionnaires,
    )

    if file is None and month is None:
        raise _fail("give a FILE to check, or --month YYYY-MM for a loaded month", 2)
    if file is not None and month is not None:
        raise _fail("give a FILE or --month YYYY-MM, not both", 2)
    settings = _settings()
    report, findings, error, lines = None, [], None, None
    try:
        if file is not None:
            try:
                loaded = read_questionnaire_csv(file)
            except CsvFormatError as err:
                raise _fail(str(err)) from None
            lines = pd.Series(loaded.lines, index=loaded.questionnaires[CLIENT_ID].to_numpy())
            frame = loaded.questionnaires.assign(**{MONTH: dt.date(2000, 1, 1)})
            if loaded.outcomes is not None:
                frame = frame.merge(loaded.outcomes, on=CLIENT_ID, how="left")
            else:
                frame[CHURNED] = np.nan
            frame[ROW_NUMBER] = np.arange(1, len(frame) + 1)
            report = validate_questionnaires(
                frame,
                dataset=str(file),
                max_invalid_share=settings.max_invalid_share,
                faults=loaded.faults,
                chunk_rows=settings.read_chunk_rows,
            )
        else:
            data = steps.extract(_engine(), _month(month), settings)
            findings, _, report = steps.validate_month(data, settings)
    except DataValidationError as err:
        error = err
        findings = list(getattr(err, "findings", ()))
        report = getattr(err, "report", None)
    except steps.NoDataError as err:
        raise _fail(str(err)) from None
    passes = _print_validation(report, findings, lines) and error is None
    if docs is not None:
        sources = [error] if error is not None else [report]
        try:
            index = build_data_docs(sources, docs)
        except DataDocsError as err:
            raise _fail(str(err)) from None
        typer.echo(f"Data Docs: {index}")
    if error is not None:
        raise _fail(f"the batch would stop a run: {error}")
    if not passes:
        raise typer.Exit(EXIT_FAILED)


# Exit code of `at-risk` for a month without published scores.
EXIT_NO_SCORES = 3


def _at_risk_format(file_format: str | None, output: Path | None) -> str:
    from gymchurn.at_risk import FORMATS

    suffix = output.suffix.lower().lstrip(".") if output is not None else ""
    if file_format is None:
        return suffix if suffix in FORMATS else "csv"
    if file_format not in FORMATS:
        raise _fail(f"invalid --format {file_format!r}: expected {' or '.join(FORMATS)}", 2)
    if suffix in FORMATS and suffix != file_format:
        raise _fail(f"--format {file_format} does not match the --output file {output.name}", 2)
    return file_format


def _output_folder(output: str | None) -> Path | None:
    """Return the folder ``--output`` names, or None when it names a file.

    An existing folder, or a path ending in a separator even when it does not
    exist yet, is a folder; writing the list creates a missing one.
    """
    if output is None:
        return None
    separators = tuple(sep for sep in (os.sep, os.altsep) if sep)
    if output.endswith(separators) or Path(output).is_dir():
        return Path(output)
    return None


@app.command("at-risk")
def at_risk_command(
    month: Annotated[str, typer.Option(help="Scored month, YYYY-MM.")],
    tier: Annotated[str, typer.Option(help="Risk tier to list: high, medium or low.")] = "high",
    cluster: Annotated[
        int | None, typer.Option(help="Keep only the clients of this segment (cluster_id).")
    ] = None,
    min_probability: Annotated[
        float, typer.Option(help="Keep only churn probabilities at or above this, 0 to 1.")
    ] = 0.0,
    limit: Annotated[
        int | None, typer.Option(help="Keep at most this many rows, from the top of the ranking.")
    ] = None,
    file_format: Annotated[
        str | None,
        typer.Option(
            "--format", help="csv or xlsx. Default: the --output file's suffix, else csv."
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            metavar="PATH",
            help="File or folder to write to. Default: at_risk_YYYY-MM.csv in "
            "GYMCHURN_OUTPUT_DIR, with the filters in the name when any is given; a folder, "
            "or a path ending in /, gets that name inside it, and a missing folder is created.",
        ),
    ] = None,
) -> None:
    """Write the month's clients to call, ranked, with a suggested action for each.

    Columns: rank, client_id, churn_probability, risk_tier, cluster_id,
    segment, reasons, suggested_action, has_phone; highest probability first.
    Without filters the rows are those of the view churn.at_risk.

    Exit codes: 0 the file is written (also when the filters leave no rows);
    1 the database or the file could not be reached or written; 2 an invalid
    argument; 3 no published scores for the month.
    """
    from gymchurn import at_risk

    report_month = _month(month)
    try:
        filters = at_risk.AtRiskFilters(tier, cluster, min_probability, limit)
    except ValueError as err:
        raise _fail(str(err), 2) from None
    folder = _output_folder(output)
    output_file = Path(output) if output is not None and folder is None else None
    chosen_format = _at_risk_format(file_format, output_file)
    label = format_month(report_month)
    default_name = at_risk.file_name(report_month, filters, chosen_format)
    if folder is not None:
        path = folder / default_name
    else:
        path = output_file or _settings().output_dir / default_name
    engine = _engine()
    with _status(f"writing the at-risk list of {label} to {path.name}"), engine.connect() as conn:
        if at_risk.count_scores(conn, report_month) == 0:
            from gymchurn import db

            raise _fail(
                f"no published scores for {label} in {db.describe(engine)}; score the month "
                f"first with: gymchurn run --month {label}, or set DATABASE_URL to the "
                "database that has them",
                EXIT_NO_SCORES,
            )
        try:
            n_rows = at_risk.export_at_risk(conn, report_month, filters, path, chosen_format)
        except OSError as err:
            # The list is written to a temporary file beside it first, which
            # may be the file the system refused.
            where = f" ({err.filename})" if err.filename and Path(err.filename) != path else ""
            raise _fail(
                f"cannot write {path}: {err.strerror or err}{where}; give --output a file in a "
                "folder you may write to"
            ) from None
    if n_rows == 0:
        typer.echo(f"{label}: no clients match the filters ({filters.describe()})", err=True)
    typer.echo(f"{label}: {n_rows} rows ({filters.describe()}) written to {path.resolve()}")


# The signal the job process gets for each signal `run` forwards. Prefect
# swaps its own handler in for SIGTERM during a flow run and re-sends the
# signal afterwards, which can land in the middle of recording the failure,
# so SIGTERM travels as SIGUSR1, which Prefect leaves alone.
_FORWARDED_AS = {signal.SIGINT: signal.SIGINT, signal.SIGTERM: signal.SIGUSR1}


def _stop_on_signal(signum, frame):
    # Raising lets the flow record the failure and Prefect stop its temporary
    # server. The name is kept because an interrupt inside Prefect's own code
    # can come out as another exception.
    if _importing(frame):
        # Raised inside the import system, the interrupt can leave Python's
        # import lock held, and every other thread that imports then waits
        # for ever. The signal is sent again once the import is likely over.
        threading.Timer(0.2, os.kill, (os.getpid(), signum)).start()
        return
    name = "SIGTERM" if signum == signal.SIGUSR1 else signal.Signals(signum).name
    runtime.received_signals.append(name)
    raise KeyboardInterrupt(f"stopped by signal {name}")


@contextlib.contextmanager
def _stopped_by_signals():
    """Turn SIGINT and SIGTERM into KeyboardInterrupt while the block runs.

    A command stopped this way unwinds: its transaction is rolled back and an
    embedded PostgreSQL it started is stopped. The signals received are
    forgotten at the end, so that a monthly run later in the same process
    does not take them for its own.
    """
    n_received = len(runtime.received_signals)
    previous = {signum: signal.signal(signum, _stop_on_signal) for signum in _FORWARDED_AS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        del runtime.received_signals[n_received:]


def _importing(frame) -> bool:
    """Return whether ``frame`` or a caller of it runs code of Python's import system."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


# Environment variables of the job process that `run` starts: a flag set to
# "1", and the process ID of `run`, whose exit stops the job process.
_JOB_PROCESS = "GYMCHURN_JOB_PROCESS"
_JOB_PARENT = "GYMCHURN_JOB_PARENT"


def _run_in_own_session(
    labels: list[str],
    retrain: str = "auto",
    task_runner: str = "default",
    dask_address: str | None = None,
) -> int:
    """Run the months in a child process with a session of its own.

    Ctrl-C in a terminal signals the whole foreground process group, Prefect's
    temporary server included, which would then stop before the flow could
    record its failure. The child and its server get a new session, and this
    process forwards SIGINT and SIGTERM to the child alone.

    Returns:
        The exit code for this process: the child's, or 130 when a signal
        stopped a run that then failed.
    """
    command = [sys.executable, "-m", "gymchurn.cli", "run", "--retrain", retrain]
    command += ["--task-runner", task_runner]
    if dask_address:
        command += ["--dask-address", dask_address]
    for label in labels:
        command += ["--month", label]
    env = {**os.environ, _JOB_PROCESS: "1", _JOB_PARENT: str(os.getpid())}
    child = subprocess.Popen(command, env=env, start_new_session=True)
    forwarded = []

    def forward(signum, frame):
        forwarded.append(signal.Signals(signum).name)
        child.send_signal(_FORWARDED_AS[signum])

    previous = {signum: signal.signal(signum, forward) for signum in _FORWARDED_AS}
    try:
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if forwarded and code == 0:
        typer.echo(
            f"note: {forwarded[0]} came after every month was published; nothing was stopped",
            err=True,
        )
    if forwarded and code != 0:
        # A job process that exits with 130 has printed the reason itself.
        if code != 130:
            typer.echo(f"error: run for {', '.join(labels)} stopped by {forwarded[0]}", err=True)
        return 130
    if code < 0:
        return _job_killed(labels, child.pid, signal.Signals(-code).name)
    return code


def _job_killed(labels: list[str], session: int, name: str) -> int:
    """Report a job process killed by a signal it could not handle, and stop what it started.

    Its temporary Prefect server shares its session and would otherwise run
    on. The embedded PostgreSQL is not in it: pg_ctl starts the server in a
    session of its own.
    """
    try:
        os.killpg(session, signal.SIGTERM)
    except ProcessLookupError:
        pass
    typer.echo(
        f"error: the job process for {', '.join(labels)} was killed by {name}, perhaps by "
        "the system for want of memory; a month whose publish had not committed keeps its "
        "earlier rows, and the next run marks the unfinished run abandoned; run the month again",
        err=True,
    )
    return 128 + signal.Signals[name].value


# A Dask scheduler's address: an optional protocol, a host name or an IP
# address (IPv6 in brackets), and a port.
_DASK_ADDRESS = re.compile(r"(?:[a-z][a-z0-9+.-]*://)?(?:\[[0-9A-Fa-f:.]+\]|[\w.-]+):\d{1,5}")


@app.command("run")
def run(
    month: Annotated[
        list[str] | None,
        typer.Option(
            help="Month to score, YYYY-MM; repeat to score several months in the order "
            "given (the run stops at the first month that fails). Default: the month before "
            "today in the business timezone."
        ),
    ] = None,
    retrain: Annotated[
        str,
        typer.Option(
            help="auto: train a challenger when there is no champion, a new labelled month, "
            "drift or a falling realised ROC-AUC; always; never: load the champion."
        ),
    ] = "auto",
    task_runner: Annotated[
        str,
        typer.Option(
            help="default: score and segment the chunks of clients in threads of this "
            "process; dask: on a Dask cluster, the one at --dask-address or a local one."
        ),
    ] = "default",
    dask_address: Annotated[
        str | None,
        typer.Option(
            help="Address of the Dask scheduler for --task-runner dask, such as "
            "tcp://10.0.0.5:8786. Default: a local cluster of threads."
        ),
    ] = None,
) -> None:
    """Run the monthly scoring flow for one month, or for several in turn.

    Exit codes: 0 published; 1 the run failed, and the reason is printed and
    kept in churn.runs; 2 an invalid argument or setting; 130 stopped by
    Ctrl-C or SIGTERM; 137 the job process was killed. The README explains
    each case.
    """
    settings = _settings()
    if not month:
        run_months = [previous_month(settings.timezone)]
    else:
        run_months = [_begun_month(text) for text in month]
    labels = [format_month(m) for m in run_months]
    if retrain not in ("auto", "always", "never"):
        raise _fail(f"invalid --retrain {retrain!r}: expected auto, always or never", 2)
    if task_runner not in ("default", "dask"):
        raise _fail(f"invalid --task-runner {task_runner!r}: expected default or dask", 2)
    if dask_address and task_runner != "dask":
        raise _fail("--dask-address needs --task-runner dask", 2)
    if dask_address and not _DASK_ADDRESS.fullmatch(dask_address):
        raise _fail(
            f"invalid --dask-address {dask_address!r}: expected the address of a Dask "
            "scheduler, such as tcp://10.0.0.5:8786",
            2,
        )
    if dask_address and not os.environ.get("PREFECT_API_URL"):
        # Without it the job starts a temporary Prefect server on 127.0.0.1,
        # which workers on other machines cannot reach.
        raise _fail(
            "--dask-address needs PREFECT_API_URL: the address of a Prefect server that "
            "the Dask workers can reach too, such as http://10.0.0.4:4200/api "
            "(start one with: prefect server start --host ADDRESS)",
            2,
        )
    if os.environ.get(_JOB_PROCESS) != "1":
        # Until the job process starts, a stop exits with code 130, as it would
        # later. Python's exit handlers then run, so an embedded PostgreSQL that
        # this process started and that is up is stopped.
        for signum in _FORWARDED_AS:
            signal.signal(signum, _stop_on_signal)
        try:
            # A bad measures file or database URL gives one line here, before
            # any Prefect start. The job process's flow upgrades the schema.
            _check_measures(settings)
            _engine()
        except KeyboardInterrupt as err:
            raise _fail(
                f"{err or 'stopped by Ctrl-C'} before the run started; no month was scored", 130
            ) from None
        raise typer.Exit(_run_in_own_session(labels, retrain, task_runner, dask_address))

    # Set each: a job started in the background by a shell inherits an ignored
    # SIGINT, and SIGTERM also comes straight to this process when a
    # supervisor signals it rather than its parent.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, _stop_on_signal)
    parent = os.environ.get(_JOB_PARENT)
    if parent:
        # `run` killed outright stops its job too, as SIGTERM would.
        runtime.stop_with_parent(signal.SIGUSR1, int(parent))
    for position, label in enumerate(labels[:-1]):
        try:
            summary = _run_month(label, retrain, task_runner, dask_address)
        except typer.Exit:
            later = labels[position + 1 :]
            typer.echo(
                f"error: {', '.join(later)} not run, because the run stops at the first "
                f"month that fails or is stopped. Once {label} is scored, run them with: "
                "gymchurn run " + " ".join(f"--month {m}" for m in later),
                err=True,
            )
            raise
        typer.echo(_run_summary(summary))
    last = _run_month(labels[-1], retrain, task_runner, dask_address)
    # Every month is published: a signal now has nothing left to stop. The
    # signals are ignored rather than handled: while Prefect stopped its
    # temporary server at exit, a signal ended the process by its default
    # action although a Python handler was set.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)
    typer.echo(_run_summary(last))


def _run_month(
    label: str, retrain: str, task_runner: str = "default", dask_address: str | None = None
) -> dict:
    try:
        # Inside the try: importing Prefect takes seconds, and a stop then
        # gets the same message as one during the run.
        from flows.monthly_scoring import with_task_runner

        runtime.quiet_run_console()
        monthly_scoring = with_task_runner(task_runner, dask_address)
        return monthly_scoring(month=label, retrain=retrain)
    except BaseException as err:
        if isinstance(err, typer.Exit):
            raise
        if label in runtime.published_before_stop:
            if isinstance(err, KeyboardInterrupt) or runtime.received_signals:
                raise _fail(
                    f"run for {label} stopped after its scores were published; if "
                    f"at_risk_{label}.csv is missing, run the month again",
                    130,
                ) from None
            raise _fail(
                f"run for {label} failed after its scores were published: {err}; the "
                f"report or at_risk_{label}.csv may be missing: run the month again"
            ) from None
        if isinstance(err, KeyboardInterrupt):
            reason = str(err) or "Ctrl-C"
            raise _fail(
                f"run for {label} interrupted ({reason}); its published rows are as before", 130
            ) from None
        if not isinstance(err, Exception):
            raise
        # A run that got as far as the database is in churn.runs.
        if runtime.received_signals:
            stopped = f"run for {label} interrupted ({runtime.received_signals[0]})"
            raise _fail(f"{stopped}; its published rows are as before", 130) from None
        raise _fail(f"run for {label} failed: {err}") from None


@app.command("demo")
def demo(
    clients: Annotated[int, typer.Option(min=1, help="Simulated clients.")] = 10_000,
    months: Annotated[int, typer.Option(min=1, help="Months to simulate and score.")] = 6,
    start: Annotated[str, typer.Option(metavar="MONTH", help="First month, YYYY-MM.")] = "2026-01",
    seed: Annotated[int, typer.Option(min=0, help="Random seed of the simulation.")] = 42,
) -> None:
    """Simulate a chain's clients and run the monthly job on each month in turn.

    The demo keeps its own embedded database, models and exports in a
    subfolder named demo of the usual folders, so its clients never mix with
    real ones, even when DATABASE_URL is set.
    """
    from gymchurn.simulation.simulator import add_months

    # Before the environment changes below, which a rejected --start must not leave behind.
    first = _month(start)
    settings = _settings()
    _check_measures(settings)
    demo_home = settings.home / "demo"
    if settings.database_url is not None:
        logger.info("demo: DATABASE_URL is not used; the demo has its own database")
    os.environ.pop("DATABASE_URL", None)
    os.environ["GYMCHURN_HOME"] = str(demo_home)
    os.environ["GYMCHURN_MODEL_DIR"] = str(settings.model_dir / "demo")
    os.environ["GYMCHURN_OUTPUT_DIR"] = str(settings.output_dir / "demo")
    get_settings.cache_clear()

    engine = _engine()
    simulator = _simulator(clients, seed, "steady", None, None)
    _simulate_into(engine, simulator, first, months, replace=True)
    labels = [format_month(add_months(first, index)) for index in range(months)]
    code = _run_in_own_session(labels)
    if code != 0:
        raise typer.Exit(code)
    _print_demo_summary(engine, first, add_months(first, months - 1))


@app.command("serve")
def serve() -> None:
    """Schedule the monthly run on a Prefect server and run it, until stopped.

    Registers the deployment monthly_scoring/monthly-scoring with the cron
    0 6 1 * * in GYMCHURN_TIMEZONE against the server in PREFECT_API_URL.
    Then runs each of its flow runs in a child process. A scheduled run scores
    the month just ended, and a run started by hand may name a month. Stop it
    with Ctrl-C or SIGTERM. The schedule stays active while it is stopped.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    settings = _settings()
    _check_measures(settings)
    api_url = PREFECT_API_URL.value()
    if not api_url:
        raise _fail(
            "PREFECT_API_URL is not set: a schedule needs a running Prefect server, and "
            "the temporary one Prefect starts on its own stops with this process. Start "
            "one with `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api",
            2,
        )
    with get_client(sync_client=True) as client:
        error = client.api_healthcheck()
    if error is not None:
        raise _fail(f"cannot reach the Prefect server at PREFECT_API_URL={api_url}: {error}")
    _engine()

    from flows.deployment import serve_monthly_scoring

    logger.info(
        "serving monthly_scoring/monthly-scoring on %s, schedule in %s",
        api_url,
        settings.timezone,
    )
    serve_monthly_scoring(settings.timezone)


def _print_demo_summary(engine, first: dt.date, last: dt.date) -> None:
    import pandas as pd

    from gymchurn import db

    with engine.connect() as conn:
        runs = db.read_frame(conn, "published_runs_between", {"first": first, "last": last})
        at_risk = db.read_frame(conn, "at_risk_for_month", {"month": last})
    typer.echo(f"\nat-risk list of {format_month(last)}: {len(at_risk)} clients, the first 10:")
    head = at_risk.head(10)[["rank", "client_id", "churn_probability", "cluster_id"]]
    typer.echo(head.to_string(index=False, float_format="{:.4f}".format))
    typer.echo("\nmodels:")
    for row in runs.itertuples():
        auc = (
            ""
            if pd.isna(row.realised_roc_auc)
            else f", realised ROC-AUC {row.realised_roc_auc:.3f}"
        )
        typer.echo(
            f"{row.month[:7]}: {row.mode}, {row.version} ({row.algorithm}, "
            f"trained on {row.training_rows} rows){auc}"
        )
    typer.echo("\nwritten:")
    typer.echo(f"database: {db.describe(engine)} (tables churn.scores, churn.clusters, churn.runs)")
    typer.echo(f"models: {Path(runs['artifact_path'].iloc[-1]).parent.resolve()}")
    for path in runs["at_risk_path"]:
        typer.echo(f"at-risk list: {Path(path).resolve()}")
    for path in runs["report_path"].dropna():
        typer.echo(f"report: {Path(path).resolve()}")


def _run_summary(result: dict) -> str:
    auc = result["realised_roc_auc"]
    held_out = f"{result['held_out']} client" + ("" if result["held_out"] == 1 else "s")
    model = f"{result['mode']}, {result['model_decision']} {result['model_version']}"
    if auc is not None:
        model += f", realised ROC-AUC {auc:.4f}"
    return (
        f"{result['month']}: {result['rows_read']} read, {result['rows_scored']} scored, "
        f"{result['rows_quarantined']} quarantined ({model})\n"
        f"model choice: {result['decision_reason']}\n"
        f"tables: churn.scores, churn.clusters, churn.feature_influence, "
        f"churn.recommendations, churn.findings, churn.runs (run {result['run_id']})\n"
        f"at-risk list: {Path(result['at_risk_path']).resolve()} "
        f"({held_out} held out as the control group)\n"
        f"report: {Path(result['report_path']).resolve()}"
    )


def run_cli() -> None:
    """Run the command line; a database permission error ends in one line, not a traceback."""
    import psycopg
    from sqlalchemy.exc import DBAPIError

    try:
        app()
    except DBAPIError as err:
        if not isinstance(err.orig, psycopg.errors.InsufficientPrivilege):
            raise
        reason = str(err.orig).strip().splitlines()[0]
        typer.echo(
            f"error: the database role may not do this: {reason}; loading questionnaires "
            "and gymchurn db upgrade need the schema owner's login, scoring needs a login "
            "in churn_job",
            err=True,
        )
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    run_cli()
