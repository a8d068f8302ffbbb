"""The monthly flow on a Dask cluster gives the scores of the default task runner."""

import contextlib
import logging
import socket
import threading
import time

import pandas as pd
import pytest
import sqlalchemy as sa

from gymchurn import steps
from gymchurn.loader import load_questionnaire_file, read_questionnaire_csv
from gymchurn.schema import parse_month
from gymchurn.settings import get_settings
from tests.conftest import LogMessages

pytestmark = [
    pytest.mark.usefixtures("prefect_harness"),
    # The job's local cluster must not take the port of the module's cluster.
    pytest.mark.filterwarnings("error:Port 8787 is already in use:UserWarning"),
]

MONTH = "2026-11"
# 4,000 clients in chunks of 1,500: three chunks, the last one short.
CHUNK_ROWS = 1500

SCORES = """
    SELECT client_id, churn_probability, risk_tier, cluster_id, reasons, model_version
    FROM churn.scores WHERE month = '2026-11-01' ORDER BY client_id
"""
CLUSTERS = """
    SELECT cluster_id, name, size, churn_rate, expected_churners
    FROM churn.clusters WHERE month = '2026-11-01' ORDER BY cluster_id
"""


def _read(engine, query: str) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.text(query), conn)


def _run(engine, monkeypatch, chunk_rows: int, task_runner="default", address=None):
    from flows.monthly_scoring import with_task_runner

    monkeypatch.setenv("GYMCHURN_CHUNK_ROWS", str(chunk_rows))
    get_settings.cache_clear()
    result = with_task_runner(task_runner, address)(month=MONTH)
    return result, _read(engine, SCORES), _read(engine, CLUSTERS)


@pytest.fixture(scope="module")
def dask_cluster():
    """Two Dask workers of one thread each, on 127.0.0.1, in this process.

    Threads share this process's Prefect API; worker processes would each
    start a temporary Prefect server of their own.
    """
    cluster = _loopback_cluster(n_workers=2)
    yield cluster
    cluster.close(timeout=30)


def _loopback_cluster(n_workers: int):
    """Start a Dask cluster of ``n_workers`` one-thread workers on 127.0.0.1, in this process."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
        # The scheduler's HTTP server takes a free port: 8787 may be taken.
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )


@pytest.fixture(scope="module")
def runs(module_database, real_data, tmp_path_factory, dask_cluster):
    """November scored four times: one chunk, three chunks, three chunks on each Dask cluster.

    The last run starts a local cluster of its own, as ``--task-runner dask``
    does without an address.
    """
    features_only = tmp_path_factory.mktemp("csv") / "november.csv"
    pd.read_csv(real_data).drop(columns="Churn").to_csv(features_only, index=False)
    load_questionnaire_file(
        module_database, read_questionnaire_csv(real_data), parse_month("2026-10")
    )
    load_questionnaire_file(
        module_database, read_questionnaire_csv(features_only), parse_month(MONTH)
    )
    monkeypatch = pytest.MonkeyPatch()
    try:
        whole = _run(module_database, monkeypatch, 100_000)
        chunked = _run(module_database, monkeypatch, CHUNK_ROWS)
        on_dask = _run(
            module_database, monkeypatch, CHUNK_ROWS, "dask", dask_cluster.scheduler_address
        )
        runner_logger = logging.getLogger("prefect.task_runner.dask")
        handler = LogMessages()
        runner_logger.addHandler(handler)
        try:
            on_local_dask = _run(module_database, monkeypatch, CHUNK_ROWS, "dask")
        finally:
            runner_logger.removeHandler(handler)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    return {
        "whole": whole,
        "chunked": chunked,
        "dask": on_dask,
        "local dask": on_local_dask,
        "local dask log": handler.messages,
    }


def test_scheduler_check_counts_workers(dask_cluster):
    from flows.monthly_scoring import check_dask_scheduler

    assert check_dask_scheduler(dask_cluster.scheduler_address) == 2


def test_scheduler_check_names_unreachable_address(monkeypatch):
    from flows import monthly_scoring

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(monthly_scoring, "DASK_CONNECT_SECONDS", 1)
    with pytest.raises(
        monthly_scoring.DaskSchedulerError, match=f"no Dask scheduler .* at {address}"
    ):
        monthly_scoring.check_dask_scheduler(address)


def test_scheduler_check_fails_without_workers(monkeypatch):
    from flows import monthly_scoring

    monkeypatch.setattr(monthly_scoring, "DASK_WORKER_SECONDS", 1)
    with _loopback_cluster(n_workers=0) as empty:
        with pytest.raises(monthly_scoring.DaskSchedulerError, match="has no worker after 1 s"):
            monthly_scoring.check_dask_scheduler(empty.scheduler_address)


@contextlib.contextmanager
def _workers_leave_while_scoring(monkeypatch, cluster, n_workers: int):
    """Scale ``cluster`` down to ``n_workers`` while its workers hold the run's first chunks.

    Each chunk scored before the workers have left waits for them to leave,
    so the scheduler still has chunks to run afterwards. A run still going
    two minutes later gets a worker again, so that a test fails rather than
    hangs.
    """
    scoring_started = threading.Event()
    workers_left = threading.Event()
    run_ended = threading.Event()
    score_chunk = steps.score_chunk

    def score_chunk_once_workers_left(*args):
        scoring_started.set()
        workers_left.wait(timeout=120)
        return score_chunk(*args)

    def scale_down():
        scoring_started.wait(timeout=120)
        cluster.scale(n_workers)
        # The scheduler drops a worker before the worker waits for its
        # running chunk to end.
        for _ in range(1200):
            if len(cluster.scheduler.workers) <= n_workers:
                break
            time.sleep(0.1)
        workers_left.set()
        if not run_ended.wait(timeout=120):
            cluster.scale(n_workers + 1)

    monkeypatch.setattr(steps, "score_chunk", score_chunk_once_workers_left)
    scaler = threading.Thread(target=scale_down, daemon=True)
    scaler.start()
    try:
        yield
    finally:
        run_ended.set()
        scaler.join(timeout=30)


def test_run_fails_when_every_worker_leaves(runs, module_database, monkeypatch):
    from flows import monthly_scoring

    monkeypatch.setattr(monthly_scoring, "DASK_WORKER_SECONDS", 2)
    with _loopback_cluster(n_workers=2) as cluster:
        address = cluster.scheduler_address
        with _workers_leave_while_scoring(monkeypatch, cluster, n_workers=0):
            with pytest.raises(monthly_scoring.DaskSchedulerError) as raised:
                _run(module_database, monkeypatch, CHUNK_ROWS, "dask", address)
    message = str(raised.value)
    assert f"no worker has been connected to the Dask scheduler at {address} for 2 s" in message
    assert f"start one with: dask worker {address}, then run the month again" in message
    last_run = _read(
        module_database, "SELECT status, message FROM churn.runs ORDER BY started_at DESC LIMIT 1"
    )
    assert last_run["status"].to_list() == ["failed"]
    assert last_run["message"].to_list() == [f"DaskSchedulerError: {message}"]


def test_run_goes_on_when_one_worker_leaves(runs, module_database, monkeypatch):
    from flows import monthly_scoring

    monkeypatch.setattr(monthly_scoring, "DASK_WORKER_SECONDS", 2)
    with _loopback_cluster(n_workers=2) as cluster:
        address = cluster.scheduler_address
        with _workers_leave_while_scoring(monkeypatch, cluster, n_workers=1):
            result, scores, _ = _run(module_database, monkeypatch, CHUNK_ROWS, "dask", address)
        workers_left = len(cluster.scheduler.workers)
    _, default_scores, _ = runs["chunked"]
    assert workers_left == 1
    assert result["rows_scored"] == 4000
    assert scores["client_id"].to_list() == default_scores["client_id"].to_list()
    assert (scores["churn_probability"] == default_scores["churn_probability"]).all()


def test_local_cluster_logs_no_dashboard_link(runs):
    log = runs["local dask log"]
    # The runner's own line of the local cluster, to show its records are kept.
    assert any(message.startswith("Creating a new Dask cluster") for message in log), log
    assert not any("dashboard" in message for message in log), log


def test_dask_cluster_listens_on_loopback(dask_cluster):
    assert dask_cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    assert len(dask_cluster.workers) == 2


def test_dask_run_scores_every_client(runs):
    result, scores, _ = runs["dask"]
    assert result["rows_scored"] == 4000
    assert len(scores) == 4000
    assert scores["client_id"].is_unique


@pytest.mark.parametrize("cluster", ["dask", "local dask"])
def test_dask_scores_equal_default_row_by_row(runs, cluster):
    _, default_scores, _ = runs["chunked"]
    result, dask_scores, _ = runs[cluster]
    assert result["rows_scored"] == 4000
    assert dask_scores["client_id"].to_list() == default_scores["client_id"].to_list()
    assert (dask_scores["churn_probability"] == default_scores["churn_probability"]).all()
    assert dask_scores["risk_tier"].to_list() == default_scores["risk_tier"].to_list()
    assert dask_scores["cluster_id"].to_list() == default_scores["cluster_id"].to_list()
    assert dask_scores["reasons"].to_list() == default_scores["reasons"].to_list()
    assert dask_scores["model_version"].to_list() == default_scores["model_version"].to_list()


@pytest.mark.parametrize("cluster", ["dask", "local dask"])
def test_dask_segments_equal_default(runs, cluster):
    _, _, default_clusters = runs["chunked"]
    _, _, dask_clusters = runs[cluster]
    pd.testing.assert_frame_equal(dask_clusters, default_clusters)


def test_chunked_scores_equal_one_chunk(runs):
    _, whole_scores, whole_clusters = runs["whole"]
    _, chunked_scores, chunked_clusters = runs["chunked"]
    pd.testing.assert_frame_equal(chunked_scores, whole_scores)
    pd.testing.assert_frame_equal(chunked_clusters, whole_clusters)


def test_with_task_runner_rejects_unknown_name():
    from flows.monthly_scoring import with_task_runner

    with pytest.raises(ValueError, match="invalid task runner 'ray'"):
        with_task_runner("ray")


def test_with_task_runner_rejects_address_without_dask():
    from flows.monthly_scoring import with_task_runner

    with pytest.raises(ValueError, match="needs the dask task runner"):
        with_task_runner("default", "tcp://127.0.0.1:8786")
