"""Conclusions of a month: target groups, measures and other patterns.

Everything here is computed from the month's numbers: the scores, the
segments, the drivers and the labelled reference clients. The target groups
are the segments with the most expected churners (the sum of their churn
probabilities); the measures for each come from the rules of
:mod:`gymchurn.measures`; the patterns compare churn and spending between
groups of clients, and only those with enough clients on both sides are said.
"""

import datetime as dt
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gymchurn.drivers import Drivers
from gymchurn.joins import by_client
from gymchurn.measures import Measure, Measures, load_measures
from gymchurn.schema import CHURNED, CLIENT_ID, FEATURE_LABELS, FEATURES, format_month
from gymchurn.segments import CLUSTER_ID, Segmentation

logger = logging.getLogger(__name__)

TIERS = ("high", "medium", "low")
MIN_GROUP = 30
"""Clients a side of a comparison needs before a pattern is said."""


@dataclass(frozen=True)
class MonthInsights:
    """Everything the monthly report and the findings tables show for one month."""

    month: dt.date
    clients: pd.DataFrame
    """The month's valid questionnaires: ``client_id`` and the 13 features."""
    reference: pd.DataFrame
    """Labelled questionnaires the churn rates are measured on (the latest labelled
    month, or the month itself in a backtest): ``client_id``, the 13 features,
    ``churned`` (0.0 or 1.0)."""
    scores: pd.DataFrame
    """One row a scored client: ``client_id``, ``churn_probability``, ``risk_tier``
    (``high``, ``medium``, ``low``), ``reasons`` (the phrases joined by ``"; "``),
    ``cluster_id``, ``suggested_action`` (a categorical of the titles of the measures
    chosen by :func:`suggest_actions`, missing where none was)."""
    clusters: pd.DataFrame
    """One row a segment, by ``cluster_id``: ``name`` (plain, e.g. "1-month contracts,
    new members, rare visitors"), ``size``, ``share`` (of the month's clients),
    ``churn_rate`` (among ``reference`` clients of the segment; NaN when none),
    ``expected_churners`` (sum of the month's probabilities), ``expected_churn_rate``
    (their mean), the mean of each of the 13 features (columns named as the features)
    and ``traits`` (list of str: what sets the segment apart, strongest first)."""
    differences: pd.DataFrame
    """Segments by features: index ``cluster_id``, one column per feature, the
    segment's mean minus the whole base's mean, in standard deviations of the base."""
    silhouette: pd.DataFrame
    """Silhouette score of k-means for each number of segments tried: ``n_clusters``,
    ``silhouette``; the chosen number is in ``clusters``."""
    linkage: np.ndarray
    """Ward linkage matrix (``scipy.cluster.hierarchy.linkage``) of a sample of the
    month's standardised clients, for a dendrogram."""
    drivers: Drivers
    target_groups: pd.DataFrame
    """Segments with the most expected churners, most first: ``rank``, ``cluster_id``,
    ``name``, ``size``, ``expected_churners``, ``high``, ``medium``, ``low`` (clients in
    each risk tier), ``traits`` (list of str)."""
    measures: pd.DataFrame
    """Recommended measures, by target group rank then expected churners: ``rank``,
    ``cluster_id``, ``group`` (segment name), ``measure`` (short title), ``action``
    (what staff do), ``why`` (the numbers that chose it), ``clients`` (clients of the
    group it targets), ``expected_churners`` (sum of their probabilities)."""
    patterns: list[str]
    """Other computed findings, one sentence each, with their numbers."""
    conclusions: list[str]
    """The month's main conclusions, one sentence each, with their numbers."""


def _clusters(segmentation: Segmentation, scored: pd.DataFrame) -> pd.DataFrame:
    by_cluster = scored.groupby(CLUSTER_ID)["churn_probability"]
    clusters = segmentation.profiles.copy()
    clusters["expected_churners"] = (
        by_cluster.sum().reindex(clusters[CLUSTER_ID], fill_value=0.0).to_numpy()
    )
    clusters["expected_churn_rate"] = by_cluster.mean().reindex(clusters[CLUSTER_ID]).to_numpy()
    return clusters


def _target_groups(clusters: pd.DataFrame, scored: pd.DataFrame, count: int) -> pd.DataFrame:
    tiers = (
        scored.groupby([CLUSTER_ID, "risk_tier"])
        .size()
        .unstack(fill_value=0)
        .reindex(columns=list(TIERS), fill_value=0)
    )
    ranked = clusters.sort_values(["expected_churners", CLUSTER_ID], ascending=[False, True]).head(
        count
    )
    groups = ranked[[CLUSTER_ID, "name", "size", "expected_churners", "traits"]].reset_index(
        drop=True
    )
    groups = groups.join(tiers.reindex(groups[CLUSTER_ID], fill_value=0).reset_index(drop=True))
    groups.insert(0, "rank", np.arange(1, len(groups) + 1))
    return groups[["rank", CLUSTER_ID, "name", "size", "expected_churners", *TIERS, "traits"]]


MEASURE_COLUMNS = [
    "rank",
    CLUSTER_ID,
    "group",
    "measure",
    "action",
    "why",
    "clients",
    "expected_churners",
]


def _measures(
    groups: pd.DataFrame, scored: pd.DataFrame, drivers: Drivers, rules: Measures
) -> pd.DataFrame:
    influence = drivers.influence.set_index("feature")
    strongest = set(influence.index[influence["rank"] <= rules.top_drivers])
    # Masks over the whole month, not copies of each group's rows: a group
    # can hold millions of clients.
    cluster = scored[CLUSTER_ID].to_numpy()
    in_tiers = scored["risk_tier"].isin(rules.tiers).to_numpy()
    probability = scored["churn_probability"].to_numpy()
    matched = {}
    base_match = {}
    rows = []
    for group in groups.itertuples():
        members = cluster == group.cluster_id
        n_members = int(members.sum())
        found, targeted_sets = [], []
        for position, measure in enumerate(rules.measures):
            driving = [f for f in measure.drivers if f in strongest]
            if measure.drivers and not driving:
                continue
            if position not in matched:
                matched[position] = measure.targets(scored)
            base_match.setdefault(measure.title, float(matched[position].mean()))
            matches = matched[position] & members
            share = int(matches.sum()) / n_members if n_members else 0.0
            # The segment must have such clients more often than the base.
            if share < measure.min_share or share <= base_match[measure.title]:
                continue
            targeted = matches & in_tiers
            # A measure that reaches the very clients of an earlier one adds nothing.
            if not targeted.any() or any(np.array_equal(targeted, t) for t in targeted_sets):
                continue
            targeted_sets.append(targeted)
            why = (
                f"{share:.0%} of the segment match, "
                f"against {base_match[measure.title]:.0%} of all clients"
            )
            if driving:
                best = min(driving, key=lambda f: influence.loc[f, "rank"])
                why += f"; {FEATURE_LABELS[best]} is churn driver no. {influence.loc[best, 'rank']}"
            found.append(
                {
                    "rank": group.rank,
                    CLUSTER_ID: group.cluster_id,
                    "group": group.name,
                    "measure": measure.title,
                    "action": measure.action,
                    "why": why,
                    "clients": int(targeted.sum()),
                    "expected_churners": float(probability[targeted].sum()),
                }
            )
        rows += sorted(found, key=lambda row: (-row["expected_churners"], row["measure"]))
    return pd.DataFrame(rows, columns=MEASURE_COLUMNS)


def rank_measures(influence: pd.DataFrame, rules: Measures) -> list[Measure]:
    """Order the month's usable measures, the one on the strongest churn driver first.

    A measure is usable when one of its ``drivers`` is among the month's
    ``rules.top_drivers`` strongest drivers, or when it names no drivers. Ties
    and measures without drivers keep the order of the measures file, and
    measures without drivers come last.

    Args:
        influence: one row a feature with its ``feature`` and ``rank`` (1 = strongest).
    """
    ranks = dict(zip(influence["feature"], influence["rank"], strict=True))
    keyed = []
    for position, measure in enumerate(rules.measures):
        driving = [ranks[f] for f in measure.drivers if ranks.get(f, np.inf) <= rules.top_drivers]
        if measure.drivers and not driving:
            continue
        keyed.append((min(driving, default=np.inf), position, measure))
    return [measure for _, _, measure in sorted(keyed, key=lambda item: item[:2])]


def suggest_actions(
    scored: pd.DataFrame, recommended: pd.DataFrame, influence: pd.DataFrame, rules: Measures
) -> pd.Series:
    """Choose one measure for each client in a targeted risk tier.

    A client's candidates are first the measures recommended for the client's
    segment this month, in their order in ``recommended``, then every usable
    measure in the order of :func:`rank_measures`. The client gets the title of
    the first candidate whose ``clients`` conditions the client meets. The
    choice depends on the inputs alone, so a rerun of a month gives the same
    titles.

    Args:
        scored: one row a client: the 13 features, ``risk_tier`` and ``cluster_id``.
        recommended: the month's recommendations: ``cluster_id`` and ``measure`` (title).
        influence: the month's drivers: ``feature`` and ``rank``.
        rules: the measures file the recommendations came from.

    Returns:
        The measure title for each row of ``scored``, on its index, as a
        categorical of the titles chosen; missing for clients outside
        ``rules.tiers`` and for clients no measure fits.
    """
    by_title = {}
    for measure in rules.measures:
        by_title.setdefault(measure.title, measure)
    titles = sorted(by_title)
    code_of = {title: code for code, title in enumerate(titles)}
    ranking = rank_measures(influence, rules)
    matches = {measure.title: measure.targets(scored) for measure in by_title.values()}
    targeted = scored["risk_tier"].isin(rules.tiers).to_numpy()
    cluster = scored[CLUSTER_ID].to_numpy()
    # Codes into titles, -1 for none yet: one byte a client, not an object,
    # for fewer than 128 measures.
    chosen = np.full(len(scored), -1, dtype=np.int8 if len(titles) < 128 else np.int32)
    for cluster_id in pd.unique(cluster):
        in_cluster = targeted & (cluster == cluster_id)
        for_cluster = recommended.loc[recommended[CLUSTER_ID] == cluster_id, "measure"]
        candidates = [by_title[title] for title in for_cluster if title in by_title] + ranking
        for measure in candidates:
            fits = in_cluster & matches[measure.title] & (chosen < 0)
            chosen[fits] = code_of[measure.title]
    actions = pd.Categorical.from_codes(chosen, categories=titles).remove_unused_categories()
    return pd.Series(actions, index=scored.index, name="suggested_action")


def _rate(labelled: pd.DataFrame, mask) -> tuple[float, int]:
    chosen = labelled[mask]
    return float(chosen[CHURNED].mean()), len(chosen)


def _churn_pattern(labelled, mask, yes: str, no: str) -> str | None:
    """Compare the churn rate of the clients in ``mask`` with the others'."""
    (rate_yes, n_yes), (rate_no, n_no) = _rate(labelled, mask), _rate(labelled, ~mask)
    if min(n_yes, n_no) < MIN_GROUP:
        return None
    return (
        f"{yes} leave at {rate_yes:.1%} a month ({n_yes:,} clients), "
        f"{no} at {rate_no:.1%} ({n_no:,} clients)."
    )


def _spending_patterns(clients: pd.DataFrame) -> list[str]:
    """Which kind of client spends more on other services, by the largest differences."""
    charges = clients["avg_additional_charges_total"]
    groups = {
        "clients on 6- or 12-month contracts": clients["contract_period"] >= 6,
        "clients who attend group classes": clients["group_visits"] == 1,
        "partner employees": clients["partner"] == 1,
        "clients who came through a friend": clients["promo_friends"] == 1,
        "clients who live or work near the club": clients["near_location"] == 1,
        f"members of more than {int(clients['lifetime'].median())} months": (
            clients["lifetime"] > clients["lifetime"].median()
        ),
        "clients who visit twice a week or more": clients["avg_class_frequency_total"] >= 2,
    }
    found = []
    for name, mask in groups.items():
        mask = mask.to_numpy()
        if min(mask.sum(), (~mask).sum()) < MIN_GROUP:
            continue
        inside, outside = charges[mask].mean(), charges[~mask].mean()
        if outside > 0:
            found.append((inside / outside - 1, name, inside, outside))
    found.sort(key=lambda item: -abs(item[0]))
    return [
        f"{name[0].upper()}{name[1:]} spend {abs(change):.0%} {'more' if change > 0 else 'less'} "
        f"on other services than the others ({inside:.0f} against {outside:.0f} on average)."
        for change, name, inside, outside in found[:2]
    ]


def _patterns(clients: pd.DataFrame, reference: pd.DataFrame, drivers: Drivers) -> list[str]:
    patterns = _spending_patterns(clients)
    if reference.empty:
        return patterns
    labelled = reference
    usual = labelled["avg_class_frequency_total"]
    candidates = [
        _churn_pattern(
            labelled,
            (labelled["near_location"] == 0).to_numpy(),
            "Clients who live or work far from the club",
            "those nearby",
        ),
        _churn_pattern(
            labelled,
            (labelled["avg_class_frequency_current_month"] < 0.75 * usual).to_numpy()
            & (usual > 0).to_numpy(),
            "Clients whose visits last month fell below three quarters of their usual rate",
            "the others",
        ),
        _churn_pattern(
            labelled,
            (labelled["month_to_end_contract"] <= 1).to_numpy(),
            "Clients with one month or less left on their contract",
            "those with more",
        ),
        _churn_pattern(
            labelled,
            (labelled["group_visits"] == 1).to_numpy(),
            "Clients who attend group classes",
            "those who do not",
        ),
    ]
    patterns += [text for text in candidates if text]
    age = drivers.churn_by_value[drivers.churn_by_value["feature"] == "age"]
    age = age[age["clients"] >= MIN_GROUP]
    if len(age) >= 2:
        top, low = age.loc[age["churn_rate"].idxmax()], age.loc[age["churn_rate"].idxmin()]
        patterns.append(
            f"By age, churn is highest at {top['bin_label']} years ({top['churn_rate']:.1%}) "
            f"and lowest at {low['bin_label']} years ({low['churn_rate']:.1%})."
        )
    return patterns


def _driver_phrase(row, drivers: Drivers) -> str:
    """Name a driver with the churn rate at its lowest and highest values."""
    rates = drivers.churn_by_value[drivers.churn_by_value["feature"] == row.feature]
    if len(rates) < 2:
        return row.label
    low, high = rates.iloc[0], rates.iloc[-1]
    return (
        f"{row.label} ({low['churn_rate']:.0%} churn at {low['bin_label']}, "
        f"{high['churn_rate']:.0%} at {high['bin_label']})"
    )


def _conclusions(month, scored, reference, clusters, drivers, groups, measures) -> list[str]:
    expected = float(scored["churn_probability"].sum())
    high = int((scored["risk_tier"] == "high").sum())
    texts = [
        f"Of {len(scored):,} clients scored for {format_month(month)}, about {expected:,.0f} "
        f"({expected / len(scored):.1%}) are expected to leave next month; {high:,} are in "
        "the high risk tier."
    ]
    if not reference.empty:
        texts.append(
            f"In the labelled month the job learned from, {reference[CHURNED].mean():.1%} of "
            f"{len(reference):,} clients left."
        )
    if not groups.empty:
        top = groups.iloc[0]
        texts.append(
            f"The segment with the most expected churners is \u201c{top['name']}\u201d: "
            f"{top['size']:,} clients, about {top['expected_churners']:,.0f} expected to leave "
            f"({top['expected_churners'] / expected:.0%} of all expected churners)."
        )
    texts.append(
        "The strongest drivers of churn are "
        + "; ".join(_driver_phrase(row, drivers) for row in drivers.influence.head(3).itertuples())
        + "."
    )
    if not measures.empty:
        best = measures.sort_values("expected_churners", ascending=False, kind="stable").iloc[0]
        texts.append(
            f"The measure that reaches the most expected churners is \u201c{best['measure']}\u201d "
            f"for \u201c{best['group']}\u201d: {best['clients']:,} clients, about "
            f"{best['expected_churners']:,.0f} expected to leave."
        )
    return texts


def _scored_clients(
    clients: pd.DataFrame, scores: pd.DataFrame, assignments: pd.DataFrame
) -> pd.DataFrame:
    """Join each client's answers, score and segment, in client_id order."""
    scored = by_client(clients[[CLIENT_ID, *FEATURES]], scores, assignments, how="inner")
    if scored[CLIENT_ID].is_monotonic_increasing:
        return scored
    return scored.sort_values(CLIENT_ID, kind="stable").reset_index(drop=True)


def build_insights(
    month: dt.date,
    clients: pd.DataFrame,
    reference: pd.DataFrame,
    scores: pd.DataFrame,
    segmentation: Segmentation,
    drivers: Drivers,
    measures: Measures | None = None,
) -> MonthInsights:
    """Compute the month's target groups, measures, patterns and conclusions.

    Args:
        clients: the month's valid questionnaires.
        reference: labelled questionnaires the churn rates are measured on.
        scores: one row a client with ``churn_probability`` and ``risk_tier``.
        measures: the rules of the measures; None reads the shipped file.
    """
    measures = measures or load_measures()
    scored = _scored_clients(clients, scores, segmentation.assignments)
    reference = reference.dropna(subset=[CHURNED]) if not reference.empty else reference
    clusters = _clusters(segmentation, scored)
    groups = _target_groups(clusters, scored, measures.target_groups)
    recommended = _measures(groups, scored, drivers, measures)
    # A categorical: a few titles repeated for millions of clients.
    scored["suggested_action"] = suggest_actions(
        scored, recommended, drivers.influence, measures
    ).array
    patterns = _patterns(clients, reference, drivers)
    conclusions = _conclusions(month, scored, reference, clusters, drivers, groups, recommended)
    logger.info(
        "insights: %d target group(s), %d measure(s), %d pattern(s) from %s",
        len(groups),
        len(recommended),
        len(patterns),
        measures.path,
    )
    return MonthInsights(
        month=month,
        clients=clients,
        reference=reference,
        scores=scored[
            [CLIENT_ID, "churn_probability", "risk_tier", "reasons", CLUSTER_ID, "suggested_action"]
        ],
        clusters=clusters,
        differences=segmentation.differences,
        silhouette=segmentation.silhouette,
        linkage=segmentation.linkage,
        drivers=drivers,
        target_groups=groups,
        measures=recommended,
        patterns=patterns,
        conclusions=conclusions,
    )
