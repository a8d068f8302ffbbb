"""Tests of the churn drivers on the real questionnaires."""

import datetime as dt
import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from gymchurn import drivers as drivers_module
from gymchurn import model, steps
from gymchurn.drivers import BY_VALUE_FEATURES, LOWERS_CHURN, RAISES_CHURN, find_drivers
from gymchurn.loader import read_questionnaire_csv
from gymchurn.registry import ChosenModel
from gymchurn.schema import CHURNED, CLIENT_ID, FEATURE_LABELS, FEATURES, MONTH

SEED = 42
MONTH_DESCRIBED = dt.date(2026, 10, 1)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Fit with one OpenMP thread, as in test_model.py, so a busy machine stays fast."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def labelled(real_data) -> pd.DataFrame:
    """The real questionnaires with their outcomes (0.0 or 1.0), as October 2026."""
    loaded = read_questionnaire_csv(real_data)
    frame = loaded.questionnaires.merge(loaded.outcomes, on=CLIENT_ID)
    return frame.assign(**{CHURNED: frame[CHURNED].astype("float64"), MONTH: MONTH_DESCRIBED})


@pytest.fixture(scope="module")
def pipeline(labelled, single_thread):
    """The logistic-regression candidate fitted on all labelled rows."""
    candidate = model.candidate_models(SEED)["logistic_regression"]
    return candidate.fit(model.feature_matrix(labelled), labelled[CHURNED].to_numpy(dtype="int64"))


@pytest.fixture(scope="module")
def drivers(pipeline, labelled):
    return find_drivers(pipeline, labelled, labelled, seed=SEED)


def refitted_rows(caplog) -> int:
    """Return the refit's row count from the one INFO line of find_drivers."""
    records = [r for r in caplog.records if r.name == "gymchurn.drivers"]
    assert len(records) == 1
    return int(records[0].getMessage().split("model refitted on ")[1].split(" rows")[0])


def test_find_drivers_top_five_promised_features(drivers):
    top_five = drivers.influence["feature"].head(5).to_list()

    assert "lifetime" in top_five
    assert "avg_class_frequency_current_month" in top_five
    assert "contract_period" in top_five or "month_to_end_contract" in top_five


def test_find_drivers_holdout_size_and_roc_auc(drivers):
    assert drivers.holdout_rows == 1000
    assert drivers.holdout_roc_auc > 0.9
    assert drivers.holdout_roc_auc <= 1.0


def test_influence_one_row_per_feature(drivers):
    influence = drivers.influence

    assert sorted(influence["feature"]) == sorted(FEATURES)
    assert influence["rank"].to_list() == list(range(1, len(FEATURES) + 1))
    assert influence["permutation_importance"].is_monotonic_decreasing
    assert (influence["permutation_std"] >= 0).all()
    assert influence["label"].to_list() == [FEATURE_LABELS[f] for f in influence["feature"]]


def test_find_drivers_direction_follows_sign(drivers):
    influence = drivers.influence
    expected = np.where(influence["lr_coefficient"] > 0, RAISES_CHURN, LOWERS_CHURN)

    assert influence["direction"].to_list() == expected.tolist()


def test_find_drivers_lifetime_lowers_churn(drivers):
    lifetime = drivers.influence.set_index("feature").loc["lifetime"]

    assert lifetime["lr_coefficient"] < 0
    assert lifetime["direction"] == LOWERS_CHURN


def test_find_drivers_contract_period_churn_rates(drivers, labelled):
    observed = labelled.groupby("contract_period")[CHURNED].mean()
    contract = drivers.churn_by_value[drivers.churn_by_value["feature"] == "contract_period"]
    rates = contract.set_index("bin_label")["churn_rate"]

    assert rates["1"] == pytest.approx(observed[1])
    assert rates["12"] == pytest.approx(observed[12])
    assert rates["1"] > rates["12"]


def test_churn_by_value_covers_all_rows(drivers, labelled):
    table = drivers.churn_by_value
    clients = table.groupby("feature")["clients"].sum()
    churned = table.groupby("feature")["churned"].sum()

    assert sorted(clients.index) == sorted(FEATURES)
    assert (clients == len(labelled)).all()
    assert (churned == labelled[CHURNED].sum()).all()


@pytest.mark.parametrize("feature", FEATURES)
def test_churn_by_value_bins_match_rows(drivers, labelled, feature):
    bins = drivers.churn_by_value[drivers.churn_by_value["feature"] == feature]
    values = labelled[feature].astype("float64")

    assert bins["bin_order"].to_list() == list(range(len(bins)))
    assert (bins["upper"].iloc[:-1].to_numpy() < bins["lower"].iloc[1:].to_numpy()).all()
    if feature in BY_VALUE_FEATURES:
        assert bins["lower"].to_list() == sorted(values.unique())
    else:
        assert len(bins) <= 5
    for row in bins.itertuples():
        members = labelled[values.between(row.lower, row.upper)]
        assert row.lower == members[feature].min()
        assert row.upper == members[feature].max()
        assert row.clients == len(members)
        assert row.churned == members[CHURNED].sum()
        assert row.churn_rate == pytest.approx(members[CHURNED].mean())


def test_churn_by_value_integer_labels(drivers, labelled):
    lifetime = drivers.churn_by_value[drivers.churn_by_value["feature"] == "lifetime"]
    expected = [
        str(lower) if lower == upper else f"{lower}-{upper}"
        for lower, upper in zip(
            lifetime["lower"].astype("int64"), lifetime["upper"].astype("int64"), strict=True
        )
    ]

    assert lifetime["bin_label"].to_list() == expected
    assert lifetime["lower"].iloc[0] == labelled["lifetime"].min()
    assert lifetime["upper"].iloc[-1] == labelled["lifetime"].max()


def test_churn_by_value_constant_feature_one_bin(pipeline, labelled):
    reference = labelled[labelled["age"] == 29]

    result = find_drivers(pipeline, labelled, reference, seed=SEED)

    age = result.churn_by_value[result.churn_by_value["feature"] == "age"]
    assert age["bin_label"].to_list() == ["29"]
    assert age["clients"].to_list() == [len(reference)]
    assert age["churn_rate"].iloc[0] == pytest.approx(reference[CHURNED].mean())


def test_find_drivers_shuffled_rows_same_frames(drivers, pipeline, labelled):
    training = labelled.sample(frac=1.0, random_state=7)
    reference = labelled.sample(frac=1.0, random_state=8).reset_index(drop=True)

    shuffled = find_drivers(pipeline, training, reference, seed=SEED)

    pd.testing.assert_frame_equal(shuffled.influence, drivers.influence)
    pd.testing.assert_frame_equal(shuffled.churn_by_value, drivers.churn_by_value)
    assert shuffled.holdout_rows == drivers.holdout_rows
    assert shuffled.holdout_roc_auc == drivers.holdout_roc_auc


def test_find_drivers_logs_one_info_line(pipeline, labelled, caplog):
    with caplog.at_level(logging.INFO, logger="gymchurn.drivers"):
        result = find_drivers(pipeline, labelled, labelled, seed=SEED)

    top_three = result.influence["feature"].head(3).to_list()
    assert refitted_rows(caplog) == 3000
    message = caplog.records[-1].getMessage()
    assert "1000 held-out rows" in message
    assert f"ROC-AUC {result.holdout_roc_auc:.4f}" in message
    assert message.index(top_three[0]) < message.index(top_three[1]) < message.index(top_three[2])


def test_find_drivers_samples_max_training_rows(pipeline, labelled, caplog):
    with caplog.at_level(logging.INFO, logger="gymchurn.drivers"):
        result = find_drivers(pipeline, labelled, labelled, seed=SEED, max_training_rows=2000)

    assert refitted_rows(caplog) == 2000
    assert result.holdout_rows == 1000
    assert result.holdout_roc_auc > 0.9


def test_find_drivers_matches_client_and_month(pipeline, labelled, caplog):
    # The same clients a month earlier are other rows, so only the held-out
    # October rows are left out of the refit.
    september = labelled.assign(**{MONTH: dt.date(2026, 9, 1)})
    training = pd.concat([september, labelled], ignore_index=True)

    with caplog.at_level(logging.INFO, logger="gymchurn.drivers"):
        result = find_drivers(pipeline, training, labelled, seed=SEED)

    assert refitted_rows(caplog) == 4000 + 3000
    assert result.holdout_rows == 1000


def test_find_drivers_single_class_holdout_raises(pipeline, labelled):
    # Of 400 rows with 2 churned, the stratified 100 held out get 0 or 1
    # churned; seed 42 gives 0.
    churned = labelled[labelled[CHURNED] == 1.0].head(2)
    retained = labelled[labelled[CHURNED] == 0.0].head(398)
    reference = pd.concat([churned, retained], ignore_index=True)

    with pytest.raises(ValueError, match="held-out reference rows all have churned=0"):
        find_drivers(pipeline, labelled, reference, seed=SEED)


def test_find_drivers_one_class_reference_raises(pipeline, labelled):
    retained = labelled[labelled[CHURNED] == 0.0]

    with pytest.raises(ValueError, match=f"found 0 churned and {len(retained)} retained"):
        find_drivers(pipeline, labelled, retained, seed=SEED)


def test_find_drivers_repeated_key_raises(pipeline, labelled):
    repeated = pd.concat([labelled, labelled.head(1)], ignore_index=True)

    with pytest.raises(
        ValueError, match="training has 2 rows whose \\(client_id, month\\) repeats"
    ):
        find_drivers(pipeline, repeated, labelled, seed=SEED)


def test_find_drivers_missing_column_raises(pipeline, labelled):
    with pytest.raises(ValueError, match=r"reference is missing the columns \['lifetime'\]"):
        find_drivers(pipeline, labelled, labelled.drop(columns="lifetime"), seed=SEED)


def test_find_drivers_without_refit(pipeline, labelled, monkeypatch):
    # Any refit would fail: the drivers of a model that never saw the rows use it as it is.
    monkeypatch.setattr(drivers_module, "settled_clone", _no_refit)
    holdout = drivers_module._holdout_rows(drivers_module._sorted_rows(labelled), SEED)

    result = find_drivers(pipeline, labelled, labelled, seed=SEED, refit=False)

    expected = roc_auc_score(
        holdout[CHURNED].to_numpy(dtype="int64"),
        pipeline.predict_proba(model.feature_matrix(holdout))[:, 1],
    )
    assert result.holdout_rows == 1000
    assert result.holdout_roc_auc == expected
    assert "lifetime" in result.influence["feature"].head(5).to_list()


def _no_refit(pipeline):
    raise AssertionError("the model was refitted")


@pytest.mark.parametrize(
    ("training_months", "refit"),
    [
        # A champion trained before the described month has not seen its rows.
        ((dt.date(2026, 8, 1), dt.date(2026, 9, 1)), False),
        ((dt.date(2026, 9, 1), MONTH_DESCRIBED), True),
        # A model trained in the run: its months are the training rows'.
        (None, True),
    ],
)
def test_explain_refit_by_training_months(pipeline, labelled, monkeypatch, training_months, refit):
    calls = []
    monkeypatch.setattr(steps, "find_drivers", lambda *args, **kwargs: calls.append(kwargs))
    september = labelled.assign(**{MONTH: dt.date(2026, 9, 1)})
    checked = steps.CheckedData(
        month=dt.date(2026, 11, 1),
        mode="forward",
        scoring=None,
        training=pd.concat([september, labelled], ignore_index=True),
        training_report=None,
    )
    chosen = ChosenModel(
        "v1",
        "logistic_regression",
        pipeline,
        {},
        None,
        "loaded champion",
        "",
        "auto",
        training_months=training_months,
    )

    steps.explain(chosen, checked, SimpleNamespace(random_seed=SEED))

    assert [call["refit"] for call in calls] == [refit]


def test_find_drivers_warns_on_few_holdout_rows(pipeline, labelled, caplog):
    reference = labelled.head(400)

    with caplog.at_level(logging.INFO, logger="gymchurn.drivers"):
        result = find_drivers(pipeline, labelled, reference, seed=SEED)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert result.holdout_rows == 100
    assert len(warnings) == 1
    assert "measured on only 100 held-out rows, fewer than 200" in warnings[0]


def test_find_drivers_no_warning_on_real_month(pipeline, labelled, caplog):
    with caplog.at_level(logging.INFO, logger="gymchurn.drivers"):
        result = find_drivers(pipeline, labelled, labelled, seed=SEED)

    assert result.holdout_rows == 1000
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
