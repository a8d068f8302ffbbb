"""Tests of the client portraits on the real questionnaires and on simulated months."""

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from gymchurn.loader import read_questionnaire_csv
from gymchurn.schema import CHURNED, CLIENT_ID, FEATURES
from gymchurn.segments import CLUSTER_ID, segment_clients
from gymchurn.simulation.simulator import ClientSimulator
from tests.test_simulation import START

N_CLUSTERS = 5
SEED = 42


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Fit k-means with one OpenMP thread, as in test_model.py, so a busy machine stays fast."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def labelled(real_data) -> pd.DataFrame:
    loaded = read_questionnaire_csv(real_data)
    return loaded.questionnaires.merge(loaded.outcomes, on=CLIENT_ID)


@pytest.fixture(scope="module")
def segmentation(labelled, single_thread):
    return segment_clients(labelled, labelled, n_clusters=N_CLUSTERS, seed=SEED)


def test_segments_cover_every_client_once(segmentation):
    profiles = segmentation.profiles
    counts = segmentation.assignments[CLUSTER_ID].value_counts().sort_index()

    assert profiles[CLUSTER_ID].to_list() == list(range(N_CLUSTERS))
    assert profiles["size"].sum() == 4000
    assert profiles["size"].to_list() == counts.to_list()
    assert profiles["share"].sum() == pytest.approx(1.0)
    assert segmentation.assignments[CLIENT_ID].is_unique
    assert not segmentation.matched


def test_ids_follow_churn_rate_without_an_earlier_month(segmentation, labelled):
    churn_rate = segmentation.profiles["churn_rate"]
    merged = segmentation.assignments.merge(labelled[[CLIENT_ID, CHURNED]], on=CLIENT_ID)
    observed = merged.groupby(CLUSTER_ID)[CHURNED].mean()

    assert churn_rate.is_monotonic_increasing
    assert churn_rate.to_list() == pytest.approx(observed.to_list())
    # About a quarter of the real clients left: segments lie on both sides of that.
    assert churn_rate.iloc[0] < 0.1
    assert churn_rate.iloc[-1] > 0.4


def test_highest_churn_segment_has_mostly_one_month_contracts(segmentation, labelled):
    worst = segmentation.profiles.sort_values("churn_rate").iloc[-1]
    members = segmentation.assignments.loc[
        segmentation.assignments[CLUSTER_ID] == worst[CLUSTER_ID], CLIENT_ID
    ]
    contracts = labelled.loc[labelled[CLIENT_ID].isin(members), "contract_period"]

    assert (contracts == 1).mean() > 0.5
    assert any(trait.startswith("1-month contracts") for trait in worst["traits"])


def test_names_differ_and_name_the_traits(segmentation):
    names = segmentation.profiles["name"]

    assert names.is_unique
    assert all(1 <= len(name.split(", ")) <= 3 for name in names)
    for name, traits in zip(names, segmentation.profiles["traits"], strict=True):
        # A name is built from the first traits of the profile.
        assert traits
        assert name.split(", ")[0] in traits[0]


def test_differences_are_in_standard_deviations_of_the_base(segmentation, labelled):
    cluster = int(segmentation.profiles[CLUSTER_ID].iloc[0])
    members = segmentation.assignments.loc[
        segmentation.assignments[CLUSTER_ID] == cluster, CLIENT_ID
    ]
    expected = (
        labelled.loc[labelled[CLIENT_ID].isin(members), "lifetime"].mean()
        - labelled["lifetime"].mean()
    ) / labelled["lifetime"].std(ddof=0)

    assert segmentation.differences.loc[cluster, "lifetime"] == pytest.approx(expected)
    assert list(segmentation.differences.columns) == FEATURES


def test_shuffled_rows_give_the_same_segments(segmentation, labelled):
    shuffled = labelled.sample(frac=1, random_state=5)

    again = segment_clients(shuffled, shuffled, n_clusters=N_CLUSTERS, seed=SEED)

    pd.testing.assert_frame_equal(again.assignments, segmentation.assignments)
    pd.testing.assert_frame_equal(again.profiles, segmentation.profiles)


def test_ids_follow_an_earlier_months_segments(segmentation, labelled):
    # The same clients with last month's ids given in reverse.
    previous = segmentation.profiles[[CLUSTER_ID, *FEATURES]].copy()
    previous[CLUSTER_ID] = N_CLUSTERS - 1 - previous[CLUSTER_ID]

    again = segment_clients(labelled, labelled, n_clusters=N_CLUSTERS, seed=SEED, previous=previous)

    assert again.matched
    expected = N_CLUSTERS - 1 - segmentation.assignments[CLUSTER_ID]
    # Started from the segment means, k-means moves a handful of boundary clients.
    assert (again.assignments[CLUSTER_ID] == expected).mean() > 0.99


def test_extra_segments_get_ids_above_the_earlier_ones(segmentation, labelled):
    previous = segmentation.profiles[[CLUSTER_ID, *FEATURES]]

    more = segment_clients(labelled, labelled, n_clusters=7, seed=SEED, previous=previous)

    ids = more.profiles[CLUSTER_ID].to_list()
    assert len(ids) == 7
    assert set(range(N_CLUSTERS)) <= set(ids)
    assert sorted(set(ids) - set(range(N_CLUSTERS))) == [5, 6]


def test_two_simulated_months_keep_most_clients_ids():
    first, second = ClientSimulator(5_000, seed=11).months(START, 2)
    labelled = first.questionnaires.merge(first.outcomes, on=[CLIENT_ID, "month"])

    one = segment_clients(first.questionnaires, labelled, n_clusters=N_CLUSTERS, seed=SEED)
    two = segment_clients(
        second.questionnaires,
        labelled,
        n_clusters=N_CLUSTERS,
        seed=SEED,
        previous=one.profiles[[CLUSTER_ID, *FEATURES]],
    )

    both = one.assignments.merge(two.assignments, on=CLIENT_ID, suffixes=("_one", "_two"))
    same = (both[f"{CLUSTER_ID}_one"] == both[f"{CLUSTER_ID}_two"]).mean()
    assert len(both) > 3_000
    # Measured: 0.88 of the clients in both months keep their segment id (0.71
    # without starting k-means from the first month's segments).
    assert same > 0.85
    assert two.matched


def test_auto_count_takes_the_highest_silhouette(labelled):
    auto = segment_clients(labelled, labelled, n_clusters="auto", seed=SEED)

    best = auto.silhouette.loc[auto.silhouette["silhouette"].idxmax(), "n_clusters"]
    assert len(auto.profiles) == best
    assert auto.silhouette["n_clusters"].to_list() == list(range(2, 9))
    assert auto.silhouette["silhouette"].between(-1, 1).all()


def test_fewer_distinct_clients_than_segments_get_one_segment_each(labelled):
    three = labelled.head(3)

    small = segment_clients(three, three, n_clusters=N_CLUSTERS, seed=SEED)

    assert sorted(small.assignments[CLUSTER_ID]) == [0, 1, 2]
    assert small.profiles["size"].to_list() == [1, 1, 1]


def test_linkage_covers_a_sample_of_the_clients(segmentation):
    # scipy's linkage has one merge per client of the sample but the last.
    assert segmentation.linkage.shape == (999, 4)
    assert np.all(np.diff(segmentation.linkage[:, 2]) >= -1e-9)
