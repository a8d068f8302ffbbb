"""Steps of the monthly run that the flow tests do not reach."""

import logging
import uuid

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from gymchurn import model, registry, runtime, steps
from gymchurn.loader import read_questionnaire_csv
from gymchurn.settings import Settings


@pytest.fixture(scope="module")
def trained(real_data):
    loaded = read_questionnaire_csv(real_data)
    training = loaded.questionnaires.merge(loaded.outcomes, on="client_id")
    training["month"] = pd.Timestamp("2026-10-01").date()
    return model.train(training, seed=42, folds=5, threshold=0.5)


def test_register_same_version_twice_keeps_first(database, trained, tmp_path):
    """Check that a run losing the race to register a version deletes its own file."""
    first_path, first_sha = model.save(trained, tmp_path)
    second_path, second_sha = model.save(trained, tmp_path)

    assert registry._register(database, trained, first_path, first_sha) is True
    assert registry._register(database, trained, second_path, second_sha) is False

    assert first_path.exists()
    assert not second_path.exists()
    with database.connect() as conn:
        rows = conn.execute(sa.text("SELECT artifact_sha256 FROM churn.model_versions")).all()
    assert rows == [(first_sha,)]


@pytest.mark.parametrize(
    ("error", "status", "start"),
    [
        (steps.NoDataError("no questionnaires"), "failed", "NoDataError: no questionnaires"),
        (KeyboardInterrupt("stopped by signal SIGTERM"), "failed", "interrupted"),
    ],
)
def test_fail_run_records_reason(database, error, status, start):

    run_id = uuid.uuid4()
    steps.start_run(database, run_id, pd.Timestamp("2026-10-01").date())

    steps.fail_run(database, run_id, error, {"rows_read": 12})

    with database.connect() as conn:
        row = conn.execute(
            sa.text("SELECT status, message, rows_read, finished_at FROM churn.runs")
        ).one()
    assert row.status == status
    assert row.message.startswith(start)
    assert row.rows_read == 12
    assert row.finished_at is not None


def test_fail_run_after_publish_keeps_success(database):
    run_id = uuid.uuid4()
    steps.start_run(database, run_id, pd.Timestamp("2026-10-01").date())
    with database.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE churn.runs SET status = 'succeeded', message = '12 read, 12 scored'"
                " WHERE run_id = :id"
            ),
            {"id": run_id},
        )

    recorded = steps.fail_run(database, run_id, KeyboardInterrupt("stopped by signal SIGINT"))
    again = steps.fail_run(database, run_id, IsADirectoryError(21, "Is a directory"))

    assert recorded is False
    assert again is False
    with database.connect() as conn:
        row = conn.execute(sa.text("SELECT status, message FROM churn.runs")).one()
    assert row.status == "succeeded"
    assert row.message == (
        "12 read, 12 scored. Then interrupted (KeyboardInterrupt) after the month was "
        "published: the report or the at-risk list may be missing; run the month again. "
        "Then failed (IsADirectoryError: [Errno 21] Is a directory) after the month was "
        "published: the report or the at-risk list may be missing; run the month again."
    )


def test_risk_tiers_by_threshold():
    settings = Settings(risk_high_threshold=0.5, risk_medium_threshold=0.25)
    probabilities = np.array([0.9, 0.6, 0.3, 0.1])
    assert steps.risk_tiers(probabilities, settings).tolist() == ["high", "high", "medium", "low"]


def test_risk_tiers_by_capacity():
    settings = Settings(risk_capacity=2)
    probabilities = np.array([0.3, 0.9, 0.6, 0.7, 0.1])
    tiers = steps.risk_tiers(probabilities, settings).tolist()
    assert tiers == ["medium", "high", "medium", "high", "low"]


def test_risk_capacity_leaves_unlikely_leavers_low(caplog):
    # A capacity of 4 for 5 clients, of whom 3 reach the medium threshold.
    settings = Settings(risk_capacity=4, risk_medium_threshold=0.25)
    probabilities = np.array([0.3, 0.9, 0.0001, 0.7, 0.1])

    with caplog.at_level(logging.WARNING, logger="gymchurn.steps"):
        tiers = steps.risk_tiers(probabilities, settings).tolist()

    assert tiers == ["high", "high", "low", "high", "low"]
    assert "only 3 client(s) have a churn probability of at least" in caplog.text


def _labelled_rows(n_rows: int) -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "client_id": np.arange(n_rows),
            "month": pd.to_datetime(["2026-01-01", "2026-02-01"] * (n_rows // 2)).date,
            "churned": np.tile([0.0, 1.0, 0.0, 0.0], n_rows // 4),
        }
    )
    rows["sample_key"] = np.random.default_rng(5).permutation(n_rows)
    return rows


def test_training_sample_keeps_rows_below_bound():
    rows = _labelled_rows(400)
    sample = steps.training_sample(rows, Settings(max_training_rows=400))
    assert len(sample) == 400
    assert "sample_key" not in sample.columns


def test_training_sample_takes_lowest_keys():
    rows = _labelled_rows(1000)
    sample = steps.training_sample(rows, Settings(max_training_rows=300))
    lowest = rows.nsmallest(300, "sample_key")
    assert len(sample) == 300
    # The client ids are unique across both months.
    assert sorted(sample["client_id"]) == sorted(lowest["client_id"])


def test_training_sample_ignores_row_order():
    rows = _labelled_rows(1000)
    shuffled = rows.sample(frac=1.0, random_state=3)
    settings = Settings(max_training_rows=300)
    first = steps.training_sample(rows, settings)
    second = steps.training_sample(shuffled, settings)
    assert first["client_id"].to_list() == second["client_id"].to_list()
    assert first["month"].to_list() == second["month"].to_list()


def _logged_failure(logger_name: str, error: Exception) -> tuple[str, str]:
    """Log ``error`` as Prefect logs a failed run; return the message and the formatted text."""
    runtime.quiet_explained_errors()
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append((record.getMessage(), self.format(record)))

    handler = Keep()
    run_logger = logging.getLogger(logger_name)
    run_logger.addHandler(handler)
    try:
        try:
            raise error
        except Exception:
            run_logger.error("Run failed with exception: %r", error, exc_info=True)
    finally:
        run_logger.removeHandler(handler)
    (record,) = records
    return record


def test_explained_errors_logged_without_traceback():
    own, own_text = _logged_failure(
        "prefect.task_runs", steps.NoDataError("no questionnaires for 2026-12")
    )
    other, other_text = _logged_failure("prefect.task_runs", KeyError("churned"))

    assert "NoDataError('no questionnaires for 2026-12')" in own
    assert "Traceback" not in own_text
    assert "KeyError('churned')" in other
    assert "Traceback (most recent call last)" in other_text


def test_flow_error_logged_without_traceback():
    from flows.monthly_scoring import DaskSchedulerError

    message, text = _logged_failure(
        "prefect.flow_runs", DaskSchedulerError("no worker at tcp://127.0.0.1:8786")
    )

    assert "DaskSchedulerError('no worker at tcp://127.0.0.1:8786')" in message
    assert "Traceback" not in text


def test_console_shows_job_error_once(monkeypatch):
    from prefect.logging.handlers import PrefectConsoleHandler

    monkeypatch.setattr(runtime, "received_signals", [])
    runtime.quiet_explained_errors()
    console = PrefectConsoleHandler()
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [console])
    runtime.quiet_run_console()
    console_messages = []
    monkeypatch.setattr(
        console, "emit", lambda record: console_messages.append(record.getMessage())
    )

    def failed(logger_name: str, message: str, error: Exception | None = None) -> None:
        try:
            raise error or RuntimeError()
        except Exception:
            logging.getLogger(logger_name).error(message, exc_info=error is not None)

    job_error = steps.NoDataError("no questionnaires for 2026-12")
    failed("prefect.task_runs", "Task run failed with exception: rejected", job_error)
    failed("prefect.task_runs", "Finished in state Failed('rejected')")
    failed("prefect.flow_runs", "Encountered exception during execution: rejected", job_error)
    failed("prefect.flow_runs", "Finished in state Failed('rejected')")
    failed("prefect.task_runs", "Task run failed with exception: KeyError", KeyError("churned"))
    logging.getLogger("prefect.task_runs").info("Finished in state Completed()")
    logging.getLogger("prefect.flow_runs").info("Finished in state Completed()")

    # The step's final state, a library error with its traceback, and the flow's end.
    assert console_messages == [
        "Finished in state Failed('rejected')",
        "Task run failed with exception: KeyError",
        "Finished in state Completed()",
    ]


def test_server_advice_dropped_from_prefect_log():
    runtime.hide_server_advice()
    messages = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Keep()
    prefect_logger = logging.getLogger("prefect")
    prefect_logger.addHandler(handler)
    advice = (
        "See https://www.prefect.io/docs/v3/concepts/server#how-to-guides "
        "for more information on running a dedicated Prefect server."
    )
    try:
        # The record Prefect 3.9 logs as it starts its temporary server.
        prefect_logger.info("Starting temporary server on %s\n%s", "http://127.0.0.1:8111", advice)
        prefect_logger.info(advice)
        prefect_logger.info("Stopping temporary server on http://127.0.0.1:8111")
    finally:
        prefect_logger.removeHandler(handler)

    assert messages == [
        "Starting temporary server on http://127.0.0.1:8111",
        "Stopping temporary server on http://127.0.0.1:8111",
    ]


def test_signal_dropped_by_python_is_raised_between_steps(monkeypatch):
    monkeypatch.setattr(runtime, "received_signals", [])
    runtime.raise_if_stopped()

    # As the job's handler leaves it when its KeyboardInterrupt was swallowed.
    runtime.received_signals.append("SIGTERM")
    with pytest.raises(KeyboardInterrupt, match="stopped by signal SIGTERM"):
        runtime.raise_if_stopped()


def test_errors_after_a_stop_logged_without_traceback(monkeypatch):
    monkeypatch.setattr(runtime, "received_signals", ["SIGTERM"])

    # An interrupt inside a library can come out as that library's error.
    _, text = _logged_failure("prefect.flow_runs", KeyError("churned"))

    assert text == "Run failed with exception: KeyError('churned')"
