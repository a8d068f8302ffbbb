"""Tests of the month's target groups, measures and patterns on the real questionnaires."""

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from gymchurn import insights as insights_module
from gymchurn import model
from gymchurn.drivers import find_drivers
from gymchurn.insights import build_insights, rank_measures, suggest_actions
from gymchurn.loader import read_questionnaire_csv
from gymchurn.measures import Condition, Measure, Measures, MeasuresFileError, load_measures
from gymchurn.schema import CHURNED, CLIENT_ID, MONTH
from gymchurn.segments import CLUSTER_ID, segment_clients
from gymchurn.settings import Settings
from gymchurn.steps import risk_tiers

SEED = 42
OCTOBER = dt.date(2026, 10, 1)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def labelled(real_data) -> pd.DataFrame:
    loaded = read_questionnaire_csv(real_data)
    frame = loaded.questionnaires.merge(loaded.outcomes, on=CLIENT_ID)
    return frame.assign(**{MONTH: OCTOBER, CHURNED: frame[CHURNED].astype("float64")})


@pytest.fixture(scope="module")
def parts(labelled, single_thread):
    """Scores of the logistic-regression candidate, segments and drivers of the real file."""
    pipeline = model.candidate_models(SEED)["logistic_regression"]
    pipeline.fit(model.feature_matrix(labelled), labelled[CHURNED].astype(int))
    probabilities = model.predict(pipeline, labelled)
    scores = pd.DataFrame(
        {
            CLIENT_ID: labelled[CLIENT_ID],
            "churn_probability": probabilities,
            "risk_tier": risk_tiers(probabilities, Settings(_env_file=None)),
            "reasons": [[] for _ in range(len(labelled))],
        }
    )
    segments = segment_clients(labelled, labelled, n_clusters=5, seed=SEED)
    drivers = find_drivers(pipeline, labelled, labelled, seed=SEED)
    return scores, segments, drivers


def _insights(labelled, parts, measures=None, clients=None):
    scores, segments, drivers = parts
    clients = labelled if clients is None else clients
    return build_insights(OCTOBER, clients, labelled, scores, segments, drivers, measures)


@pytest.fixture(scope="module")
def insights(labelled, parts):
    return _insights(labelled, parts)


def test_target_groups_rank_segments_by_expected_churners(insights, parts):
    scores, segments, _ = parts
    expected = (
        scores.merge(segments.assignments, on=CLIENT_ID)
        .groupby(CLUSTER_ID)["churn_probability"]
        .sum()
        .sort_values(ascending=False)
    )
    groups = insights.target_groups

    assert groups[CLUSTER_ID].to_list() == expected.index[:3].to_list()
    assert groups["expected_churners"].to_numpy() == pytest.approx(expected.iloc[:3].to_numpy())
    assert (groups[["high", "medium", "low"]].sum(axis=1) == groups["size"]).all()
    assert insights.clusters["expected_churners"].sum() == pytest.approx(
        scores["churn_probability"].sum()
    )


def test_recommendations_name_the_segment_with_most_expected_churners(insights):
    top = insights.clusters.loc[insights.clusters["expected_churners"].idxmax()]
    first = insights.measures.iloc[0]

    assert first[CLUSTER_ID] == top[CLUSTER_ID]
    assert first["group"] == top["name"]
    assert top["name"] in insights.conclusions[2]
    # On the real file the segment with most expected churners is mostly 1-month clients.
    assert "Offer a longer contract" in set(
        insights.measures.loc[insights.measures[CLUSTER_ID] == top[CLUSTER_ID], "measure"]
    )


def test_measures_count_the_clients_their_rules_target(insights, labelled, parts):
    scores, segments, _ = parts
    rules = {m.title: m for m in load_measures().measures}
    frame = labelled.merge(scores, on=CLIENT_ID).merge(segments.assignments, on=CLIENT_ID)

    assert len(insights.measures) >= 3
    for row in insights.measures.itertuples():
        members = frame[frame[CLUSTER_ID] == row.cluster_id]
        hit = members[
            rules[row.measure].targets(members) & members["risk_tier"].isin(["high", "medium"])
        ]
        assert row.clients == len(hit)
        assert row.expected_churners == pytest.approx(hit["churn_probability"].sum())


def test_a_changed_rules_file_changes_the_measures(labelled, parts, tmp_path):
    rules = tmp_path / "measures.toml"
    rules.write_text(
        "[settings]\ntarget_groups = 1\ntop_drivers = 2\n\n"
        "[[measure]]\n"
        'title = "Call new members"\n'
        'action = "Call every member in the first two months."\n'
        'clients = { lifetime = "<= 2" }\n'
        "min_share = 0.1\n\n"
        "[[measure]]\n"
        'title = "Promote group classes"\n'
        'action = "Offer a trial class."\n'
        'drivers = ["group_visits"]\n'
        'clients = { group_visits = "== 0" }\n',
        encoding="utf-8",
    )

    changed = _insights(labelled, parts, load_measures(rules))

    # Group classes are no top-2 driver on the real file, so only the first measure is left.
    assert changed.measures["measure"].to_list() == ["Call new members"]
    assert len(changed.target_groups) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[measure]]\ntitle = "A"\naction = "B"\nclients = { weight = "> 1" }\n', "weight"),
        ('[[measure]]\ntitle = "A"\naction = "B"\nclients = { age = "about 30" }\n', "about 30"),
        ('[[measure]]\ntitle = "A"\nclients = { age = "> 30" }\n', "missing key 'action'"),
        ("[[measure]\n", "not valid TOML"),
        ('[settings]\ntiers = ["urgent"]\n[[measure]]\n', "tiers"),
        ("settings = 5\n[[measure]]\n", "settings must be a table"),
        ('measure = ["x"]\n', "each measure must be a table"),
        ("[settings]\ntiers = 3\n[[measure]]\n", "tiers"),
        (
            '[[measure]]\ntitle = "A"\naction = "B"\ndrivers = "age"\nclients = { age = "> 1" }\n',
            "drivers must be a list",
        ),
        (
            '[[measure]]\ntitle = "Call"\naction = "B"\nclients = { age = "> 1" }\n'
            '[[measure]]\ntitle = "call "\naction = "C"\nclients = { age = "< 1" }\n',
            r"measure 2 \(call \): measure 1 has the same title",
        ),
        # Saved by an editor in Windows-1252: \xe9 is not UTF-8.
        (b'[[measure]]\ntitle = "Caf\xe9"\n', "not UTF-8 text"),
    ],
)
def test_a_broken_rules_file_is_refused_with_its_name(tmp_path, text, message):
    rules = tmp_path / "measures.toml"
    if isinstance(text, bytes):
        rules.write_bytes(text)
    else:
        rules.write_text(text, encoding="utf-8")

    with pytest.raises(MeasuresFileError, match=message) as error:
        load_measures(rules)
    assert str(rules) in str(error.value)


def test_patterns_carry_the_months_numbers(insights, labelled):
    far = labelled.loc[labelled["near_location"] == 0, CHURNED].mean()
    near = labelled.loc[labelled["near_location"] == 1, CHURNED].mean()

    distance = [text for text in insights.patterns if "far from the club" in text]
    assert distance == [
        f"Clients who live or work far from the club leave at {far:.1%} a month "
        f"({(labelled['near_location'] == 0).sum():,} clients), those nearby at {near:.1%} "
        f"({(labelled['near_location'] == 1).sum():,} clients)."
    ]
    assert any("spend" in text for text in insights.patterns)
    assert len(insights.patterns) >= 5


def test_another_month_gives_other_text(insights, labelled, parts):
    scores, segments, drivers = parts
    half = labelled[labelled[CLIENT_ID] % 2 == 0]
    other = build_insights(
        dt.date(2026, 11, 1),
        half,
        half,
        scores[scores[CLIENT_ID].isin(half[CLIENT_ID])],
        segment_clients(half, half, n_clusters=5, seed=SEED),
        drivers,
    )

    assert other.conclusions[0] != insights.conclusions[0]
    assert "2026-11" in other.conclusions[0]
    assert other.patterns != insights.patterns
    assert np.isclose(
        other.clusters["expected_churners"].sum(),
        scores.loc[scores[CLIENT_ID].isin(half[CLIENT_ID]), "churn_probability"].sum(),
    )


def _rules(*measures: Measure, top_drivers: int = 2) -> Measures:
    return Measures(measures, 3, top_drivers, ("high", "medium"), Path("measures.toml"))


def _measure(title: str, drivers: tuple[str, ...], condition: Condition) -> Measure:
    return Measure(title, f"{title} for them.", drivers, (condition,), 0.0)


LONGER_CONTRACT = _measure(
    "Longer contract", ("contract_period",), Condition("contract_period", "==", 1)
)
ONBOARDING = _measure("Onboarding", ("lifetime",), Condition("lifetime", "<=", 3))
GROUP_CLASS = _measure("Group class", ("group_visits",), Condition("group_visits", "==", 0))
CALL = _measure("Call", (), Condition("age", ">=", 18))
# lifetime is the strongest driver, contract_period the second, group_visits the fifth.
INFLUENCE = pd.DataFrame(
    {
        "feature": ["lifetime", "contract_period", "age", "gender", "group_visits"],
        "rank": [1, 2, 3, 4, 5],
    }
)


def _clients(rows: list[tuple]) -> pd.DataFrame:
    columns = [CLIENT_ID, CLUSTER_ID, "risk_tier", "contract_period", "lifetime", "group_visits"]
    return pd.DataFrame(rows, columns=columns).assign(age=30)


def test_rank_measures_by_strongest_driver():
    ranking = rank_measures(INFLUENCE, _rules(CALL, GROUP_CLASS, LONGER_CONTRACT, ONBOARDING))

    # group_visits ranks fifth, outside the top 2, so Group class is left out. Call names
    # no drivers, so it comes last.
    assert [measure.title for measure in ranking] == ["Onboarding", "Longer contract", "Call"]


def test_suggest_actions_prefers_segment_recommendation():
    clients = _clients([(1, 0, "high", 1, 2, 1), (2, 1, "high", 1, 2, 1)])
    recommended = pd.DataFrame({CLUSTER_ID: [0], "measure": ["Longer contract"]})

    actions = suggest_actions(clients, recommended, INFLUENCE, _rules(LONGER_CONTRACT, ONBOARDING))

    # Segment 0 has a recommendation of its own, and segment 1 falls back to the ranking.
    assert actions.to_list() == ["Longer contract", "Onboarding"]


def test_suggest_actions_skips_measures_that_do_not_fit():
    clients = _clients(
        [(1, 0, "high", 12, 2, 1), (2, 0, "medium", 12, 40, 1), (3, 0, "high", 1, 40, 1)]
    )
    recommended = pd.DataFrame({CLUSTER_ID: [0], "measure": ["Longer contract"]})

    actions = suggest_actions(clients, recommended, INFLUENCE, _rules(LONGER_CONTRACT, ONBOARDING))

    assert actions.astype(object).where(actions.notna(), None).to_list() == [
        "Onboarding",
        None,
        "Longer contract",
    ]


def test_suggest_actions_none_outside_targeted_tiers():
    clients = _clients([(1, 0, "low", 1, 2, 0), (2, 0, "high", 1, 2, 0)])
    recommended = pd.DataFrame({CLUSTER_ID: [], "measure": []})

    actions = suggest_actions(clients, recommended, INFLUENCE, _rules(ONBOARDING))

    assert pd.isna(actions.iloc[0])
    assert actions.iloc[1] == "Onboarding"


def test_suggest_actions_ignore_row_order():
    clients = _clients(
        [
            (1, 0, "high", 1, 2, 0),
            (2, 1, "high", 12, 9, 0),
            (3, 1, "medium", 1, 40, 0),
            (4, 2, "high", 6, 1, 1),
        ]
    )
    recommended = pd.DataFrame({CLUSTER_ID: [1, 2], "measure": ["Longer contract", "Onboarding"]})
    rules = _rules(LONGER_CONTRACT, ONBOARDING, GROUP_CLASS, top_drivers=5)

    forward = suggest_actions(clients, recommended, INFLUENCE, rules)
    shuffled = clients.iloc[[3, 1, 0, 2]]
    backward = suggest_actions(shuffled, recommended, INFLUENCE, rules)

    assert forward.to_list() == ["Onboarding", "Group class", "Longer contract", "Onboarding"]
    assert backward.reindex(forward.index).to_list() == forward.to_list()


def test_ordered_frames_match_joined_frames(insights, labelled, parts):
    """The job passes frames in client_id order; the result equals joining shuffled ones."""
    scores, segments, drivers = parts
    ordered = labelled.sort_values(CLIENT_ID, kind="stable").reset_index(drop=True)
    ordered_scores = scores.sort_values(CLIENT_ID, kind="stable").reset_index(drop=True)
    shuffled = labelled.sample(frac=1, random_state=3)
    assert not shuffled[CLIENT_ID].is_monotonic_increasing

    side_by_side = build_insights(OCTOBER, ordered, labelled, ordered_scores, segments, drivers)
    joined = build_insights(OCTOBER, shuffled, labelled, scores, segments, drivers)

    # Side by side: the answers are the client frame's own, not a joined copy.
    scored = insights_module._scored_clients(ordered, ordered_scores, segments.assignments)
    charges = "avg_additional_charges_total"
    assert np.shares_memory(scored[charges].to_numpy(), ordered[charges].to_numpy())
    assert len(side_by_side.scores) == 4000
    pd.testing.assert_frame_equal(side_by_side.scores, joined.scores)
    pd.testing.assert_frame_equal(side_by_side.clusters, joined.clusters)
    assert side_by_side.conclusions == joined.conclusions


def test_call_suggested_only_with_phone(insights, labelled):
    actions = insights.scores.merge(labelled[[CLIENT_ID, "phone"]], on=CLIENT_ID)
    calls = actions["suggested_action"] == "Call when visits fall"

    assert calls.sum() > 0
    assert (actions.loc[calls, "phone"] == 1).all()
