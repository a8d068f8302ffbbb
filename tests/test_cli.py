"""Tests of the gymchurn command line against a real database.

The ``database`` fixture sets DATABASE_URL, which the commands read.
"""

import contextlib
import datetime as dt
import json
import logging
import os
import signal
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from gymchurn import db, runtime
from gymchurn.cli import app
from gymchurn.settings import get_settings
from tests.conftest import CASES

runner = CliRunner()


@contextlib.contextmanager
def _restored_package_logger():
    """Restore the ``gymchurn`` logger on exit.

    Every command adds a handler bound to the current ``sys.stderr``, which
    CliRunner closes when the command ends, and turns off propagation, which
    would hide the package's records from ``caplog`` in later tests.
    """
    logger = logging.getLogger("gymchurn")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    try:
        yield
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def _invoke(*args: str):
    with _restored_package_logger():
        return runner.invoke(app, list(args))


def _count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_load_csv_real_file(database, real_data):
    result = _invoke("load-csv", str(real_data), "--month", "2026-10")

    assert result.exit_code == 0, result.output
    assert "4000 rows for 2026-10" in result.stdout
    assert "questionnaires: 4000 new, 0 changed" in result.stdout
    assert "outcomes: 4000 new, 0 changed" in result.stdout
    assert _count(database, "crm.questionnaires") == 4000
    assert _count(database, "crm.churn_outcomes") == 4000


def test_load_csv_stopped_by_sigterm_writes_nothing(database, real_data, monkeypatch):
    from gymchurn import loader

    monkeypatch.setattr(loader, "READ_CHUNK_RECORDS", 500)
    add_questionnaires = loader._Staging.add_questionnaires
    chunks = []

    def signalled_after_first_chunk(self, lines, numbers):
        chunks.append(len(lines))
        if len(chunks) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        add_questionnaires(self, lines, numbers)

    monkeypatch.setattr(loader._Staging, "add_questionnaires", signalled_after_first_chunk)
    handler = signal.getsignal(signal.SIGTERM)

    result = _invoke("load-csv", str(real_data), "--month", "2026-10")

    assert result.exit_code == 130
    assert "stopped by signal SIGTERM; nothing was loaded into 2026-10" in result.stderr
    assert chunks == [500, 500]
    assert _count(database, "crm.questionnaires") == 0
    assert signal.getsignal(signal.SIGTERM) is handler
    # A monthly run later in this process would stop on a signal left recorded.
    assert runtime.received_signals == []


def test_load_csv_second_time_unchanged(database):
    path = str(CASES / "00_clean_reference.csv")
    _invoke("load-csv", path, "--month", "2026-10")

    result = _invoke("load-csv", path, "--month", "2026-10")

    assert result.exit_code == 0, result.output
    assert "20 rows for 2026-10; questionnaires: 0 new, 0 changed" in result.stdout
    assert _count(database, "crm.questionnaires") == 20


def test_load_csv_warns_of_scored_month(database):
    path = str(CASES / "00_clean_reference.csv")
    _invoke("load-csv", path, "--month", "2026-10")
    with database.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO churn.runs (run_id, month, status, started_at)"
                " VALUES (gen_random_uuid(), '2026-10-01', 'succeeded', now())"
            )
        )

    same = _invoke("load-csv", path, "--month", "2026-10")
    changed = _invoke(
        "load-csv", str(CASES / "03_age_out_of_range.csv"), "--month", "2026-10", "--replace"
    )

    assert same.exit_code == 0, same.output
    assert "was scored before" not in same.stderr
    assert changed.exit_code == 0, changed.output
    message = " ".join(changed.stderr.split())
    assert "2026-10 was scored before this load changed its questionnaires" in message
    assert "score it again with: gymchurn run --month 2026-10" in message


@pytest.mark.parametrize("month", ["2026-13", "2026-11'; drop table churn.scores; --"])
def test_load_csv_invalid_month(database, month):
    path = str(CASES / "00_clean_reference.csv")
    _invoke("load-csv", path, "--month", "2026-10")

    result = _invoke("load-csv", path, "--month", month)

    assert result.exit_code == 2
    assert "invalid month" in result.stderr
    assert result.stdout == ""
    assert _count(database, "crm.questionnaires") == 20
    # The table named in the month text is still there.
    assert _count(database, "churn.scores") == 0


@pytest.mark.parametrize("command", ["load-csv", "run"])
def test_future_month_rejected(database, command):
    timezone = get_settings().timezone
    today = dt.datetime.now(ZoneInfo(timezone)).date()
    next_month = (today.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    label = f"{next_month:%Y-%m}"
    file = [str(CASES / "00_clean_reference.csv")] if command == "load-csv" else []

    result = _invoke(command, *file, "--month", label)

    assert result.exit_code == 2
    # The error box wraps the message: its borders and line breaks are removed.
    message = " ".join(result.stderr.replace("│", " ").split())
    assert f"invalid month {label}: it has not begun (today is {today} in {timezone})" in message
    assert _count(database, "crm.questionnaires") == 0
    assert _count(database, "churn.runs") == 0


def test_load_csv_missing_column(database):
    path = str(CASES / "08_missing_column.csv")

    result = _invoke("load-csv", path, "--month", "2026-10")

    assert result.exit_code == 1
    assert "missing column(s) Avg_class_frequency_current_month;" in result.stderr
    assert result.stdout == ""
    assert _count(database, "crm.questionnaires") == 0
    assert _count(database, "crm.churn_outcomes") == 0


def test_load_csv_logs_ignored_columns(database):
    path = str(CASES / "09_extra_unknown_columns.csv")

    result = _invoke("load-csv", path, "--month", "2026-10")

    assert result.exit_code == 0, result.output
    expected = "ignored column(s) gender-label, Churn_label, Total_Frequency"
    assert expected in result.stderr
    # member_id is the client key when there is no client_id column.
    assert "clients numbered" not in result.stderr
    assert "column 'member_id' read as client_id, the client key" in result.stderr
    assert _count(database, "crm.questionnaires") == 20


def test_load_csv_second_call_logs_cleanly(database):
    path = str(CASES / "09_extra_unknown_columns.csv")

    # The logger is restored only after both calls, as in a process that runs app() twice.
    with _restored_package_logger():
        runner.invoke(app, ["load-csv", path, "--month", "2026-10"])
        result = runner.invoke(app, ["load-csv", path, "--month", "2026-11"])

    assert result.exit_code == 0, result.output
    assert "Logging error" not in result.stderr
    assert result.stderr.count("ignored column(s) gender-label") == 1


def test_load_csv_file_not_found(database, tmp_path):
    path = tmp_path / "absent.csv"

    result = _invoke("load-csv", str(path), "--month", "2026-10")

    # A missing file is a bad argument, like a bad month.
    assert result.exit_code == 2
    # The error box wraps long paths at the terminal's width.
    words = " ".join(result.stderr.replace("│", " ").split())
    assert "does not exist" in words


def test_db_upgrade_creates_schemas(database):
    with database.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA churn, crm CASCADE")

    result = _invoke("db", "upgrade")

    assert result.exit_code == 0, result.output
    assert f"({len(db.migration_files())} files applied)" in result.stdout
    assert _count(database, "crm.questionnaires") == 0
    assert _count(database, "churn.scores") == 0


def test_db_upgrade_repeat_keeps_rows(database):
    _invoke("load-csv", str(CASES / "00_clean_reference.csv"), "--month", "2026-10")

    result = _invoke("db", "upgrade")

    assert result.exit_code == 0, result.output
    assert "schema up to date on postgresql" in result.stdout
    assert _count(database, "crm.questionnaires") == 20


def test_load_csv_numbered_rows_conflict_exits_1(database, tmp_path):
    reference = CASES / "00_clean_reference.csv"
    shorter = tmp_path / "shorter.csv"
    shorter.write_text("\n".join(reference.read_text().splitlines()[:-1]) + "\n")
    assert _invoke("load-csv", str(reference), "--month", "2026-10").exit_code == 0

    result = _invoke("load-csv", str(shorter), "--month", "2026-10")

    assert result.exit_code == 1
    assert "--replace" in result.stderr
    assert _count(database, "crm.questionnaires") == 20


def test_load_csv_replace_prints_replaced_rows(database, tmp_path):
    reference = CASES / "00_clean_reference.csv"
    shorter = tmp_path / "shorter.csv"
    shorter.write_text("\n".join(reference.read_text().splitlines()[:-1]) + "\n")
    assert _invoke("load-csv", str(reference), "--month", "2026-10").exit_code == 0

    result = _invoke("load-csv", str(shorter), "--month", "2026-10", "--replace")

    assert result.exit_code == 0, result.output
    assert "questionnaires: 19 new, 0 changed (20 deleted first by --replace)" in result.stdout
    assert "outcomes: 19 new, 0 changed (20 deleted first by --replace)" in result.stdout
    assert _count(database, "crm.questionnaires") == 19


def test_load_csv_unknown_label_prints_removed_outcome(database, tmp_path):
    frame = pd.read_csv(CASES / "00_clean_reference.csv", dtype=str, keep_default_na=False)
    frame.insert(0, "client_id", [str(100 + i) for i in range(1, len(frame) + 1)])
    reference = tmp_path / "ids.csv"
    frame.to_csv(reference, index=False)
    frame.loc[4, "Churn"] = "maybe"
    unknown = tmp_path / "unknown.csv"
    frame.to_csv(unknown, index=False)
    assert _invoke("load-csv", str(reference), "--month", "2026-10").exit_code == 0

    result = _invoke("load-csv", str(unknown), "--month", "2026-10")

    assert result.exit_code == 0, result.output
    assert "outcomes: 0 new, 0 changed, 1 removed for an unknown label" in result.stdout
    assert _count(database, "crm.churn_outcomes") == 19


def test_cli_rejects_non_postgres_url(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql://user:S3cretXYZ@127.0.0.1/db")
    get_settings.cache_clear()

    result = _invoke("db", "upgrade")

    get_settings.cache_clear()
    assert result.exit_code == 2
    assert "is not a PostgreSQL URL" in result.stderr
    assert "S3cretXYZ" not in result.output


def test_cli_unreachable_database_exits_1(monkeypatch, real_data):
    # Port 9 on the loopback address: nothing listens there.
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:S3cretXYZ@127.0.0.1:9/db")
    get_settings.cache_clear()

    result = _invoke("load-csv", str(real_data), "--month", "2026-10")

    get_settings.cache_clear()
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith("error: cannot connect to the database")
    assert "Traceback" not in result.stderr
    assert "S3cretXYZ" not in result.output


def test_cli_missing_database_not_retried(monkeypatch, server_url, real_data):
    missing = server_url.set(database="missing_gymchurn_database")
    monkeypatch.setenv("DATABASE_URL", missing.render_as_string(hide_password=False))
    # A retry would log "retrying" and wait 30 s.
    monkeypatch.setenv("GYMCHURN_DB_RETRY_SECONDS", "[30]")
    get_settings.cache_clear()

    result = _invoke("load-csv", str(real_data), "--month", "2026-10")

    get_settings.cache_clear()
    assert result.exit_code == 1
    last_line = result.stderr.splitlines()[-1]
    assert last_line.startswith("error: the database server rejected the connection")
    assert 'database "missing_gymchurn_database" does not exist' in last_line
    assert "create the database" in last_line
    assert "retrying" not in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_invalid_timezone_exits_2(monkeypatch):
    monkeypatch.setenv("GYMCHURN_TIMEZONE", "Mars/Olympus")
    get_settings.cache_clear()

    result = _invoke("run")

    get_settings.cache_clear()
    assert result.exit_code == 2
    assert "GYMCHURN_TIMEZONE='Mars/Olympus'" in result.stderr
    assert "unknown time zone" in result.stderr


def test_models_evaluate_real_file_json(real_data, tmp_path):
    plot = tmp_path / "reliability.png"

    result = _invoke("models", "evaluate", "--csv", str(real_data), "--json", "--plot", str(plot))

    assert result.exit_code == 0, result.output
    table = {row["candidate"]: row for row in json.loads(result.stdout)}
    assert set(table) == {"logistic_regression", "random_forest", "hist_gradient_boosting"}
    best = max(row["roc_auc"] for row in table.values())
    assert best >= 0.985
    assert min(row["brier"] for row in table.values()) <= 0.035
    assert all(row["ece"] < 0.03 for row in table.values())
    assert plot.stat().st_size > 10_000


def test_models_evaluate_without_churn_rejected(tmp_path, real_data):
    unlabelled = tmp_path / "unlabelled.csv"
    pd.read_csv(real_data).drop(columns="Churn").head(50).to_csv(unlabelled, index=False)

    result = _invoke("models", "evaluate", "--csv", str(unlabelled))

    assert result.exit_code == 1
    assert "no Churn column" in result.output


def test_models_evaluate_missing_column_rejected():
    result = _invoke("models", "evaluate", "--csv", str(CASES / "08_missing_column.csv"))

    assert result.exit_code == 1
    assert "avg_class_frequency_current_month" in result.output.lower()


@pytest.mark.parametrize(
    ("variable", "example"),
    [
        ("GYMCHURN_DRIFT_FEATURES", 'GYMCHURN_DRIFT_FEATURES=\'["contract_period", "age"'),
        ("GYMCHURN_DB_RETRY_SECONDS", "GYMCHURN_DB_RETRY_SECONDS='[2.0, 5.0, 10.0]'"),
    ],
)
def test_list_setting_not_json_rejected(monkeypatch, variable, example):
    monkeypatch.setenv(variable, "not json")
    get_settings.cache_clear()

    result = _invoke("models", "list")

    get_settings.cache_clear()
    assert result.exit_code == 2
    assert f"invalid setting {variable}='not json': not a JSON list" in result.output
    assert example in result.output
    assert "Traceback" not in result.output


def test_models_evaluate_leaves_out_quarantined(tmp_path, real_data):
    rows = pd.read_csv(real_data)
    rows.loc[:99, "Age"] = 240
    damaged = tmp_path / "damaged.csv"
    rows.to_csv(damaged, index=False)

    result = _invoke("models", "evaluate", "--csv", str(damaged))

    assert result.exit_code == 0, result.output
    assert "3900 labelled rows" in result.stdout
    assert "100 quarantined by the row rules" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("GYMCHURN_ROW_COUNT_ERROR_BAND", "[2.0, 0.5]", "0 <= low < high"),
        (
            "GYMCHURN_RISK_HIGH_THRESHOLD",
            "abc",
            "GYMCHURN_RISK_HIGH_THRESHOLD='abc': Input should be a valid number",
        ),
    ],
)
def test_invalid_setting_rejected(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()

    result = _invoke("models", "list")

    get_settings.cache_clear()
    assert result.exit_code == 2
    assert message in result.output


def test_validate_without_arguments_rejected():
    result = _invoke("validate")

    assert result.exit_code == 2
    assert "give a FILE to check, or --month" in result.output


def test_validate_file_names_lines_of_failing_rows(tmp_path):
    # Client ids 101.. on lines 2..; a blank line shifts the later rows by one.
    frame = pd.read_csv(CASES / "03_age_out_of_range.csv", dtype=str, keep_default_na=False)
    frame.insert(0, "client_id", [str(100 + i) for i in range(1, len(frame) + 1)])
    text = frame.to_csv(index=False).splitlines()
    path = tmp_path / "ids.csv"
    path.write_text("\n".join([*text[:5], "", *text[5:]]) + "\n", encoding="utf-8")

    result = _invoke("validate", str(path))

    assert result.exit_code == 0, result.output
    assert "for example line 4 (client 103): -3, line 10 (client 108): 240" in result.stdout


def test_validate_file_writes_data_docs(tmp_path):
    case = CASES / "04_month_to_end_gt_contract.csv"

    result = _invoke("validate", str(case), "--docs", str(tmp_path / "docs"))

    assert result.exit_code == 0, result.output
    assert f"Data Docs: {tmp_path / 'docs' / 'index.html'}" in result.stdout
    pages = list((tmp_path / "docs" / "validations").rglob("*.html"))
    assert len(pages) == 2
    assert {page.parent.parent.name for page in pages} == {case.name}
    assert "Traceback" not in result.output


def test_validate_docs_path_is_file(tmp_path):
    case = CASES / "00_clean_reference.csv"
    regular_file = tmp_path / "regular_file"
    regular_file.write_text("not a folder\n")

    result = _invoke("validate", str(case), "--docs", str(regular_file))

    assert result.exit_code == 1
    assert f"error: cannot write Data Docs to {regular_file}: Not a directory" in result.output
    assert "give a folder" in result.output
    assert "Traceback" not in result.output
    assert regular_file.read_text() == "not a folder\n"


def _command_paths(group, prefix=()) -> list[tuple[str, ...]]:
    paths = []
    for name, command in group.commands.items():
        paths.append((*prefix, name))
        if hasattr(command, "commands"):
            paths += _command_paths(command, (*prefix, name))
    return paths


def test_help_has_no_docstring_markup():
    import typer

    paths = _command_paths(typer.main.get_command(app))
    assert ("demo",) in paths
    assert ("models", "promote") in paths
    for path in paths:
        result = _invoke(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        for markup in ("``", ":func:", ":mod:", ":class:", ":data:"):
            assert markup not in result.stdout, (path, markup)


def test_status_spinner_only_on_terminal(monkeypatch):
    from rich.status import Status

    from gymchurn.cli import _status

    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    assert not isinstance(_status("reading"), Status)
    # Rich treats the console as a terminal when FORCE_COLOR is set.
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert isinstance(_status("reading"), Status)


def test_cli_run_invalid_task_runner_exits_2():
    result = _invoke("run", "--month", "2026-10", "--task-runner", "ray")

    assert result.exit_code == 2
    assert "invalid --task-runner 'ray'" in result.stderr
    assert "expected default or dask" in result.stderr


def test_cli_run_dask_address_needs_dask_runner():
    result = _invoke("run", "--month", "2026-10", "--dask-address", "tcp://127.0.0.1:8786")

    assert result.exit_code == 2
    assert "--dask-address needs --task-runner dask" in result.stderr


@pytest.mark.parametrize("address", ["not-an-address", "tcp://10.0.0.5", "http://:8786"])
def test_cli_run_rejects_malformed_dask_address(address):
    result = _invoke(
        "run", "--month", "2026-10", "--task-runner", "dask", "--dask-address", address
    )

    assert result.exit_code == 2
    assert f"invalid --dask-address {address!r}" in result.stderr


def test_cli_run_dask_address_needs_prefect_api_url(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = _invoke(
        "run",
        "--month",
        "2026-10",
        "--task-runner",
        "dask",
        "--dask-address",
        "tcp://127.0.0.1:8786",
    )

    assert result.exit_code == 2
    assert "--dask-address needs PREFECT_API_URL" in result.stderr


@pytest.mark.parametrize(("held_out", "words"), [(1, "1 client"), (114, "114 clients")])
def test_run_summary_counts_held_out(held_out, words):
    from gymchurn.cli import _run_summary

    result = {
        "month": "2026-10",
        "rows_read": 20,
        "rows_scored": 18,
        "rows_quarantined": 2,
        "mode": "forward",
        "model_decision": "loaded champion",
        "model_version": "v202609-0123456789",
        "realised_roc_auc": None,
        "decision_reason": "champion kept",
        "run_id": "0320a4eb",
        "at_risk_path": "at_risk_2026-10.csv",
        "report_path": "report_2026-10.html",
        "held_out": held_out,
    }

    summary = _run_summary(result)

    assert f"({words} held out as the control group)" in summary
    assert "20 read, 18 scored, 2 quarantined" in summary


def test_run_failed_month_names_skipped_months(monkeypatch):
    from gymchurn import cli

    started = []

    def failing_first(label, *args):
        started.append(label)
        raise cli._fail(f"run for {label} failed: no questionnaires")

    monkeypatch.setenv("GYMCHURN_JOB_PROCESS", "1")
    monkeypatch.setattr(cli, "_run_month", failing_first)
    # The command sets handlers for the job's signals, which the test process keeps otherwise.
    monkeypatch.setattr(cli.signal, "signal", lambda *args: None)

    result = _invoke("run", "--month", "2026-10", "--month", "2026-11", "--month", "2026-12")

    assert result.exit_code == 1
    assert started == ["2026-10"]
    assert "error: 2026-11, 2026-12 not run, because the run stops at the first month" in (
        result.stderr
    )
    assert "gymchurn run --month 2026-11 --month 2026-12" in result.stderr


@pytest.mark.parametrize("threads", ["0", "abc", "-1", ""])
def test_invalid_omp_threads_rejected(monkeypatch, threads):
    monkeypatch.setenv("OMP_NUM_THREADS", threads)

    result = _invoke("run", "--month", "2026-10")

    assert result.exit_code == 2
    assert f"invalid OMP_NUM_THREADS={threads!r}" in result.stderr
