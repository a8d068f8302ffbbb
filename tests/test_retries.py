"""The monthly flow's tasks retry a lost database connection and nothing else."""

import inspect
import uuid

import psycopg
import pytest
import sqlalchemy as sa
from prefect import flow

import flows.monthly_scoring as monthly
from gymchurn import db, registry, steps
from gymchurn.validation import DataValidationError

pytestmark = pytest.mark.usefixtures("prefect_harness")

# The tasks that read or write the database, and the package function each wraps.
DB_TASKS = [
    ("extract", steps, "extract"),
    ("previous_segments", steps, "previous_segments"),
    ("train_or_load_model", registry, "fit_or_load"),
    ("publish", steps, "publish"),
    ("deliver", steps, "deliver"),
]


def _lost_connection() -> sa.exc.OperationalError:
    cause = psycopg.OperationalError("connection to server at 127.0.0.1 failed: refused")
    return sa.exc.OperationalError("SELECT 1", {}, cause)


class _Failing:
    """Stand-in for a package function: raises ``errors`` in turn, then returns ``value``."""

    def __init__(self, errors: list[BaseException], value="done"):
        self.errors = list(errors)
        self.value = value
        self.attempts = 0

    def __call__(self, *args, **kwargs):
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value


def _call_in_flow(task):
    """Run ``task`` once inside a flow, without its retry delays, and return its result."""
    fast = task.with_options(retry_delay_seconds=0)
    arguments = [None] * len(inspect.signature(task.fn).parameters)

    @flow
    def single_task():
        return fast(*arguments)

    return single_task()


@pytest.mark.parametrize(("task_name", "module", "function"), DB_TASKS)
def test_db_task_retries_lost_connection(monkeypatch, task_name, module, function):
    fake = _Failing([_lost_connection(), _lost_connection()])
    monkeypatch.setattr(module, function, fake)

    assert _call_in_flow(getattr(monthly, task_name)) == "done"
    # The first attempt and both retries.
    assert fake.attempts == 3


def test_db_task_gives_up_after_two_retries(monkeypatch):
    fake = _Failing([_lost_connection()] * 5)
    monkeypatch.setattr(steps, "extract", fake)

    with pytest.raises(sa.exc.OperationalError, match="refused"):
        _call_in_flow(monthly.extract)
    assert fake.attempts == 3


def test_db_task_missing_data_not_retried(monkeypatch):
    fake = _Failing([steps.NoDataError("no questionnaires for 2026-12")])
    monkeypatch.setattr(steps, "extract", fake)

    with pytest.raises(steps.NoDataError):
        _call_in_flow(monthly.extract)
    assert fake.attempts == 1


def test_db_task_programming_error_not_retried(monkeypatch):
    # A broken query fails the same way on every try.
    error = sa.exc.ProgrammingError("SELECT nope", {}, Exception("column nope does not exist"))
    fake = _Failing([error])
    monkeypatch.setattr(steps, "publish", fake)

    with pytest.raises(sa.exc.ProgrammingError):
        _call_in_flow(monthly.publish)
    assert fake.attempts == 1


def test_validation_failure_not_retried(monkeypatch):
    fake = _Failing([DataValidationError("age: 3000 rows out of range", dataset="2026-10")])
    monkeypatch.setattr(steps, "check", fake)

    with pytest.raises(DataValidationError):
        _call_in_flow(monthly.validate)
    assert fake.attempts == 1


def test_training_failure_not_retried(monkeypatch):
    fake = _Failing([ValueError("only one class in the labelled rows")])
    monkeypatch.setattr(registry, "fit_or_load", fake)

    with pytest.raises(ValueError, match="only one class"):
        _call_in_flow(monthly.train_or_load_model)
    assert fake.attempts == 1


@pytest.mark.parametrize(
    "server_message",
    [
        'FATAL:  database "crm_2026" does not exist',
        'FATAL:  password authentication failed for user "job"',
        'FATAL:  role "job" does not exist',
        'FATAL:  no pg_hba.conf entry for host "10.0.0.5", user "job", database "gym"',
    ],
)
def test_rejected_connection_not_transient(server_message):
    cause = psycopg.OperationalError(f"connection failed: {server_message}")
    error = sa.exc.OperationalError("SELECT 1", {}, cause)

    assert not db.is_transient(error)
    assert db.rejected_connection_advice(error) is not None


def test_missing_database_not_transient(server_url):
    # The database is never created, so the server reports that it does not exist.
    missing = server_url.set(database=f"missing_{uuid.uuid4().hex[:12]}")
    engine = sa.create_engine(missing)
    try:
        with pytest.raises(sa.exc.OperationalError) as raised:
            engine.connect()
    finally:
        engine.dispose()

    assert not db.is_transient(raised.value)
    assert "create the database" in db.rejected_connection_advice(raised.value)
