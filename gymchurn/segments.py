"""Client segments: k-means on standardised answers.

The segment model is fitted on the labelled questionnaires, so each segment
has a churn rate, and then assigns the month's clients. Segment ids are
ordered by that churn rate, 0 the most loyal, so the same seed and data give
the same ids.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from gymchurn.model import feature_matrix
from gymchurn.schema import CHURNED, CLIENT_ID, FEATURES

CLUSTER_ID = "cluster_id"


@dataclass(frozen=True)
class Segmentation:
    """Segments of one month."""

    assignments: pd.DataFrame
    """One row a scored client: ``client_id``, ``cluster_id``."""
    profiles: pd.DataFrame
    """One row a segment: ``cluster_id``, ``size``, ``churn_rate`` and the mean of each feature."""


def fit_segments(
    labelled: pd.DataFrame, *, n_clusters: int, seed: int
) -> tuple[Pipeline, np.ndarray]:
    """Fit k-means on the labelled clients' standardised answers.

    Returns:
        The fitted pipeline and, for each raw k-means label, its ordered id.
    """
    if len(labelled) < n_clusters:
        raise ValueError(
            f"{n_clusters} segments need at least {n_clusters} clients; found {len(labelled)}"
        )
    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            ("cluster", KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)),
        ]
    )
    raw = pipeline.fit_predict(feature_matrix(labelled))
    churn_rate = pd.Series(labelled[CHURNED].to_numpy(dtype="float64")).groupby(raw).mean()
    size = pd.Series(raw).value_counts()
    # Sort by churn rate, then by size and raw label so the order is total.
    order = sorted(range(n_clusters), key=lambda k: (churn_rate.get(k, np.nan), -size.get(k, 0), k))
    ordered_ids = np.empty(n_clusters, dtype="int64")
    ordered_ids[order] = np.arange(n_clusters)
    return pipeline, ordered_ids


def segment_clients(
    clients: pd.DataFrame, labelled: pd.DataFrame, *, n_clusters: int, seed: int
) -> Segmentation:
    """Assign each client of the month to a segment and describe the segments.

    Args:
        clients: the month's valid questionnaires, one row a client.
        labelled: the questionnaires the segments are fitted on, with ``churned``.

    Returns:
        The assignment of every client, and per segment its size and mean
        answers among ``clients`` and its churn rate among ``labelled``.
        A segment with no client this month has size 0 and empty means.
    """
    pipeline, ordered_ids = fit_segments(labelled, n_clusters=n_clusters, seed=seed)
    client_ids = ordered_ids[pipeline.predict(feature_matrix(clients))]
    labelled_ids = ordered_ids[pipeline.predict(feature_matrix(labelled))]

    assignments = pd.DataFrame({CLIENT_ID: clients[CLIENT_ID].to_numpy(), CLUSTER_ID: client_ids})
    means = clients[FEATURES].groupby(client_ids).mean()
    churn_rate = labelled[CHURNED].astype("float64").groupby(labelled_ids).mean()
    profiles = pd.DataFrame({CLUSTER_ID: np.arange(n_clusters)})
    profiles["size"] = (
        pd.Series(client_ids).value_counts().reindex(profiles[CLUSTER_ID], fill_value=0).to_numpy()
    )
    profiles["churn_rate"] = churn_rate.reindex(profiles[CLUSTER_ID]).to_numpy()
    profiles = profiles.join(means.reindex(profiles[CLUSTER_ID]).reset_index(drop=True))
    return Segmentation(assignments, profiles)
