"""Runs killed in the middle of publishing, and runs of one month started together.

Each test starts ``gymchurn run`` as a separate process group, as a scheduler
would. The tests hold an ACCESS EXCLUSIVE lock on ``churn.findings`` from a
connection of their own, so a run stops inside its publish transaction (which
deletes the month's findings after its scores) until the lock is released.
"""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import sqlalchemy as sa

from tests.conftest import REPO, prefect_home

FEBRUARY = "2026-02"
MARCH = "2026-03"


def _scalar(engine, query: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(query), params).scalar()


def _scores_digest(engine, month: str) -> tuple:
    query = """
        SELECT count(*), md5(string_agg(s::text, ',' ORDER BY s.client_id))
        FROM churn.scores AS s WHERE month = to_date(:month, 'YYYY-MM')
    """
    with engine.connect() as conn:
        return tuple(conn.execute(sa.text(query), {"month": month}).one())


def _runs(engine, month: str) -> list[tuple]:
    query = """
        SELECT run_id::text, status, coalesce(message, '') FROM churn.runs
        WHERE month = to_date(:month, 'YYYY-MM') ORDER BY started_at
    """
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(query), {"month": month})]


def _start_job(tmp_path, month: str, name: str, retrain: str = "never") -> subprocess.Popen:
    """Start ``gymchurn run`` for ``month`` in a process group of its own.

    GYMCHURN_JOB_PROCESS makes the command run the flow itself rather than in
    a child, so the group holds the job and Prefect's temporary server.
    """
    home = tmp_path / name
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home(home / "prefect")),
        "GYMCHURN_JOB_PROCESS": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "gymchurn.cli", "run", "--month", month, "--retrain", retrain],
        cwd=REPO,
        env=env,
        stdout=(home / "stdout").open("w"),
        stderr=(home / "stderr").open("w"),
        start_new_session=True,
    )


def _stderr(tmp_path, name: str) -> str:
    return (tmp_path / name / "stderr").read_text()


def _backends_waiting_on(engine, table: str) -> int:
    """Count the sessions of this database waiting for a lock on ``table``."""
    query = """
        SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)
        WHERE NOT l.granted AND l.relation = CAST(:table AS regclass)
          AND a.datname = current_database()
    """
    return _scalar(engine, query, table=table)


def _wait_until(condition, jobs, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        ended = [job.args for job in jobs if job.poll() is not None]
        assert not ended, f"job ended before the expected state: {ended}"
        assert time.monotonic() < deadline, "timed out waiting for the jobs"
        time.sleep(0.2)


def _kill_group(job: subprocess.Popen) -> None:
    """SIGKILL the job's process group, and any child that left it."""
    children = psutil.Process(job.pid).children(recursive=True)
    os.killpg(job.pid, signal.SIGKILL)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    job.wait(timeout=30)


@pytest.fixture(scope="module")
def published_february(module_database, tmp_path_factory):
    """Three simulated months (January and February labelled), February published once."""
    from tests.test_cli import _invoke

    result = _invoke("simulate", "--clients", "1500", "--months", "3", "--start", "2026-01")
    assert result.exit_code == 0, result.output
    folder = tmp_path_factory.mktemp("baseline")
    job = _start_job(folder, FEBRUARY, "baseline", retrain="auto")
    assert job.wait(timeout=600) == 0, _stderr(folder, "baseline")[-3000:]
    return module_database


@pytest.fixture
def findings_locked(published_february):
    """Hold an ACCESS EXCLUSIVE lock on churn.findings until the test releases it."""
    conn = published_february.connect()
    transaction = conn.begin()
    conn.execute(sa.text("LOCK TABLE churn.findings IN ACCESS EXCLUSIVE MODE"))
    yield transaction
    if transaction.is_active:
        transaction.rollback()
    conn.close()


def test_sigkill_during_publish_keeps_month(published_february, findings_locked, tmp_path):
    engine = published_february
    before = _scores_digest(engine, FEBRUARY)
    job = _start_job(tmp_path, FEBRUARY, "killed")
    try:
        _wait_until(lambda: _backends_waiting_on(engine, "churn.findings") == 1, [job])
    finally:
        _kill_group(job)
    findings_locked.rollback()

    killed = _runs(engine, FEBRUARY)[-1]
    assert _scores_digest(engine, FEBRUARY) == before
    assert killed[1] == "running"
    partial = _scalar(
        engine, "SELECT count(*) FROM churn.scores WHERE run_id = CAST(:id AS uuid)", id=killed[0]
    )
    assert partial == 0

    rerun = _start_job(tmp_path, FEBRUARY, "rerun")
    assert rerun.wait(timeout=600) == 0, _stderr(tmp_path, "rerun")[-3000:]
    runs = {run_id: (status, message) for run_id, status, message in _runs(engine, FEBRUARY)}
    assert runs[killed[0]][0] == "failed"
    assert runs[killed[0]][1].startswith("abandoned: the process stopped")
    assert [status for status, _ in runs.values()].count("succeeded") == 1
    assert "running" not in [status for status, _ in runs.values()]
    count, _ = _scores_digest(engine, FEBRUARY)
    questionnaires = _scalar(
        engine, "SELECT count(*) FROM crm.questionnaires WHERE month = '2026-02-01'"
    )
    assert count == questionnaires
    assert (
        _scalar(
            engine, "SELECT count(DISTINCT run_id) FROM churn.scores WHERE month = '2026-02-01'"
        )
        == 1
    )


def test_same_month_second_run_rejected(published_february, findings_locked, tmp_path):
    engine = published_february
    first = _start_job(tmp_path, FEBRUARY, "first")
    try:
        _wait_until(lambda: _backends_waiting_on(engine, "churn.findings") == 1, [first])
        second = _start_job(tmp_path, FEBRUARY, "second")
        second_code = second.wait(timeout=300)
        # The first run was still inside its publish transaction all along.
        assert first.poll() is None
    finally:
        findings_locked.rollback()
    first_code = first.wait(timeout=600)

    assert first_code == 0, _stderr(tmp_path, "first")[-3000:]
    assert second_code == 1
    assert "has the month's lock" in _stderr(tmp_path, "second")
    runs = _runs(engine, FEBRUARY)
    statuses = [status for _, status, _ in runs]
    assert statuses.count("succeeded") == 1
    assert "running" not in statuses
    rejected = runs[-1]
    assert rejected[1] == "failed"
    assert "MonthBusyError" in rejected[2]
    published = _scalar(
        engine,
        "SELECT run_id::text FROM churn.runs WHERE month = '2026-02-01' AND status = 'succeeded'",
    )
    run_ids = _scalar(
        engine,
        "SELECT array_agg(DISTINCT run_id::text) FROM churn.scores WHERE month = '2026-02-01'",
    )
    assert run_ids == [published]
    count, _ = _scores_digest(engine, FEBRUARY)
    assert count == _scalar(
        engine, "SELECT count(*) FROM crm.questionnaires WHERE month = '2026-02-01'"
    )


def test_other_month_runs_alongside(published_february, findings_locked, tmp_path):
    engine = published_february
    february = _start_job(tmp_path, FEBRUARY, "february")
    march = _start_job(tmp_path, MARCH, "march")
    try:
        # Both runs inside their publish transactions at once.
        _wait_until(lambda: _backends_waiting_on(engine, "churn.findings") == 2, [february, march])
    finally:
        findings_locked.rollback()

    assert february.wait(timeout=600) == 0, _stderr(tmp_path, "february")[-3000:]
    assert march.wait(timeout=600) == 0, _stderr(tmp_path, "march")[-3000:]
    for month in (FEBRUARY, MARCH):
        statuses = [status for _, status, _ in _runs(engine, month)]
        assert statuses.count("succeeded") == 1
        assert "failed" not in statuses[-1:]
