"""Client portraits: k-means segments of the month's clients, with stable ids and names.

Each month the segments are fitted afresh on that month's clients:

1. The 13 answers are standardised and k-means (fixed seed) splits the
   clients into ``n_clusters`` segments. Rows are sorted by ``client_id``
   first, so the same clients in any order give the same segments. Past
   ``MAX_FIT_ROWS`` clients the centroids are fitted on a sample and every
   client is then assigned to the nearest one.
2. Segments stay stable from month to month. With an earlier month, k-means
   also starts from that month's segment means and keeps that fit unless a
   fresh one is tighter by more than ``WARM_START_TOLERANCE``. The month's
   centroids are then matched to the earlier segment means with the
   Hungarian method on their distance in this month's standard units, and
   each takes the id of its match. With no earlier month the ids follow the
   churn rate, 0 the most loyal segment.
3. Each segment gets a profile (size, churn rate, mean answers, and how far
   each mean lies from the whole base in standard deviations) and a plain
   name built from the traits that set it apart most.

The silhouette score over a range of segment counts and a Ward linkage of a
sample are computed alongside, so that the report can show whether the
chosen number of segments fits the data.
"""

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import linkage as ward_linkage
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from gymchurn.joins import lined_up
from gymchurn.model import feature_matrix
from gymchurn.schema import BINARY_FEATURES, CHURNED, CLIENT_ID, FEATURE_LABELS, FEATURES

logger = logging.getLogger(__name__)

CLUSTER_ID = "cluster_id"

MAX_FIT_ROWS = 100_000
"""Clients k-means is fitted on at most; the others are assigned to the nearest centroid."""
SILHOUETTE_RANGE = range(2, 9)
SILHOUETTE_SAMPLE = 2_000
LINKAGE_SAMPLE = 1_000
# Rows standardised at a time to fit the scaler: a month up to this size is fitted
# in one piece, as StandardScaler.fit would.
SCALER_CHUNK_ROWS = 1_000_000
NAME_TRAITS = 3
"""Traits a segment's name is built from."""
WARM_START_TOLERANCE = 0.05
"""How much looser than a fresh fit k-means started from last month's segments may be."""
MAX_TRAITS = 4
"""Traits a segment's profile lists at most."""
MIN_TRAIT_DISTANCE = 0.3
"""Distance from the base mean, in standard deviations, below which a feature is no trait."""

# Features measured together: a name uses at most one of each group.
_TRAIT_GROUPS = {
    "contract_period": "contract",
    "month_to_end_contract": "contract",
    "avg_class_frequency_total": "visits",
    "avg_class_frequency_current_month": "visits",
}

# (phrase when the segment's mean is below the base's, phrase when above).
# Gender is left out: it is no reason to treat a client differently.
_TRAIT_PHRASES = {
    "near_location": ("live or work far away", "live or work nearby"),
    "partner": ("no partner discount", "partner employees"),
    "promo_friends": ("came without a friend", "came with a friend"),
    "phone": ("no phone number", "gave a phone number"),
    "contract_period": ("short contracts", "long contracts"),
    "group_visits": ("no group classes", "group classes"),
    "age": ("younger", "older"),
    "avg_additional_charges_total": ("spend little on extras", "spend more on extras"),
    "month_to_end_contract": ("contract ends soon", "many months left on contract"),
    "lifetime": ("new members", "long-standing members"),
    "avg_class_frequency_total": ("rare visitors", "frequent visitors"),
    "avg_class_frequency_current_month": ("rare visits last month", "frequent visits last month"),
}


@dataclass(frozen=True)
class Segmentation:
    """Segments of one month."""

    assignments: pd.DataFrame
    """One row a client, in client_id order: ``client_id``, ``cluster_id``."""
    profiles: pd.DataFrame
    """One row a segment: ``cluster_id``, ``name``, ``size``, ``share``, ``churn_rate``,
    the mean of each feature, and ``traits`` (what sets it apart, strongest first)."""
    differences: pd.DataFrame
    """Index ``cluster_id``, one column a feature: the segment's mean minus the base's,
    in standard deviations of the base."""
    silhouette: pd.DataFrame
    """``n_clusters`` and ``silhouette`` of k-means on a sample, for each count tried."""
    linkage: np.ndarray
    """Ward linkage of a sample of standardised clients, for a dendrogram."""
    matched: bool
    """True when the ids were matched to an earlier month's segments."""


def _sample(n_rows: int, size: int, seed: int) -> np.ndarray:
    if n_rows <= size:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=size, replace=False))


def silhouette_by_count(standardised: np.ndarray, *, seed: int, counts=SILHOUETTE_RANGE):
    """Silhouette score of k-means with each number of segments, on a sample.

    Returns:
        A frame of ``n_clusters`` and ``silhouette``; counts that need more
        clients than the sample has are left out.
    """
    sample = standardised[_sample(len(standardised), SILHOUETTE_SAMPLE, seed)]
    distinct = len(np.unique(sample, axis=0))
    rows = []
    for k in counts:
        if k >= distinct:
            break
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(sample)
        rows.append({"n_clusters": k, "silhouette": float(silhouette_score(sample, labels))})
    return pd.DataFrame(rows, columns=["n_clusters", "silhouette"])


def choose_count(silhouette: pd.DataFrame, requested: int | str) -> int:
    """Return ``requested``, or with ``"auto"`` the count of the highest silhouette score."""
    if requested != "auto":
        return int(requested)
    if silhouette.empty:
        return 1
    best = silhouette.sort_values(["silhouette", "n_clusters"], ascending=[False, True])
    return int(best["n_clusters"].iloc[0])


def _match_ids(
    centroids: np.ndarray, previous: pd.DataFrame, scaler: StandardScaler
) -> np.ndarray | None:
    """Give each centroid the id of the nearest earlier segment, one to one.

    Returns:
        The id of each centroid, or None when there is no earlier segment.
        Centroids left over when this month has more segments get ids above
        the earlier ones.
    """
    previous = previous.dropna(subset=FEATURES)
    if previous.empty:
        return None
    earlier = scaler.transform(previous[FEATURES].to_numpy(dtype="float64"))
    cost = np.linalg.norm(centroids[:, None, :] - earlier[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    ids = np.full(len(centroids), -1, dtype="int64")
    ids[rows] = previous[CLUSTER_ID].to_numpy(dtype="int64")[cols]
    spare = iter(range(int(previous[CLUSTER_ID].max()) + 1, 10_000))
    for position in np.flatnonzero(ids < 0):
        ids[position] = next(spare)
    return ids


def _fit_kmeans(
    standardised: np.ndarray, k: int, seed: int, previous, scaler: StandardScaler
) -> KMeans:
    """Fit k-means, starting from the earlier month's segments when that fits as well.

    Started from last month's means, k-means keeps each segment's clients
    together where the data allows; the fresh fit with ``n_init`` random
    starts is kept instead when it is tighter by more than ``WARM_START_TOLERANCE``.
    """
    fresh = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(standardised)
    earlier = None if previous is None else previous.dropna(subset=FEATURES)
    if earlier is None or len(earlier) != k:
        return fresh
    start = scaler.transform(earlier[FEATURES].to_numpy(dtype="float64"))
    warm = KMeans(n_clusters=k, init=start, n_init=1, random_state=seed).fit(standardised)
    if warm.inertia_ <= fresh.inertia_ * (1 + WARM_START_TOLERANCE):
        return warm
    logger.info(
        "segment: last month's segments no longer fit (inertia %.0f against %.0f); "
        "segments fitted afresh",
        warm.inertia_,
        fresh.inertia_,
    )
    return fresh


def _ids_by_churn(labels_of_reference: np.ndarray, reference: pd.DataFrame, k: int) -> np.ndarray:
    churn_rate = pd.Series(reference[CHURNED].to_numpy(dtype="float64")).groupby(
        labels_of_reference
    )
    rate = churn_rate.mean()
    size = churn_rate.size()
    # Churn rate, then size and raw label, so that the order is total.
    order = sorted(range(k), key=lambda c: (rate.get(c, np.inf), -size.get(c, 0), c))
    ids = np.empty(k, dtype="int64")
    ids[order] = np.arange(k)
    return ids


def _trait(
    feature: str, segment: pd.Series, base: pd.Series, one_month: float, overall: float
) -> str:
    """Phrase what sets the segment apart in ``feature``, with its figures.

    ``segment`` and ``base`` are the segment's and all clients' mean answers;
    ``one_month`` and ``overall`` their shares on a 1-month contract.
    """
    phrase = _short_phrase(feature, segment[feature] - base[feature], one_month)
    if feature == "contract_period":
        return f"{phrase} ({one_month:.0%} on 1-month contracts vs {overall:.0%} of all clients)"
    if feature in BINARY_FEATURES:
        return f"{phrase} ({segment[feature]:.0%} vs {base[feature]:.0%} of all clients)"
    return (
        f"{phrase} ({FEATURE_LABELS[feature]}: {segment[feature]:.1f} "
        f"vs {base[feature]:.1f} on average)"
    )


def _traits(distance: pd.Series) -> list[str]:
    """Features that set a segment apart, strongest first, one of each group."""
    chosen, groups = [], set()
    for feature in distance.abs().sort_values(ascending=False, kind="stable").index:
        if feature not in _TRAIT_PHRASES or abs(distance[feature]) < MIN_TRAIT_DISTANCE:
            continue
        group = _TRAIT_GROUPS.get(feature, feature)
        if group in groups:
            continue
        groups.add(group)
        chosen.append(feature)
    return chosen


def _short_phrase(feature: str, distance: float, one_month_share: float) -> str:
    low, high = _TRAIT_PHRASES[feature]
    if feature == "contract_period" and one_month_share >= 0.75:
        return "1-month contracts"
    return high if distance > 0 else low


def _names(trait_features: dict, differences: pd.DataFrame, one_month: pd.Series) -> dict:
    """Name each segment after its strongest traits; names differ between segments.

    ``one_month`` is the share of each segment's clients on a 1-month contract.
    """
    names = {}
    for cluster, features in trait_features.items():
        phrases = [
            _short_phrase(f, differences.loc[cluster, f], one_month[cluster]) for f in features
        ]
        names[cluster] = phrases or ["typical clients"]
    counts = {cluster: min(NAME_TRAITS, len(p)) for cluster, p in names.items()}
    # Add a trait to segments whose names collide, while they have one to add.
    while True:
        text = {c: ", ".join(names[c][: counts[c]]) for c in names}
        clashes = [c for c in names if list(text.values()).count(text[c]) > 1]
        grow = [c for c in clashes if counts[c] < len(names[c])]
        if not grow:
            break
        for c in grow:
            counts[c] += 1
    return {c: text[c] + (f" (segment {c})" if c in clashes else "") for c in names}


@dataclass(frozen=True)
class SegmentModel:
    """Fitted segments of one month: what assigns a client to a segment, and their ids."""

    scaler: StandardScaler
    kmeans: KMeans
    ids: np.ndarray
    """Segment id of each k-means centroid."""
    matched: bool
    """True when the ids were matched to an earlier month's segments."""
    reference_ids: np.ndarray
    """Segment id of each labelled reference row, in the order of ``reference``."""
    reference: pd.DataFrame
    """The labelled reference rows whose churn rate each segment reports."""
    silhouette: pd.DataFrame
    linkage: np.ndarray


def segment_clients(
    clients: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    n_clusters: int | str,
    seed: int,
    previous: pd.DataFrame | None = None,
) -> Segmentation:
    """Split the month's clients into segments and describe each.

    Args:
        clients: the month's valid questionnaires, one row a client.
        reference: labelled questionnaires (with ``churned``) whose churn rate
            each segment reports; may be empty.
        n_clusters: number of segments, or ``"auto"`` for the count with the
            highest silhouette score. A month with fewer distinct
            questionnaires gets one segment for each.
        previous: the earlier month's segments, ``cluster_id`` and the mean of
            each feature, whose ids the matching segments keep.
    """
    fitted = fit_segments(clients, reference, n_clusters=n_clusters, seed=seed, previous=previous)
    return describe_segments(fitted, clients, assign_segments(fitted, clients))


def fit_segments(
    clients: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    n_clusters: int | str,
    seed: int,
    previous: pd.DataFrame | None = None,
) -> SegmentModel:
    """Fit the month's segments and give them ids; the arguments are those of ``segment_clients``.

    k-means is fitted on at most ``MAX_FIT_ROWS`` clients, so the clients can
    then be assigned in chunks by :func:`assign_segments`.
    """
    if clients.empty:
        raise ValueError("no clients to segment")
    # Samples are drawn by position in client order, so that the segments do not
    # depend on the order of the rows. Only the sampled rows are standardised:
    # the month's clients are never copied whole.
    by_client = _client_order(clients[CLIENT_ID].to_numpy())

    def rows(positions: np.ndarray) -> np.ndarray:
        return feature_matrix(
            clients.iloc[positions if by_client is None else by_client[positions]]
        )

    scaler = StandardScaler()
    for start in range(0, len(clients), SCALER_CHUNK_ROWS):
        scaler.partial_fit(rows(np.arange(start, min(start + SCALER_CHUNK_ROWS, len(clients)))))
    n_clients = len(clients)
    silhouette = silhouette_by_count(
        scaler.transform(rows(_sample(n_clients, SILHOUETTE_SAMPLE, seed))), seed=seed
    )
    k = choose_count(silhouette, n_clusters)
    fit_matrix = rows(_sample(n_clients, MAX_FIT_ROWS, seed))
    # k-means needs k distinct rows among those it is fitted on. Hashing the rows
    # counts them in linear time; sorting them (numpy.unique) took 7 s on a million.
    distinct = int((~pd.DataFrame(fit_matrix).duplicated()).sum())
    if distinct < k:
        logger.warning(
            "segment: %d distinct questionnaires cannot form %d segments; forming %d",
            distinct,
            k,
            distinct,
        )
        k = distinct
    kmeans = _fit_kmeans(scaler.transform(fit_matrix), k, seed, previous, scaler)

    reference = reference.dropna(subset=[CHURNED]) if not reference.empty else reference
    reference_raw = (
        kmeans.predict(scaler.transform(feature_matrix(reference)))
        if len(reference)
        else np.empty(0, dtype="int64")
    )
    ids = _match_ids(kmeans.cluster_centers_, previous, scaler) if previous is not None else None
    matched = ids is not None
    if ids is None:
        ids = _ids_by_churn(reference_raw, reference, k)
    linkage = ward_linkage(scaler.transform(rows(_sample(n_clients, LINKAGE_SAMPLE, seed))), "ward")
    return SegmentModel(
        scaler=scaler,
        kmeans=kmeans,
        ids=ids,
        matched=matched,
        reference_ids=ids[reference_raw],
        reference=reference,
        silhouette=silhouette,
        linkage=linkage,
    )


def _client_order(client_ids: np.ndarray) -> np.ndarray | None:
    """Return the positions that sort ``client_ids``, or None when they already increase."""
    if len(client_ids) < 2 or bool(np.all(client_ids[1:] > client_ids[:-1])):
        return None
    return np.argsort(client_ids, kind="stable")


def assign_segments(fitted: SegmentModel, clients: pd.DataFrame) -> pd.DataFrame:
    """Assign each client to the segment of the nearest centroid.

    Each row is assigned on its own, so chunks of clients give the rows that
    one call on all of them gives.

    Returns:
        One row a client, in the order of ``clients``: ``client_id``, ``cluster_id``.
    """
    if clients.empty:
        return pd.DataFrame({CLIENT_ID: clients[CLIENT_ID], CLUSTER_ID: np.empty(0, dtype="int64")})
    raw = fitted.kmeans.predict(fitted.scaler.transform(feature_matrix(clients)))
    return pd.DataFrame({CLIENT_ID: clients[CLIENT_ID].to_numpy(), CLUSTER_ID: fitted.ids[raw]})


def _feature_statistics(
    clients: pd.DataFrame, cluster_of_client: np.ndarray
) -> tuple[pd.Series, pd.Series, pd.DataFrame]:
    """Return each feature's mean and standard deviation, and its mean in each segment.

    One feature at a time: pandas would otherwise cast the month's integer
    features to one float64 block, 1 GB at 10,000,000 clients.
    """
    codes, segment_ids = pd.factorize(cluster_of_client, sort=True)
    sizes = np.bincount(codes, minlength=len(segment_ids))
    base_mean, base_std, means = {}, {}, {}
    for feature in FEATURES:
        values = clients[feature].to_numpy(dtype="float64", na_value=np.nan)
        if np.isnan(values).any():
            column = pd.Series(values)
            base_mean[feature], base_std[feature] = column.mean(), column.std(ddof=0)
            means[feature] = column.groupby(codes).mean().reindex(range(len(segment_ids)))
        else:
            base_mean[feature], base_std[feature] = values.mean(), values.std()
            means[feature] = np.bincount(codes, weights=values, minlength=len(segment_ids)) / sizes
    index = pd.Index(segment_ids)
    return (
        pd.Series(base_mean, dtype="float64"),
        pd.Series(base_std, dtype="float64"),
        pd.DataFrame({f: np.asarray(m, dtype="float64") for f, m in means.items()}, index=index),
    )


def describe_segments(
    fitted: SegmentModel, clients: pd.DataFrame, assignments: pd.DataFrame
) -> Segmentation:
    """Profile and name the segments of the month's clients.

    Args:
        fitted: the month's segments, from :func:`fit_segments`.
        clients: the clients that were segmented, in any order.
        assignments: ``client_id`` and ``cluster_id`` of each of ``clients``,
            in any order, as :func:`assign_segments` returns them.
    """
    client_ids = clients[CLIENT_ID].to_numpy()
    if lined_up(assignments, clients) and _client_order(client_ids) is None:
        # The job's case: both list the clients in client_id order.
        assigned_ids = client_ids
        # A copy: the column may be a row of a block that contains the ids too.
        assigned_clusters = cluster_of_client = assignments[CLUSTER_ID].to_numpy().copy()
    else:
        # Each client's segment in the row order of clients, without sorting the month.
        ordered = assignments.sort_values(CLIENT_ID, kind="stable")
        assigned_ids = ordered[CLIENT_ID].to_numpy()
        assigned_clusters = ordered[CLUSTER_ID].to_numpy()
        by_client = np.argsort(client_ids, kind="stable")
        if not np.array_equal(assigned_ids, client_ids[by_client]):
            raise ValueError(
                f"assignments cover {len(assignments)} clients but clients has {len(clients)} "
                "other ones; assign every client of the month exactly once"
            )
        cluster_of_client = np.empty(len(clients), dtype=assigned_clusters.dtype)
        cluster_of_client[by_client] = assigned_clusters
    ids = fitted.ids
    reference = fitted.reference

    base_mean, base_std, means = _feature_statistics(clients, cluster_of_client)
    base_std = base_std.replace(0, 1.0)
    differences = (means - base_mean) / base_std
    differences.index.name = CLUSTER_ID
    on_one_month = clients["contract_period"] == 1
    one_month = on_one_month.groupby(cluster_of_client).mean()
    overall_one_month = float(on_one_month.mean())
    trait_features = {c: _traits(differences.loc[c]) for c in means.index}
    names = _names(trait_features, differences, one_month)

    churn = (
        reference[CHURNED].astype("float64").groupby(fitted.reference_ids).mean()
        if len(reference)
        else pd.Series(dtype="float64")
    )
    size = pd.Series(cluster_of_client).value_counts()
    profiles = pd.DataFrame({CLUSTER_ID: np.sort(ids)})
    profiles["name"] = profiles[CLUSTER_ID].map(names)
    profiles["size"] = size.reindex(profiles[CLUSTER_ID], fill_value=0).to_numpy()
    profiles["share"] = profiles["size"] / len(clients)
    profiles["churn_rate"] = churn.reindex(profiles[CLUSTER_ID]).to_numpy()
    profiles = profiles.join(means.reindex(profiles[CLUSTER_ID]).reset_index(drop=True))
    profiles["traits"] = [
        [
            _trait(f, means.loc[c], base_mean, one_month[c], overall_one_month)
            for f in trait_features[c][:MAX_TRAITS]
        ]
        for c in profiles[CLUSTER_ID]
    ]
    return Segmentation(
        # Not copied: in the job's case the ids are the column of ``clients``.
        assignments=pd.DataFrame(
            {CLIENT_ID: assigned_ids, CLUSTER_ID: assigned_clusters}, copy=False
        ),
        profiles=profiles,
        differences=differences.reindex(profiles[CLUSTER_ID]),
        silhouette=fitted.silhouette,
        linkage=fitted.linkage,
        matched=fitted.matched,
    )
