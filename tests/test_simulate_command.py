"""``gymchurn simulate`` and ``gymchurn demo`` against a real database."""

import os
import re
import subprocess
import sys

import sqlalchemy as sa

from tests.conftest import REPO
from tests.test_cli import _count, _invoke

_TABLE_DIGEST = """
SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t.client_id, t.month))
FROM {table} AS t
"""


def _digest(engine, table: str) -> tuple:
    with engine.connect() as conn:
        return tuple(conn.execute(sa.text(_TABLE_DIGEST.format(table=table))).one())


def _months(engine, table: str) -> dict:
    query = f"SELECT to_char(month, 'YYYY-MM'), count(*) FROM {table} GROUP BY 1 ORDER BY 1"
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(query)).all())


def _written(output: str) -> tuple[int, int]:
    match = re.search(
        r"crm.questionnaires: (\d+) rows written, crm.churn_outcomes: (\d+) rows written", output
    )
    assert match, output
    return int(match[1]), int(match[2])


def test_simulate_writes_what_it_reports(database):
    result = _invoke("simulate", "--clients", "3000", "--months", "4", "--start", "2026-01")

    assert result.exit_code == 0, result.output
    questionnaires, outcomes = _written(result.stdout)
    assert _count(database, "crm.questionnaires") == questionnaires
    assert _count(database, "crm.churn_outcomes") == outcomes
    by_month = _months(database, "crm.questionnaires")
    assert list(by_month) == ["2026-01", "2026-02", "2026-03", "2026-04"]
    assert by_month["2026-01"] == 3000
    assert list(_months(database, "crm.churn_outcomes")) == ["2026-01", "2026-02", "2026-03"]
    assert "2026-04: " in result.stdout
    assert "outcomes not known yet" in result.stdout
    assert re.search(r"^2026-01: 3000 clients, \d+ leave the month after$", result.stdout, re.M)
    assert re.search(r"^2026-02: \d+ clients, \d+ new, \d+ leave", result.stdout, re.M)


def test_simulate_same_seed_same_tables(database):
    args = ["simulate", "--clients", "2000", "--months", "3", "--seed", "4"]
    first = _invoke(*args)
    digests = _digest(database, "crm.questionnaires"), _digest(database, "crm.churn_outcomes")

    again = _invoke(*args, "--replace")

    assert first.exit_code == 0, first.output
    assert again.exit_code == 0, again.output
    assert _digest(database, "crm.questionnaires") == digests[0]
    assert _digest(database, "crm.churn_outcomes") == digests[1]
    assert f"{digests[0][0]} questionnaires replaced" in again.stdout


def test_simulate_over_existing_months_rejected(database):
    first = _invoke("simulate", "--clients", "1000", "--months", "2", "--seed", "1")
    before = _digest(database, "crm.questionnaires")

    second = _invoke("simulate", "--clients", "1000", "--months", "2", "--seed", "2")

    assert first.exit_code == 0, first.output
    assert second.exit_code == 1
    assert "pass --replace" in second.output
    assert _digest(database, "crm.questionnaires") == before


def test_simulate_from_real_file(database, real_data):
    result = _invoke("simulate", "--clients", "4000", "--months", "2", "--from-csv", str(real_data))

    assert result.exit_code == 0, result.output
    with database.connect() as conn:
        churned = conn.execute(
            sa.text(
                "SELECT count(*) FROM crm.churn_outcomes WHERE churned AND month = '2026-01-01'"
            )
        ).scalar_one()
    assert churned == 1061


def test_simulate_scenario_unknown(database):
    result = _invoke("simulate", "--clients", "100", "--months", "2", "--scenario", "discount")

    assert result.exit_code == 2
    assert "unknown scenario 'discount'" in result.output
    assert _count(database, "crm.questionnaires") == 0


def test_simulate_scenario_start_outside_rejected(database):
    result = _invoke(
        "simulate", "--months", "3", "--scenario", "price_rise", "--scenario-start", "2030-01"
    )

    assert result.exit_code == 2
    assert "outside the simulated months" in result.output
    assert _count(database, "crm.questionnaires") == 0


def test_simulate_past_year_9999_rejected(database):
    result = _invoke("simulate", "--start", "9999-12", "--months", "2")

    assert result.exit_code == 2
    assert "end after 9999-12" in result.output


def test_demo_scores_each_month_in_own_database(database, tmp_path):
    env = {
        **os.environ,
        "GYMCHURN_HOME": str(tmp_path / "home"),
        "GYMCHURN_MODEL_DIR": str(tmp_path / "models"),
        "GYMCHURN_OUTPUT_DIR": str(tmp_path / "output"),
    }
    command = [sys.executable, "-m", "gymchurn.cli", "demo", "--clients", "1500", "--months", "3"]

    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "2026-01: 1500 read, 1500 scored, 0 quarantined (backtest" in done.stdout
    assert re.search(r"2026-02: \d+ read, \d+ scored, 0 quarantined \(forward", done.stdout)
    assert "at-risk list of 2026-03:" in done.stdout
    for month in ("2026-01", "2026-02", "2026-03"):
        assert (tmp_path / "output" / "demo" / f"at_risk_{month}.csv").is_file()
    assert list((tmp_path / "models" / "demo").glob("*.skops"))
    # DATABASE_URL points at the test database, which the demo leaves alone.
    assert _count(database, "crm.questionnaires") == 0
