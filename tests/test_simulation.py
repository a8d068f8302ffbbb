"""The client simulator against the real questionnaires it was fitted on."""

import datetime as dt
import json
from importlib import resources

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from gymchurn import model
from gymchurn.loader import read_questionnaire_csv
from gymchurn.schema import BINARY_FEATURES, CHURNED, CLIENT_ID, FEATURES
from gymchurn.simulation.fit import fit_figures
from gymchurn.simulation.simulator import ClientSimulator, add_months, churn_probability
from gymchurn.simulation.store import read_starting_snapshot
from tests.conftest import CASES

START = dt.date(2026, 1, 1)


def _simulate(n_clients=10_000, n_months=6, seed=7, **options) -> list:
    return list(ClientSimulator(n_clients, seed=seed, **options).months(START, n_months))


def _labelled(month) -> pd.DataFrame:
    return month.questionnaires.merge(month.outcomes, on=[CLIENT_ID, "month"])


@pytest.fixture(scope="module")
def real(real_data) -> pd.DataFrame:
    loaded = read_questionnaire_csv(real_data)
    return loaded.questionnaires.merge(loaded.outcomes, on=CLIENT_ID)


@pytest.fixture(scope="module")
def steady() -> list:
    return _simulate()


@pytest.fixture(scope="module")
def first_month_large() -> pd.DataFrame:
    return _labelled(_simulate(n_clients=40_000, n_months=1, seed=11)[0])


def test_stored_figures_refit_from_real_file(real_data, real):
    stored = json.loads(resources.files("gymchurn.simulation").joinpath("figures.json").read_text())
    refitted = fit_figures(real_data)
    answers = real[FEATURES].astype("float64")

    # The hazard's solver stops at a tolerance of 1e-4, so its coefficients differ
    # by about 1e-2 between machines: on an AMD EPYC host the intercept came out
    # 13.748 against the stored 13.676. Its probabilities on the real rows agree
    # within 0.015.
    stored_hazard = churn_probability(answers, stored)
    refitted_hazard = churn_probability(answers, refitted)

    assert refitted["source"] == stored["source"]
    assert set(refitted["hazard"]["coefficients"]) == set(stored["hazard"]["coefficients"])
    assert np.abs(refitted_hazard - stored_hazard).max() < 0.03
    assert abs(refitted_hazard.mean() - stored_hazard.mean()) < 0.001
    assert [c["weight"] for c in refitted["population"]] == [
        c["weight"] for c in stored["population"]
    ]


@pytest.mark.parametrize("name", FEATURES)
def test_first_month_mean_matches_real(first_month_large, real, name):
    simulated, actual = first_month_large[name].mean(), real[name].astype(float).mean()
    if name in BINARY_FEATURES:
        assert abs(simulated - actual) < 0.02
    else:
        assert abs(simulated - actual) < 0.03 * actual


def test_first_month_contract_shares_match_real(first_month_large, real):
    simulated = first_month_large["contract_period"].value_counts(normalize=True)
    actual = real["contract_period"].astype(int).value_counts(normalize=True)
    for period in (1, 6, 12):
        assert abs(simulated[period] - actual[period]) < 0.02, period
    assert 3 not in simulated.index


def test_first_month_churn_rate_matches_real(first_month_large):
    assert abs(first_month_large[CHURNED].mean() - 0.265) < 0.015


def test_churn_stays_near_real_rate(steady):
    rates = [month.outcomes[CHURNED].mean() for month in steady]
    assert 0.22 < np.mean(rates) < 0.29
    assert min(rates) > 0.18
    assert max(rates) < 0.32


def test_client_count_stays_near_target(steady):
    for month in steady:
        assert 9_500 <= len(month.questionnaires) <= 10_500, month.month


def test_churn_relationships_match_real(steady):
    rows = pd.concat([_labelled(month) for month in steady], ignore_index=True)
    rate = rows.groupby("contract_period")[CHURNED].mean()
    assert rate[1] > 0.35
    assert rate[1] > 3 * rate[12]
    assert rows.loc[rows["lifetime"] <= 1, CHURNED].mean() > 0.45
    assert rows.loc[rows["lifetime"] >= 6, CHURNED].mean() < 0.10
    falling = rows["avg_class_frequency_current_month"] < 0.8 * rows["avg_class_frequency_total"]
    assert rows.loc[falling, CHURNED].mean() > 2 * rows.loc[~falling, CHURNED].mean()
    for flag in ("partner", "promo_friends", "group_visits"):
        by_flag = rows.groupby(flag)[CHURNED].mean()
        assert by_flag[1] < by_flag[0], flag


def test_model_from_simulation_scores_real_file(steady, real):
    training = pd.concat([_labelled(month) for month in steady[:5]], ignore_index=True)
    pipeline = model.candidate_models(seed=0)["hist_gradient_boosting"]
    pipeline.fit(model.feature_matrix(training), training[CHURNED].astype(int))

    probabilities = model.predict(pipeline, real)

    assert roc_auc_score(real[CHURNED].astype(int), probabilities) >= 0.90


@pytest.mark.parametrize("index", [0, 3])
def test_model_from_real_file_scores_simulation(steady, real, index):
    pipeline = model.candidate_models(seed=0)["hist_gradient_boosting"]
    pipeline.fit(model.feature_matrix(real), real[CHURNED].astype(int))
    month = _labelled(steady[index])

    probabilities = model.predict(pipeline, month)

    assert roc_auc_score(month[CHURNED].astype(int), probabilities) >= 0.90


def test_clients_evolve_between_months(steady):
    before, after = _labelled(steady[2]), steady[3].questionnaires
    stayed = before[~before[CHURNED]].merge(after, on=CLIENT_ID, suffixes=("", "_next"))

    assert len(stayed) == (~before[CHURNED]).sum()
    assert set(before.loc[before[CHURNED], CLIENT_ID]).isdisjoint(after[CLIENT_ID])
    assert (stayed["lifetime_next"] == stayed["lifetime"] + 1).all()
    counted_down = stayed["month_to_end_contract_next"] == stayed["month_to_end_contract"] - 1
    renewed = (stayed["month_to_end_contract"] == 1) & (
        stayed["month_to_end_contract_next"] == stayed["contract_period_next"]
    )
    assert (counted_down | renewed).all()
    assert (stayed["age_next"] - stayed["age"]).isin([0, 1]).all()
    assert (stayed["month_to_end_contract_next"] <= stayed["contract_period_next"]).all()


def test_new_clients_get_new_ids(steady):
    seen = set(steady[0].questionnaires[CLIENT_ID])
    for month in steady[1:]:
        ids = month.questionnaires[CLIENT_ID]
        new = month.questionnaires[~ids.isin(seen)]
        assert len(new) == month.joined
        assert (new["lifetime"] == 0).all()
        assert (new["month_to_end_contract"] == new["contract_period"]).all()
        assert new[CLIENT_ID].min() > max(seen)
        seen |= set(ids)


def test_same_seed_gives_same_months():
    first = _simulate(n_clients=2_000, n_months=3, seed=5)
    second = _simulate(n_clients=2_000, n_months=3, seed=5)
    other = _simulate(n_clients=2_000, n_months=3, seed=6)

    for a, b in zip(first, second, strict=True):
        pd.testing.assert_frame_equal(a.questionnaires, b.questionnaires)
        pd.testing.assert_frame_equal(a.outcomes, b.outcomes)
    assert not first[1].questionnaires.equals(other[1].questionnaires)


def test_price_rise_changes_only_from_start():
    change = add_months(START, 3)
    steady = _simulate(n_months=6, seed=9)
    rise = _simulate(n_months=6, seed=9, scenario="price_rise", scenario_start=change)

    for index in range(3):
        pd.testing.assert_frame_equal(steady[index].questionnaires, rise[index].questionnaires)
    for index in (4, 5):
        one_month = [
            (m.questionnaires["contract_period"] == 1).mean() for m in (steady[index], rise[index])
        ]
        assert one_month[1] > one_month[0] + 0.05
    steady_churn = np.mean([m.outcomes[CHURNED].mean() for m in steady[3:]])
    rise_churn = np.mean([m.outcomes[CHURNED].mean() for m in rise[3:]])
    assert rise_churn > steady_churn + 0.04


def test_promo_wave_adds_friend_clients_in_start_month():
    change = add_months(START, 2)
    steady = _simulate(n_months=4, seed=9)
    wave = _simulate(n_months=4, seed=9, scenario="promo_wave", scenario_start=change)

    assert len(wave[2].questionnaires) - len(steady[2].questionnaires) > 1_500
    assert (
        wave[2].questionnaires["promo_friends"].mean()
        > steady[2].questionnaires["promo_friends"].mean() + 0.08
    )
    assert abs(len(wave[3].questionnaires) - 10_000) < 800


def test_unknown_scenario_rejected():
    with pytest.raises(ValueError, match="unknown scenario 'discount'"):
        ClientSimulator(100, seed=1, scenario="discount")


def test_from_real_file_keeps_its_first_month(real_data, real):
    snapshot = read_starting_snapshot(real_data)
    months = list(
        ClientSimulator(
            len(snapshot.questionnaires),
            seed=3,
            first_month=snapshot.questionnaires,
            first_outcomes=snapshot.outcomes,
        ).months(START, 2)
    )
    first = _labelled(months[0])

    assert len(first) == 4_000
    merged = first.merge(real, on=CLIENT_ID, suffixes=("", "_real"))
    assert (merged[CHURNED] == merged["churned_real"]).all()
    assert np.allclose(merged["age"], merged["age_real"].astype(float))
    assert len(months[1].questionnaires) == pytest.approx(4_000, abs=300)


def test_from_file_leaves_out_rows_breaking_rules():
    snapshot = read_starting_snapshot(CASES / "03_age_out_of_range.csv")

    assert snapshot.rows_read == 20
    assert snapshot.rows_left_out == 2
    assert len(snapshot.questionnaires) == 18
    assert snapshot.questionnaires["age"].between(12, 100).all()


def test_from_file_resampled_to_other_size(real_data):
    snapshot = read_starting_snapshot(real_data)
    simulator = ClientSimulator(
        1_000, seed=3, first_month=snapshot.questionnaires, first_outcomes=snapshot.outcomes
    )
    first = next(simulator.months(START, 1))

    assert len(first.questionnaires) == 1_000
    assert first.questionnaires[CLIENT_ID].tolist() == list(range(1, 1_001))
    assert 0.20 < first.outcomes[CHURNED].mean() < 0.33
