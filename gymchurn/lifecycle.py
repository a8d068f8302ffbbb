"""Decide when to retrain, and measure how the model and its inputs drift.

Pure functions: :mod:`gymchurn.registry` and :mod:`gymchurn.steps` read the registry and
the questionnaires, and pass the values in.
"""

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from gymchurn.schema import FEATURES, format_month

RETRAIN_POLICIES = ("auto", "always", "never")

# Share added to every bin so that an empty bin gives a large, finite PSI.
_PSI_EPSILON = 1e-4


def population_stability_index(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """Compute the PSI of ``actual`` against ``expected`` over quantile bins of ``expected``.

    PSI is the sum over bins of (actual share - expected share) * ln(actual
    share / expected share). A feature with few distinct values gets one bin
    per value. Common reading: below 0.1 stable, 0.1 to 0.25 a moderate shift,
    above 0.25 a large one.
    """
    expected = np.asarray(expected, dtype="float64")
    actual = np.asarray(actual, dtype="float64")
    expected, actual = expected[~np.isnan(expected)], actual[~np.isnan(actual)]
    if len(expected) == 0 or len(actual) == 0:
        return float("nan")
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    expected_share = np.bincount(
        np.searchsorted(edges, expected, side="right"), minlength=len(edges) + 1
    )
    actual_share = np.bincount(
        np.searchsorted(edges, actual, side="right"), minlength=len(edges) + 1
    )
    expected_share = expected_share / len(expected) + _PSI_EPSILON
    actual_share = actual_share / len(actual) + _PSI_EPSILON
    return float(np.sum((actual_share - expected_share) * np.log(actual_share / expected_share)))


def feature_drift(training: pd.DataFrame, scoring: pd.DataFrame) -> dict[str, float]:
    """Return the PSI of each feature of the month's clients against the training rows."""
    return {
        name: population_stability_index(training[name].to_numpy(), scoring[name].to_numpy())
        for name in FEATURES
    }


def score_distribution(probabilities: np.ndarray, high: np.ndarray) -> dict[str, float]:
    """Summarise the month's churn probabilities; ``high`` flags the high tier."""
    return {
        "score_mean": float(np.mean(probabilities)),
        "score_p50": float(np.quantile(probabilities, 0.5)),
        "score_p90": float(np.quantile(probabilities, 0.9)),
        "share_high": float(np.mean(high)),
    }


def realised_metrics(
    labels: np.ndarray, probabilities: np.ndarray, high: np.ndarray
) -> dict[str, float]:
    """Compare published scores with the outcomes that followed.

    Returns:
        ``realised_roc_auc`` (absent unless both outcomes occur), the
        precision and recall of the high tier (``high``), the share that left
        against the mean probability, and the number of outcomes.
    """
    labels = np.asarray(labels, dtype=bool)
    flagged = np.asarray(high, dtype=bool)
    metrics = {
        "realised_outcomes": float(len(labels)),
        "realised_churn_rate": float(np.mean(labels)),
        # An exact sum: the mean does not depend on the order of the rows.
        "realised_mean_probability": math.fsum(probabilities) / len(labels),
        "realised_precision_high": float(precision_score(labels, flagged, zero_division=0)),
        "realised_recall_high": float(recall_score(labels, flagged, zero_division=0)),
    }
    if labels.any() and not labels.all():
        metrics["realised_roc_auc"] = float(roc_auc_score(labels, probabilities))
    return metrics


@dataclass(frozen=True)
class RetrainDecision:
    """Whether the run trains a challenger, and every reason found."""

    retrain: bool
    reason: str


def training_months(registered: dict) -> tuple[dt.date, ...]:
    """Return the training months of a registered model's row, sorted, as dates."""
    return tuple(sorted(dt.date.fromisoformat(str(m)[:10]) for m in registered["training_months"]))


def decide_retrain(
    policy: str,
    *,
    champion: dict | None,
    labelled_months: list[dt.date],
    drift: dict[str, float],
    drift_features: list[str],
    drift_threshold: float,
    last_month: tuple[dt.date, dict] | None,
    min_roc_auc: float,
    max_calibration_gap: float,
) -> RetrainDecision:
    """Decide whether this run trains a challenger.

    With ``auto`` the run retrains on any of these triggers, and the reason
    lists each one that fired:

    - there is no champion;
    - a labelled month arrived that the champion was not trained on;
    - the PSI of a feature in ``drift_features`` exceeds ``drift_threshold``;
    - last month's published scores, against its outcomes, reached a
      realised ROC-AUC below ``min_roc_auc``, or their mean probability
      missed the share that left by more than ``max_calibration_gap``.

    ``last_month`` is (month, metrics of :func:`realised_metrics`) or None.
    With ``never`` the reason still lists the triggers that fired, so a
    reader sees what the run did not retrain for.

    Raises:
        ValueError: an unknown policy, or ``never`` without a champion.
    """
    if policy not in RETRAIN_POLICIES:
        raise ValueError(
            f"invalid retrain policy {policy!r}: expected one of {', '.join(RETRAIN_POLICIES)}"
        )
    if champion is None:
        if policy == "never":
            raise ValueError(
                "retrain policy never, but the registry has no champion model; "
                "run with --retrain auto first"
            )
        return RetrainDecision(True, "no champion model")

    reasons = []
    trained_on = set(training_months(champion))
    new_months = sorted(set(labelled_months) - trained_on)
    if new_months:
        reasons.append("new labelled month " + ", ".join(format_month(m) for m in new_months))
    drifted = {
        name: value
        for name, value in drift.items()
        if name in drift_features and value > drift_threshold
    }
    for name, value in sorted(drifted.items(), key=lambda item: -item[1]):
        psi, threshold = format_compared(value, drift_threshold, decimals=2)
        reasons.append(f"drift in {name}: PSI {psi} > {threshold}")
    reasons += _realised_triggers(last_month, min_roc_auc, max_calibration_gap)
    if policy == "never":
        if reasons:
            return RetrainDecision(False, f"retrain policy never, although {'; '.join(reasons)}")
        return RetrainDecision(False, "retrain policy never")
    if policy == "always":
        return RetrainDecision(True, "; ".join(["retrain policy always", *reasons]))
    if reasons:
        return RetrainDecision(True, "; ".join(reasons))
    largest = max((drift[name] for name in drift_features if name in drift), default=0.0)
    kept = f"champion trained on every labelled month; largest PSI {largest:.2f}"
    if last_month is not None and "realised_roc_auc" in last_month[1]:
        auc = last_month[1]["realised_roc_auc"]
        kept += f"; realised ROC-AUC on {format_month(last_month[0])} outcomes {auc:.3f}"
    return RetrainDecision(False, kept)


def _realised_triggers(
    last_month: tuple[dt.date, dict] | None, min_roc_auc: float, max_calibration_gap: float
) -> list[str]:
    if last_month is None:
        return []
    month, metrics = last_month
    label = format_month(month)
    triggers = []
    auc = metrics.get("realised_roc_auc")
    if auc is not None and auc < min_roc_auc:
        shown_auc, shown_min = format_compared(auc, min_roc_auc, decimals=3)
        triggers.append(f"realised ROC-AUC on {label} outcomes {shown_auc} < {shown_min}")
    gap = metrics["realised_churn_rate"] - metrics["realised_mean_probability"]
    if abs(gap) > max_calibration_gap:
        shown_gap, shown_max = format_compared(abs(gap), max_calibration_gap, 2, scale=100)
        triggers.append(
            f"{metrics['realised_churn_rate']:.1%} of {label}'s clients left against a mean "
            f"probability of {metrics['realised_mean_probability']:.1%} "
            f"(gap {shown_gap} > {shown_max} points)"
        )
    return triggers


def format_compared(
    value: float, threshold: float, decimals: int, scale: float = 1.0
) -> tuple[str, str]:
    """Format a value and the threshold it is compared with, so that they print differently.

    Both get ``decimals`` decimal places, or more when the value would
    otherwise print equal to the threshold, up to ``decimals + 6``. ``scale``
    multiplies both first, for example 100 to print shares in percentage points.
    """
    for places in range(decimals, decimals + 7):
        shown_value = f"{value * scale:.{places}f}"
        shown_threshold = f"{threshold * scale:.{places}f}"
        if shown_value != shown_threshold:
            break
    return shown_value, shown_threshold
