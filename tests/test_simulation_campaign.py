"""The intervention scenario: the measured effect of the contacts recovers the planted one."""

import datetime as dt

import pandas as pd
import pytest
import sqlalchemy as sa

from gymchurn.campaigns import pool_months
from gymchurn.settings import get_settings
from gymchurn.simulation.campaign import simulate_campaign
from gymchurn.simulation.simulator import ClientSimulator

START = dt.date(2026, 1, 1)
CLIENTS = 2000
MONTHS = 3  # the first only gives outcomes, the other two are scored and contacted


def _simulate(engine, effect: float, seed: int):
    from flows.monthly_scoring import monthly_scoring

    def run_month(label: str) -> dict:
        # Train once, then score with the champion: the test is about the campaign.
        retrain = "auto" if label == "2026-02" else "never"
        return monthly_scoring(month=label, retrain=retrain)

    simulator = ClientSimulator(
        CLIENTS, seed=seed, scenario="intervention", scenario_start=START, contact_effect=effect
    )
    return simulate_campaign(engine, simulator, START, MONTHS, run_month)


def _overall_rows(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(
            sa.text("SELECT * FROM churn.campaign_results WHERE level = 'overall' ORDER BY month"),
            conn,
        )


@pytest.fixture
def fast_training(monkeypatch):
    monkeypatch.setenv("GYMCHURN_CV_FOLDS", "2")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# One seed each. test_campaigns.py checks the interval's coverage over many
# draws without a database; benchmarks/bench_campaign_coverage.py checks it
# end to end over many simulator seeds.
@pytest.mark.parametrize(("effect", "seed"), [(0.3, 7), (0.0, 7)])
def test_measured_effect_covers_planted_effect(
    database, prefect_harness, fast_training, effect, seed
):
    simulation = _simulate(database, effect, seed)
    overall = _overall_rows(database)
    difference, lower, upper = pool_months(overall)
    planted = simulation.planted_effect()

    assert [str(m) for m in overall["month"]] == ["2026-02-01", "2026-03-01"]
    assert sorted(simulation.contacted) == [dt.date(2026, 2, 1), dt.date(2026, 3, 1)]
    assert overall["held_out"].sum() > 100
    assert overall["contacted"].sum() > 5 * overall["held_out"].sum()
    assert (overall["held_out_contacted"] == 0).all()
    assert lower <= planted <= upper
    assert upper - lower < 0.2
    if effect:
        # About a third of the contacted leavers stay: a fall of 10 points or more.
        assert planted > 0.1
        assert lower > 0
    else:
        assert planted == 0
        assert abs(difference) < 0.05
