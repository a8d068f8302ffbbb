"""Tests of the client segments on the real questionnaires."""

import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from gymchurn.loader import read_questionnaire_csv
from gymchurn.schema import CHURNED, CLIENT_ID
from gymchurn.segments import CLUSTER_ID, fit_segments, segment_clients

N_CLUSTERS = 5
SEED = 42


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Fit k-means with one OpenMP thread, as in test_model.py, so a busy machine stays fast."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def clients(real_data) -> pd.DataFrame:
    return read_questionnaire_csv(real_data).questionnaires


@pytest.fixture(scope="module")
def labelled(real_data) -> pd.DataFrame:
    loaded = read_questionnaire_csv(real_data)
    return loaded.questionnaires.merge(loaded.outcomes, on=CLIENT_ID)


@pytest.fixture(scope="module")
def segmentation(clients, labelled, single_thread):
    return segment_clients(clients, labelled, n_clusters=N_CLUSTERS, seed=SEED)


def test_segment_clients_sizes_cover_all_clients(segmentation):
    profiles = segmentation.profiles
    counts = segmentation.assignments[CLUSTER_ID].value_counts().sort_index()

    assert profiles[CLUSTER_ID].to_list() == list(range(N_CLUSTERS))
    assert profiles["size"].sum() == 4000
    assert profiles["size"].min() > 0
    assert profiles["size"].to_list() == counts.to_list()
    assert len(segmentation.assignments) == 4000
    assert segmentation.assignments[CLIENT_ID].is_unique


def test_segment_clients_ids_ordered_by_churn_rate(segmentation, labelled):
    churn_rate = segmentation.profiles["churn_rate"]
    merged = segmentation.assignments.merge(labelled[[CLIENT_ID, CHURNED]], on=CLIENT_ID)
    observed = merged.groupby(CLUSTER_ID)[CHURNED].mean()

    assert churn_rate.is_monotonic_increasing
    assert churn_rate.is_unique
    assert churn_rate.to_list() == pytest.approx(observed.to_list())
    # About a quarter of the real clients left, so the segments should lie on both sides of that.
    assert churn_rate.iloc[0] < 0.1
    assert churn_rate.iloc[-1] > 0.4


def test_segment_clients_same_seed_same_assignments(segmentation, clients, labelled):
    again = segment_clients(clients, labelled, n_clusters=N_CLUSTERS, seed=SEED)

    pd.testing.assert_frame_equal(again.assignments, segmentation.assignments)
    pd.testing.assert_frame_equal(again.profiles, segmentation.profiles)


def test_segment_clients_empty_segment_size_zero(segmentation, clients, labelled):
    assignments = segmentation.assignments
    in_segment_2 = assignments.loc[assignments[CLUSTER_ID] == 2, CLIENT_ID].head(30)
    month = clients[clients[CLIENT_ID].isin(in_segment_2)]

    profiles = segment_clients(month, labelled, n_clusters=N_CLUSTERS, seed=SEED).profiles

    assert profiles["size"].to_list() == [0, 0, 30, 0, 0]
    assert profiles["age"].isna().to_list() == [True, True, False, True, True]
    # The churn rate comes from the labelled clients, so every segment keeps one.
    assert profiles["churn_rate"].to_list() == segmentation.profiles["churn_rate"].to_list()


def test_fit_segments_too_few_clients_raises(labelled):
    with pytest.raises(ValueError, match="5 segments need at least 5 clients; found 3"):
        fit_segments(labelled.head(3), n_clusters=N_CLUSTERS, seed=SEED)
