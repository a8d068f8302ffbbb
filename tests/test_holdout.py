"""The control holdout's draws and strata; test_at_risk_command.py checks a real month."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from gymchurn import holdout
from gymchurn.settings import Settings

OCTOBER = dt.date(2026, 10, 1)


def _clients(tiers: dict[tuple[str, int], int]) -> pd.DataFrame:
    """Clients numbered from 1, ``n`` of each (risk tier, cluster) stratum."""
    parts = [
        pd.DataFrame({"risk_tier": [tier] * n, "cluster_id": cluster})
        for (tier, cluster), n in tiers.items()
    ]
    clients = pd.concat(parts, ignore_index=True)
    clients.insert(0, "client_id", np.arange(1, len(clients) + 1))
    return clients


# Pure functions


def test_uniform_draws_ignore_row_order():
    ids = np.arange(1, 1001)
    shuffled = np.random.default_rng(0).permutation(ids)

    draws = pd.Series(holdout.uniform_draws(ids, OCTOBER, 42), index=ids)
    again = pd.Series(holdout.uniform_draws(shuffled, OCTOBER, 42), index=shuffled)

    assert draws.equals(again.sort_index())
    assert draws.between(0, 1, inclusive="left").all()


def test_uniform_draws_look_uniform():
    draws = holdout.uniform_draws(np.arange(1, 100_001), OCTOBER, 42)
    counts, _ = np.histogram(draws, bins=10, range=(0, 1))

    # 10,000 expected per tenth, binomial standard deviation 95.
    assert counts.min() > 9_600
    assert counts.max() < 10_400


def test_uniform_draws_change_with_month_and_seed():
    ids = np.arange(1, 1001)
    base = holdout.uniform_draws(ids, OCTOBER, 42)

    assert abs(np.corrcoef(base, holdout.uniform_draws(ids, dt.date(2026, 11, 1), 42))[0, 1]) < 0.1
    assert abs(np.corrcoef(base, holdout.uniform_draws(ids, OCTOBER, 43))[0, 1]) < 0.1


@pytest.mark.parametrize(
    ("n_clients", "share", "draw", "expected"),
    [
        (100, 0.1, 0.99, 10),
        (30, 0.1, 0.0, 3),
        (15, 0.1, 0.49, 2),
        (15, 0.1, 0.5, 1),
        (14, 0.1, 0.39, 2),
        (14, 0.1, 0.4, 1),
        (4, 0.1, 0.0, 1),
        (4, 0.1, 0.4, 0),
        (7, 0.0, 0.0, 0),
    ],
)
def test_held_out_count_rounds_up_below_fraction(n_clients, share, draw, expected):
    assert holdout.held_out_count(n_clients, share, draw) == expected


def test_held_out_count_averages_share():
    draws = np.random.default_rng(0).random(20_000)
    counts = [holdout.held_out_count(5, 0.1, draw) for draw in draws]

    # Rounding half up would hold out 1 of 5 every time, twice the share.
    assert np.mean(counts) == pytest.approx(0.5, abs=0.02)


def test_select_holdout_per_stratum():
    clients = _clients({("high", 0): 40, ("high", 1): 25, ("medium", 0): 93, ("low", 0): 200})

    flags = holdout.select_holdout(clients, OCTOBER, 0.1, 42)
    held = clients[flags].groupby(["risk_tier", "cluster_id"]).size().to_dict()

    # 2.5 and 9.3 rounded up or down; 4 exactly.
    assert held[("high", 0)] == 4
    assert held[("high", 1)] in (2, 3)
    assert held[("medium", 0)] in (9, 10)
    assert set(held) == {("high", 0), ("high", 1), ("medium", 0)}


def test_select_holdout_independent_of_row_order():
    clients = _clients({("high", 0): 40, ("medium", 2): 60})
    shuffled = clients.sample(frac=1, random_state=3)

    flags = holdout.select_holdout(clients, OCTOBER, 0.1, 42)
    again = holdout.select_holdout(shuffled, OCTOBER, 0.1, 42)

    assert set(clients.client_id[flags]) == set(shuffled.client_id[again])


def test_select_holdout_zero_share_holds_nobody():
    clients = _clients({("high", 0): 40})
    assert not holdout.select_holdout(clients, OCTOBER, 0.0, 42).any()


@pytest.mark.parametrize("share", ["-0.1", "0.6", "half"])
def test_holdout_share_setting_range(monkeypatch, share):
    monkeypatch.setenv("GYMCHURN_HOLDOUT_SHARE", share)
    with pytest.raises(ValueError, match="holdout_share"):
        Settings()
