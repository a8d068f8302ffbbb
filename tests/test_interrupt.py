"""A run stopped from outside is recorded as failed and leaves the month as it was."""

import operator
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import sqlalchemy as sa

from gymchurn.loader import load_questionnaire_file, read_questionnaire_csv
from gymchurn.schema import parse_month
from tests.conftest import prefect_home


def _run_status(engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT status, message FROM churn.runs ORDER BY started_at"))
        return [tuple(row) for row in rows]


def _signal_group(job, signum):
    os.killpg(job.pid, signum)


def _signal_process(job, signum):
    job.send_signal(signum)


def _start_run(database, real_data, tmp_path) -> subprocess.Popen:
    """Start `gymchurn run` on the real month and wait until its run row is written.

    The temporary Prefect server takes 5-10 s to start; the run row appears after it.
    """
    load_questionnaire_file(database, read_questionnaire_csv(real_data), parse_month("2026-10"))
    env = {**os.environ, "PREFECT_HOME": str(prefect_home(tmp_path / "prefect"))}
    # Files, not pipes: a process the test kills leaves its children holding them.
    job = subprocess.Popen(
        [sys.executable, "-m", "gymchurn.cli", "run", "--month", "2026-10"],
        env=env,
        stdout=(tmp_path / "stdout").open("w"),
        stderr=(tmp_path / "stderr").open("w"),
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while _run_status(database) == [] and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.05)
    return job


def _stderr(job, tmp_path) -> str:
    """Wait for ``job`` to exit and return what it wrote to stderr."""
    job.wait(timeout=120)
    return (tmp_path / "stderr").read_text()


@pytest.mark.parametrize(
    ("send", "signum"),
    [
        # A scheduler's timeout: SIGTERM to the job's process.
        (_signal_process, signal.SIGTERM),
        # Ctrl-C in a terminal: SIGINT to the whole foreground process group.
        (_signal_group, signal.SIGINT),
    ],
)
def test_signal_marks_run_failed(database, real_data, tmp_path, send, signum):
    job = _start_run(database, real_data, tmp_path)
    started = time.monotonic()
    send(job, signum)
    stderr = _stderr(job, tmp_path)
    seconds = time.monotonic() - started

    assert job.returncode == 130, stderr[-2000:]
    # Without the job's own session, Ctrl-C also stopped Prefect's server and
    # the flow retried against it for about 70 s.
    assert seconds < 30
    assert any(
        line.startswith("error: run for 2026-10 interrupted") for line in stderr.splitlines()
    )
    runs = _run_status(database)
    assert len(runs) == 1
    assert runs[0][0] == "failed", stderr[-3000:]
    assert runs[0][1].startswith("interrupted")
    assert signal.Signals(signum).name in runs[0][1]
    with database.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM churn.scores")).scalar_one() == 0


def _session_members(session: int) -> list[int]:
    """Process IDs of the live processes of session ``session``."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except (OSError, psutil.Error):
            continue
    return members


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the signal is Linux's")
def test_run_killed_outright_stops_its_job(database, real_data, tmp_path):
    job = _start_run(database, real_data, tmp_path)
    (child,) = psutil.Process(job.pid).children()

    # SIGKILL cannot be caught: `run` cannot pass the stop on itself.
    job.kill()
    job.wait(timeout=30)
    deadline = time.monotonic() + 120
    while _run_status(database)[0][0] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)

    runs = _run_status(database)
    assert runs[0][0] == "failed"
    assert runs[0][1].startswith("interrupted")
    with database.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM churn.scores")).scalar_one() == 0
    deadline = time.monotonic() + 60
    while _session_members(child.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _session_members(child.pid) == []


def test_job_process_killed_is_reported(database, real_data, tmp_path):
    job = _start_run(database, real_data, tmp_path)
    (child,) = psutil.Process(job.pid).children()

    child.kill()
    stderr = _stderr(job, tmp_path)

    assert job.returncode == 137
    assert "error: the job process for 2026-10 was killed by SIGKILL" in stderr
    # Its temporary Prefect server is stopped with it.
    deadline = time.monotonic() + 60
    while _session_members(child.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _session_members(child.pid) == []
    assert _run_status(database)[0][0] == "running"


def test_stop_before_the_job_starts_exits_130(tmp_path):
    # Nothing listens on port 1: `run` waits to retry the connection, before its job starts.
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none",
        "GYMCHURN_DB_RETRY_SECONDS": "[60]",
    }
    job = subprocess.Popen(
        [sys.executable, "-m", "gymchurn.cli", "run", "--month", "2026-10"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines = []
    for line in job.stderr:
        lines.append(line)
        if "retrying in 60 s" in line:
            break
    job.send_signal(signal.SIGTERM)
    try:
        _, rest = job.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        job.kill()
        raise AssertionError("".join(lines) + job.communicate()[1]) from None

    assert job.returncode == 130, "".join(lines) + rest
    assert "error: stopped by signal SIGTERM before the run started; no month was scored" in rest
    assert _session_members(job.pid) == []


def _training_workers(job) -> list[psutil.Process]:
    """joblib's worker processes under ``job``, which fit the training folds."""
    workers = []
    for process in psutil.Process(job.pid).children(recursive=True):
        try:
            if any("loky" in part for part in process.cmdline()):
                workers.append(process)
        except psutil.Error:
            continue
    return workers


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_stop_during_training_stops_its_workers(database, real_data, tmp_path):
    # The real month has outcomes and no earlier month: a backtest, which
    # cross-validates the candidates in worker processes.
    job = _start_run(database, real_data, tmp_path)
    deadline = time.monotonic() + 120
    while not (workers := _training_workers(job)) and job.poll() is None:
        assert time.monotonic() < deadline, "training started no worker process"
        time.sleep(0.05)

    job.send_signal(signal.SIGTERM)
    stderr = _stderr(job, tmp_path)

    assert job.returncode == 130, stderr[-2000:]
    runs = _run_status(database)
    assert [status for status, _ in runs] == ["failed"]
    assert runs[0][1].startswith("interrupted")
    deadline = time.monotonic() + 60
    while any(_alive(worker) for worker in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [worker.pid for worker in workers if _alive(worker)] == []


def test_signal_during_an_import_is_sent_again_later(tmp_path, monkeypatch):
    from gymchurn import cli

    # A module whose top-level code keeps its frame: code run by an import.
    (tmp_path / "frame_keeper.py").write_text("import sys\nFRAME = sys._getframe()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import frame_keeper

    assert cli._importing(frame_keeper.FRAME)
    assert not cli._importing(sys._getframe())

    sent = []
    monkeypatch.setattr(cli.os, "kill", lambda pid, signum: sent.append((pid, signum)))
    monkeypatch.setattr(cli.runtime, "received_signals", [])
    # Inside an import the handler neither raises nor records: it sends the signal again.
    cli._stop_on_signal(signal.SIGUSR1, frame_keeper.FRAME)
    deadline = time.monotonic() + 10
    while not sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sent == [(os.getpid(), signal.SIGUSR1)]
    assert cli.runtime.received_signals == []
    with pytest.raises(KeyboardInterrupt, match="stopped by signal SIGTERM"):
        cli._stop_on_signal(signal.SIGUSR1, sys._getframe())
    assert cli.runtime.received_signals == ["SIGTERM"]


def test_failed_calls_kill_stray_worker():
    from joblib import delayed
    from joblib.externals.loky.backend.context import get_context

    from gymchurn import model

    # A worker that an interrupt left started but outside joblib's pool:
    # Python's exit would wait for it.
    stray = get_context("loky").Process(target=time.sleep, args=(600,))
    stray.start()
    with pytest.raises(ZeroDivisionError):
        model._in_worker_processes([delayed(operator.truediv)(1, 0)] * 2)
    stray.join(timeout=10)
    assert stray.exitcode == -signal.SIGKILL


def test_signal_after_publish_is_noted(database, real_data, tmp_path):
    job = _start_run(database, real_data, tmp_path)
    stderr_file = tmp_path / "stderr"
    deadline = time.monotonic() + 180
    while "Stopping temporary server" not in stderr_file.read_text() and job.poll() is None:
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.05)

    # While Prefect stops its server, as the job process exits.
    _signal_process(job, signal.SIGTERM)
    stderr = _stderr(job, tmp_path)

    assert job.returncode == 0, stderr[-2000:]
    assert "note: SIGTERM came after every month was published; nothing was stopped" in stderr
    assert [status for status, _ in _run_status(database)] == ["succeeded"]
