"""Tests of the churn reasons, with models trained on the real questionnaires."""

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from gymchurn import model, reasons
from gymchurn.loader import read_questionnaire_csv
from gymchurn.schema import CHURNED, CLIENT_ID, CONTRACT_PERIODS, FEATURES

ALGORITHMS = ["hist_gradient_boosting", "logistic_regression"]
KNOWN_DRIVERS = {"visits", "lifetime", "contract"}

# Values shared by the hand-made clients. Each test adds contract, lifetime and visits.
TYPICAL_VALUES = {
    "gender": 1,
    "near_location": 1,
    "partner": 0,
    "promo_friends": 0,
    "phone": 1,
    "group_visits": 0,
    "age": 28,
    "avg_additional_charges_total": 100.0,
}


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Fit and score with one OpenMP thread, as in test_model.py, so a busy machine stays fast."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def loaded(real_data):
    return read_questionnaire_csv(real_data)


@pytest.fixture(scope="module")
def clients(loaded) -> pd.DataFrame:
    return loaded.questionnaires


@pytest.fixture(scope="module")
def reference(loaded) -> pd.DataFrame:
    return loaded.questionnaires.merge(loaded.outcomes, on=CLIENT_ID)


@pytest.fixture(scope="module")
def predictors(reference, single_thread):
    """A predict function of each candidate, fitted on all real rows."""
    labels = reference[CHURNED].to_numpy(dtype="int64")
    fitted = {}
    for algorithm in ALGORITHMS:
        pipeline = model.candidate_models(seed=0)[algorithm]
        pipeline.fit(model.feature_matrix(reference), labels)
        fitted[algorithm] = lambda frame, pipeline=pipeline: model.predict(pipeline, frame)
    return fitted


@pytest.fixture(scope="module")
def real_attributions(predictors, clients, reference):
    return {
        algorithm: reasons.attribute(predict, clients, reference)
        for algorithm, predict in predictors.items()
    }


def hand_made(*, period, months_left, lifetime, since_first_visit, last_month) -> pd.DataFrame:
    row = {
        **TYPICAL_VALUES,
        "contract_period": period,
        "month_to_end_contract": months_left,
        "lifetime": lifetime,
        "avg_class_frequency_total": since_first_visit,
        "avg_class_frequency_current_month": last_month,
    }
    return pd.DataFrame([row], columns=FEATURES)


def test_reference_values_real_file(reference):
    values = reasons.reference_values(reference)
    retained = reference.loc[~reference[CHURNED].astype(bool)]

    for flag in ["near_location", "partner", "promo_friends", "phone", "group_visits"]:
        assert values[flag] == 1, flag
    assert values["lifetime"] == 4
    assert values["age"] == 30
    assert values["contract_period"] == 6
    assert values["month_to_end_contract"] == 6
    for column in [
        "avg_class_frequency_total",
        "avg_class_frequency_current_month",
        "avg_additional_charges_total",
    ]:
        assert values[column] == pytest.approx(float(retained[column].median())), column
    assert "gender" not in values


def test_reference_values_contract_consistent(reference):
    values = reasons.reference_values(reference)

    assert values["contract_period"] in CONTRACT_PERIODS
    assert 1 <= values["month_to_end_contract"] <= values["contract_period"]


def test_reference_values_months_left_of_chosen_length():
    # Retained clients: three 6-month contracts and two 12-month ones. The months
    # left come from the 6-month clients (2, 3, 5), not from all five (median 5).
    reference = pd.DataFrame(
        {
            **{column: [1] * 6 for column in FEATURES},
            "contract_period": [6, 6, 6, 12, 12, 12],
            "month_to_end_contract": [2, 3, 5, 12, 12, 12],
            CHURNED: [False, False, False, False, False, True],
        }
    )

    values = reasons.reference_values(reference)

    assert values["contract_period"] == 6
    assert values["month_to_end_contract"] == 3


def test_reference_values_missing_label(reference):
    with pytest.raises(ValueError, match="missing the columns \\['churned'\\]"):
        reasons.reference_values(reference.drop(columns=[CHURNED]))

    unlabelled = reference.assign(**{CHURNED: reference[CHURNED].astype("boolean")})
    unlabelled.loc[unlabelled.index[0], CHURNED] = pd.NA
    with pytest.raises(ValueError, match="1 of the 4000 reference rows have no churned label"):
        reasons.reference_values(unlabelled)


def test_reference_values_no_retained_client(reference):
    all_churned = reference.assign(**{CHURNED: True})

    with pytest.raises(ValueError, match="no retained client"):
        reasons.reference_values(all_churned)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_explain_visit_drop_client(predictors, reference, algorithm):
    client = hand_made(period=1, months_left=1, lifetime=1, since_first_visit=2.0, last_month=0.3)

    attribution = reasons.attribute(predictors[algorithm], client, reference)
    (texts,) = reasons.explain(predictors[algorithm], client, reference)

    assert attribution.probability[0] >= 0.5
    assert texts[0] == "visits fell from 2.0 to 0.3 a week"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_explain_new_member_short_contract(predictors, reference, algorithm):
    client = hand_made(period=1, months_left=1, lifetime=1, since_first_visit=1.5, last_month=1.5)

    (texts,) = reasons.explain(predictors[algorithm], client, reference)

    assert "member for 1 month" in texts
    assert "1-month contract" in texts
    assert len(texts) == 3


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_explain_low_risk_client(predictors, reference, algorithm):
    client = hand_made(
        period=12, months_left=10, lifetime=20, since_first_visit=2.5, last_month=2.5
    )

    attribution = reasons.attribute(predictors[algorithm], client, reference)
    (texts,) = reasons.explain(predictors[algorithm], client, reference)

    assert attribution.probability[0] < 0.01
    assert texts == []


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_real_file_first_reason_known_driver(real_attributions, clients, algorithm):
    attribution = real_attributions[algorithm]
    chosen = reasons.top_reasons(attribution, clients)
    high_risk = [
        client_reasons
        for client_reasons, probability in zip(chosen, attribution.probability, strict=True)
        if probability >= 0.5
    ]
    with_reasons = [client_reasons for client_reasons in high_risk if client_reasons]
    first_factors = Counter(client_reasons[0].factor for client_reasons in with_reasons)
    first_texts = Counter(client_reasons[0].text for client_reasons in with_reasons)
    short_membership = {"member for less than a month", "member for 1 month"}

    assert len(high_risk) >= 900
    # Near a probability of 1 a client may have no single factor worth 0.01.
    assert len(with_reasons) >= 0.98 * len(high_risk)
    assert first_factors.most_common(1)[0][0] in KNOWN_DRIVERS
    assert sum(first_factors[factor] for factor in KNOWN_DRIVERS) >= 0.9 * len(with_reasons)
    assert first_texts.most_common(1)[0][0] in short_membership


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_top_reasons_largest_positive_contributions(real_attributions, clients, algorithm):
    attribution = real_attributions[algorithm]
    matrix = attribution.contributions

    chosen = reasons.top_reasons(attribution, clients)

    assert len(chosen) == len(clients)
    factors = list(matrix.columns)
    values = matrix.to_numpy()
    for row, client_reasons in enumerate(chosen):
        contributions = [reason.contribution for reason in client_reasons]
        listed = [factors.index(reason.factor) for reason in client_reasons]
        unlisted = np.delete(values[row], listed)
        assert len(client_reasons) <= 3
        assert all(value >= reasons.DEFAULT_MIN_CONTRIBUTION for value in contributions)
        assert contributions == sorted(contributions, reverse=True)
        assert contributions == [values[row, column] for column in listed]
        if len(client_reasons) == 3:
            assert (unlisted <= contributions[-1]).all()
        else:
            assert (unlisted < reasons.DEFAULT_MIN_CONTRIBUTION).all()


def test_top_reasons_without_threshold_positive(real_attributions, clients):
    attribution = real_attributions["hist_gradient_boosting"]

    chosen = reasons.top_reasons(attribution, clients, min_contribution=0.0)

    listed = [reason.contribution for client_reasons in chosen for reason in client_reasons]
    assert len(listed) > 0
    assert min(listed) > 0.0
    assert max(len(client_reasons) for client_reasons in chosen) == 3


def test_top_reasons_top_limit(real_attributions, clients):
    attribution = real_attributions["hist_gradient_boosting"]
    up_to_three = reasons.top_reasons(attribution, clients)

    first_only = reasons.top_reasons(attribution, clients, top=1)
    no_reasons = reasons.top_reasons(attribution, clients, top=0)

    assert first_only == [client_reasons[:1] for client_reasons in up_to_three]
    assert no_reasons == [[] for _ in range(len(clients))]
    with pytest.raises(ValueError, match="top must be 0 or more; got -1"):
        reasons.top_reasons(attribution, clients, top=-1)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_attribute_matches_one_row_rescoring(predictors, clients, reference, algorithm):
    predict = predictors[algorithm]
    sample = clients.sample(8, random_state=1)
    attribution = reasons.attribute(predict, sample, reference)

    for position in range(len(sample)):
        row = sample.iloc[[position]]
        probability = predict(row)[0]
        assert attribution.probability[position] == pytest.approx(probability)
        for factor, columns in reasons.FACTORS.items():
            changed = row.astype({column: "float64" for column in columns})
            for column in columns:
                changed[column] = float(attribution.reference[column])
            expected = probability - predict(changed)[0]
            actual = attribution.contributions.iloc[position][factor]
            assert actual == pytest.approx(expected, abs=1e-12), factor


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_attribute_min_probability_same_reasons(predictors, clients, real_attributions, algorithm):
    full = real_attributions[algorithm]
    shortcut = reasons.attribute_against(
        predictors[algorithm], clients, full.reference, min_probability=0.01
    )

    below = full.probability < 0.01
    assert 0 < below.sum() < len(clients)
    assert np.array_equal(shortcut.probability, full.probability)
    assert shortcut.contributions[below].isna().all(axis=None)
    assert not shortcut.contributions[~below].isna().any(axis=None)
    # A batched model can differ in the last bits between two row subsets.
    np.testing.assert_allclose(
        shortcut.contributions[~below], full.contributions[~below], rtol=0, atol=1e-12
    )
    assert reasons.top_phrases(shortcut, clients) == reasons.top_phrases(full, clients)


def test_attribute_min_probability_skips_rescoring(predictors, clients, reference):
    frames = []

    def recording_predict(frame):
        frames.append(frame)
        return predictors["logistic_regression"](frame)

    attribution = reasons.attribute(predictors["logistic_regression"], clients, reference)
    reasons.attribute_against(
        recording_predict, clients, attribution.reference, min_probability=0.01
    )

    low_risk = set(clients.index[attribution.probability < 0.01])
    rescored = set().union(*(set(frame.index) for frame in frames[1:]))
    assert len(low_risk) > 0
    assert rescored
    assert rescored.isdisjoint(low_risk)


def test_top_reasons_rejects_unmeasured_threshold(predictors, clients, reference):
    values = reasons.reference_values(reference)
    sample = clients.iloc[:50]
    attribution = reasons.attribute_against(
        predictors["logistic_regression"], sample, values, min_probability=0.05
    )

    with pytest.raises(ValueError, match="min_contribution 0.01 is below"):
        reasons.top_reasons(attribution, sample)
    with pytest.raises(ValueError, match="min_contribution 0.01 is below"):
        reasons.top_phrases(attribution, sample)


def test_top_phrases_are_top_reasons_texts(real_attributions, clients):
    attribution = real_attributions["logistic_regression"]

    phrases = reasons.top_phrases(attribution, clients)

    expected = [
        [reason.text for reason in client_reasons]
        for client_reasons in reasons.top_reasons(attribution, clients)
    ]
    assert phrases == expected
    assert any(phrases)


def test_attribute_one_predict_call_per_factor(predictors, clients, reference):
    frames = []

    def recording_predict(frame):
        frames.append(frame)
        return predictors["hist_gradient_boosting"](frame)

    reasons.attribute(recording_predict, clients, reference)

    assert len(frames) == 1 + len(reasons.FACTORS)
    assert len(frames[0]) == len(clients)
    for frame, factor in zip(frames[1:], reasons.FACTORS, strict=True):
        assert 0 < len(frame) <= len(clients), factor
        assert (frame["month_to_end_contract"] <= frame["contract_period"]).all(), factor
    contract_frame = frames[1 + list(reasons.FACTORS).index("contract")]
    assert (contract_frame["contract_period"] == 6).all()
    assert (contract_frame["month_to_end_contract"] == 6).all()


def test_attribute_integer_visit_columns_not_truncated(reference):
    frames = []

    def recording_predict(frame):
        frames.append(frame)
        return np.full(len(frame), 0.5)

    client = hand_made(period=1, months_left=1, lifetime=1, since_first_visit=2, last_month=0)
    reasons.attribute(recording_predict, client, reference)

    visits_frame = frames[1 + list(reasons.FACTORS).index("visits")]
    retained = reference.loc[~reference[CHURNED].astype(bool)]
    expected = float(retained["avg_class_frequency_total"].median())
    assert client["avg_class_frequency_total"].dtype == np.dtype("int64")
    assert visits_frame["avg_class_frequency_total"].iloc[0] == pytest.approx(expected)


def test_explain_keeps_client_order(predictors, clients, reference):
    predict = predictors["hist_gradient_boosting"]
    sample = clients.sample(300, random_state=2)
    permutation = np.random.default_rng(3).permutation(len(sample))
    shuffled = sample.iloc[permutation].set_index(np.arange(1000, 1300))

    in_order = reasons.explain(predict, sample, reference)
    reordered = reasons.explain(predict, shuffled, reference)

    assert reordered == [in_order[position] for position in permutation]
    assert any(in_order)


def test_explain_empty_clients(clients, reference):
    def failing_predict(frame):
        raise AssertionError("predict must not be called without clients")

    assert reasons.explain(failing_predict, clients.iloc[:0], reference) == []


def test_attribute_missing_client_column(predictors, clients, reference):
    with pytest.raises(ValueError, match="clients is missing the columns \\['lifetime'\\]"):
        reasons.attribute(
            predictors["logistic_regression"], clients.drop(columns=["lifetime"]), reference
        )


def test_attribute_invalid_predict_output(clients, reference):
    sample = clients.iloc[:5]

    with pytest.raises(ValueError, match="shape \\(5, 2\\) for 5 rows"):
        reasons.attribute(lambda frame: np.full((len(frame), 2), 0.5), sample, reference)
    with pytest.raises(ValueError, match="outside \\[0, 1\\] or NaN"):
        reasons.attribute(lambda frame: np.full(len(frame), np.nan), sample, reference)
    with pytest.raises(ValueError, match="outside \\[0, 1\\] or NaN"):
        reasons.attribute(lambda frame: np.full(len(frame), 1.5), sample, reference)


@pytest.mark.parametrize(
    ("count", "unit", "expected"),
    [
        (0, "month", "0 months"),
        (1, "month", "1 month"),
        (1.0, "month", "1 month"),
        (3, "month", "3 months"),
        (12, "month", "12 months"),
    ],
)
def test_format_count(count, unit, expected):
    assert reasons.format_count(count, unit) == expected


@pytest.mark.parametrize(
    ("factor", "values", "expected"),
    [
        ("visits", (2.1, 0.4), "visits fell from 2.1 to 0.4 a week"),
        ("visits", (2.04, 0.0), "visits fell from 2.0 to 0.0 a week"),
        ("visits", (1.04, 1.02), "only 1.0 visits a week last month"),
        ("visits", (0.8, 1.26), "only 1.3 visits a week last month"),
        ("contract", (1, 1), "1-month contract"),
        ("contract", (6, 6), "6-month contract"),
        ("contract", (12, 1), "12-month contract ends in 1 month"),
        ("contract", (6, 3), "6-month contract ends in 3 months"),
        ("lifetime", (0,), "member for less than a month"),
        ("lifetime", (1,), "member for 1 month"),
        ("lifetime", (3,), "member for 3 months"),
        ("group_visits", (0,), "no group classes"),
        ("group_visits", (1,), "attends group classes"),
        ("near_location", (0,), "lives or works far from the club"),
        ("partner", (0,), "not a partner-company employee"),
        ("promo_friends", (0,), "did not join through a friend"),
        ("phone", (0,), "no phone number on file"),
        ("age", (19,), "age 19"),
        ("avg_additional_charges_total", (35.4,), "spends 35 on extras"),
        ("avg_additional_charges_total", (1234.4,), "spends 1,234 on extras"),
        ("age", (np.nan,), "age not recorded"),
        ("visits", (2.0, np.nan), "visit frequency not recorded"),
    ],
)
def test_describe_phrases(factor, values, expected):
    named = dict(zip(reasons.FACTORS[factor], values, strict=True))

    assert reasons.describe(factor, named) == expected


def test_top_reasons_missing_value_phrase(reference):
    client = hand_made(period=1, months_left=1, lifetime=1, since_first_visit=2.0, last_month=0.3)
    client = client.astype({"age": "Int64"})
    client.loc[0, "age"] = pd.NA

    def age_only_predict(frame):
        return np.where(frame["age"].isna(), 0.9, 0.2)

    attribution = reasons.attribute(age_only_predict, client, reference)
    (chosen,) = reasons.top_reasons(attribution, client)

    assert [reason.text for reason in chosen] == ["age not recorded"]
    assert chosen[0].contribution == pytest.approx(0.7)


@pytest.mark.parametrize("top", [3, 1])
def test_phrase_sets_join_top_phrases(real_attributions, clients, top):
    attribution = real_attributions["hist_gradient_boosting"]

    sets = reasons.phrase_sets(attribution, clients, top=top)
    phrases = reasons.top_phrases(attribution, clients, top=top)

    assert len(sets) == len(clients) == 4000
    assert [reasons.split_phrases(text) for text in sets] == phrases
    # Clients share sets of reasons: far fewer distinct texts than clients.
    assert 10 < len(sets.categories) < 2000
    assert sum(not text for text in sets) == sum(not p for p in phrases) > 0


def test_phrase_sets_without_any_reason(real_attributions, clients):
    sets = reasons.phrase_sets(real_attributions["logistic_regression"], clients, top=0)

    assert list(sets.categories) == [""]
    assert len(sets) == 4000


def test_no_phrase_contains_the_separator(real_attributions, clients):
    attribution = real_attributions["hist_gradient_boosting"]
    texts = {
        reason.text
        for client_reasons in reasons.top_reasons(attribution, clients)
        for reason in client_reasons
    }
    texts |= set(reasons._MISSING_PHRASES.values())
    texts |= {phrase for pair in reasons._FLAG_PHRASES.values() for phrase in pair}

    assert len(texts) > 20
    assert not any(reasons.SEPARATOR in text for text in texts)


@pytest.mark.parametrize("factor", list(reasons.FACTORS))
def test_describe_rows_equals_one_by_one(clients, factor):
    """Phrasing the distinct shown values once gives each client's own phrase."""
    frame = clients.copy()
    edges = [0.05, 0.15, 0.25, 0.35, 0.45, 1.45, 2.25, 2.35, 2.5, 3.5, 0.5, 1.0049999, np.nan]
    for column in reasons.FACTORS[factor]:
        values = frame[column].to_numpy(dtype="float64", copy=True)
        values[: len(edges)] = edges
        frame[column] = values
    rows = np.r_[np.arange(len(edges)), np.arange(len(edges), len(frame), 2)]

    phrases = reasons._describe_rows(factor, frame, rows)

    own = {
        column: frame[column].to_numpy(dtype="float64", na_value=np.nan)
        for column in reasons.FACTORS[factor]
    }
    expected = [
        reasons.describe(factor, {column: values[row] for column, values in own.items()})
        for row in rows
    ]
    assert phrases.tolist() == expected
    assert len(set(expected)) > 1
