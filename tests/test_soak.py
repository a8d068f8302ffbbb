"""Simulated months run back to back on one database keep every record consistent.

``benchmarks/bench_soak.py`` runs the same check over 24 months; this test
runs three, to keep the suite short.
"""

import os
import subprocess
import sys

import sqlalchemy as sa

from tests.conftest import REPO, prefect_home
from tests.consistency import find_inconsistencies
from tests.test_cli import _invoke

MONTHS = ["2026-01", "2026-02", "2026-03"]


def test_months_back_to_back_consistent(database, tmp_path):
    simulated = _invoke("simulate", "--clients", "1500", "--months", "3", "--start", MONTHS[0])
    assert simulated.exit_code == 0, simulated.output
    env = {**os.environ, "PREFECT_HOME": str(prefect_home(tmp_path / "prefect"))}
    command = [sys.executable, "-m", "gymchurn.cli", "run", "--retrain", "auto"]
    for month in MONTHS:
        command += ["--month", month]

    job = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)

    assert job.returncode == 0, job.stderr[-3000:]
    assert find_inconsistencies(database) == []
    with database.connect() as conn:
        published = conn.execute(
            sa.text(
                "SELECT to_char(month, 'YYYY-MM') FROM churn.runs "
                "WHERE status = 'succeeded' ORDER BY month"
            )
        ).scalars()
        assert list(published) == MONTHS

    # The check itself reports a lost score and a run left running.
    with database.begin() as conn:
        conn.execute(
            sa.text(
                "DELETE FROM churn.scores WHERE month = '2026-02-01' AND client_id = "
                "(SELECT min(client_id) FROM churn.scores WHERE month = '2026-02-01')"
            )
        )
        conn.execute(sa.text("UPDATE churn.runs SET status = 'running' WHERE month = '2026-01-01'"))
    problems = find_inconsistencies(database)
    assert any(problem.startswith("2026-02 run") and "scores" in problem for problem in problems)
    assert "1 runs still marked running" in problems
