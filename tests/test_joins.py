"""Tests of the joins of per-client frames."""

import numpy as np
import pandas as pd

from gymchurn.joins import by_client, column_for, lined_up


def _frames():
    scores = pd.DataFrame({"client_id": [3, 5, 9], "churn_probability": [0.1, 0.7, 0.4]})
    segments = pd.DataFrame({"client_id": [3, 5, 9], "cluster_id": [2, 0, 1]})
    return scores, segments


def test_lined_up_frames_share_columns():
    scores, segments = _frames()

    joined = by_client(scores, segments)

    assert joined.to_dict("list") == {
        "client_id": [3, 5, 9],
        "churn_probability": [0.1, 0.7, 0.4],
        "cluster_id": [2, 0, 1],
    }
    assert np.shares_memory(joined["cluster_id"].to_numpy(), segments["cluster_id"].to_numpy())


def test_shuffled_frame_joined_on_client_id():
    scores, segments = _frames()
    shuffled = segments.iloc[[2, 0, 1]]

    joined = by_client(scores, shuffled)

    assert not lined_up(scores, shuffled)
    assert joined["cluster_id"].tolist() == [2, 0, 1]
    assert joined.index.tolist() == [0, 1, 2]


def test_inner_join_drops_missing_clients():
    scores, segments = _frames()

    left = by_client(scores, segments.iloc[:2])
    inner = by_client(scores, segments.iloc[:2], how="inner")

    assert left["cluster_id"].isna().tolist() == [False, False, True]
    assert inner["client_id"].tolist() == [3, 5]


def test_column_for_lined_up_and_shuffled():
    scores, segments = _frames()
    shuffled = scores.iloc[[2, 0, 1]]

    assert list(column_for(segments, "cluster_id", scores)) == [2, 0, 1]
    assert list(column_for(segments, "cluster_id", shuffled)) == [1, 2, 0]
    missing = column_for(segments.iloc[:2], "cluster_id", scores)
    assert pd.isna(missing[2])
