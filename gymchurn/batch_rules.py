"""Batch rules: compare a month of questionnaires with the months before it.

Row rules (``gymchurn.validation``) judge each row on its own. These rules judge
the month as a whole against its history, and return findings instead of raising:

- ``row_count``: the month's rows against the latest earlier month's. Outside 0.5x to
  2x is an error, because a halved or doubled export is far more often a broken or
  repeated export than a real change of membership. Outside 0.8x to 1.25x is a warning.
- ``<column>_null_share``: a feature's share of nulls against its highest share in
  any earlier month. Over 5 percentage points more is a warning, over 25 an error,
  because by then the export of that column is broken.
- ``<column>_new_values``: a value of a flag or of contract_period that no earlier month
  has. A warning: the rows are still scored, but the model never trained on the value.
- ``churned_share``: the churn share of the month's labelled rows against the earlier
  months' labelled rows. More than 15 percentage points apart blocks training on the
  month's labels until someone confirms them, because inverted or shifted labels
  (74 % churn against 26 %) would teach the model the opposite of the truth.

Severities: ``error`` stops the run, ``warning`` lets it go on, and ``block_training``
scores the month but keeps its labels out of training until they are confirmed.

The rules see earlier months only as ``MonthProfile`` values: the row, null, label and
churner counts and the category values of each month. A run reads them from SQL
aggregates (``gymchurn.history``), so that no earlier row is kept in memory. Tests and
callers with frames build them with :func:`profile_months`. The functions are pure:
they read the profiles and the month's frame and return findings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gymchurn.schema import BINARY_FEATURES, CHURNED, CLIENT_ID, FEATURES, MONTH, format_month

ERROR = "error"
WARNING = "warning"
BLOCK_TRAINING = "block_training"
SEVERITIES = (ERROR, WARNING, BLOCK_TRAINING)

# Columns whose values are categories: a value never seen before is reported.
CATEGORY_COLUMNS = [*BINARY_FEATURES, "contract_period"]

# NOTE: no code reads this setting yet. The caller maps it to ``labels_confirmed``.
CONFIRM_LABELS_SETTING = "GYMCHURN_CONFIRM_LABELS"

_MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Finding:
    """One batch rule's finding on a month.

    ``count`` and ``share`` are the affected rows and their share of the month where
    the rule counts rows (null cells, rows with a new value, churned rows), else None.
    ``numbers`` contains the measured values and limits behind the message.
    """

    rule: str
    severity: str
    message: str
    column: str | None = None
    count: int | None = None
    share: float | None = None
    numbers: Mapping[str, Any] = field(default_factory=dict)
    examples: tuple = ()


@dataclass(frozen=True)
class BatchRuleLimits:
    """Limits of the batch rules. Shares are fractions from 0 to 1."""

    row_count_error_band: tuple[float, float] = (0.5, 2.0)
    """Ratios of the month's rows to the previous month's outside which the run stops."""
    row_count_warning_band: tuple[float, float] = (0.8, 1.25)
    null_share_warning_excess: float = 0.05
    """Null share above the highest earlier monthly share that gives a warning."""
    null_share_error_excess: float = 0.25
    label_share_max_difference: float = 0.15
    """Largest difference of churn shares that still lets the labels into training."""
    min_labelled_rows: int = 50
    """Fewest labelled rows in the month for the label rule to judge them."""


DEFAULT_LIMITS = BatchRuleLimits()


@dataclass(frozen=True)
class MonthProfile:
    """Counts and category values of one month's questionnaires, for the batch rules.

    ``null_counts`` and ``category_values`` have a key for each column the month's
    rows have: a feature for nulls, a column of ``CATEGORY_COLUMNS`` for values.
    """

    month: dt.date
    n_rows: int
    null_counts: Mapping[str, int]
    """Null cells of each feature."""
    category_values: Mapping[str, frozenset[float]]
    """Distinct non-null values of each category column."""
    n_labelled: int = 0
    """Rows with a known outcome (``churned`` not null)."""
    n_churned: int = 0
    """Labelled rows with ``churned`` 1."""


def profile_months(questionnaires: pd.DataFrame) -> tuple[MonthProfile, ...]:
    """Profile each month of ``questionnaires``, in month order.

    Args:
        questionnaires: Rows with ``month``, any of the features and, where outcomes
            are known, ``churned`` (1, 0 or null). Rows without a month are left out.

    Returns:
        One profile a month, the same as the run reads for stored months with the
        SQL aggregates of ``gymchurn.history``.
    """
    if questionnaires.empty:
        return ()
    months = _as_timestamps(questionnaires[MONTH])
    return tuple(
        _profile_rows(questionnaires[(months == month).to_numpy()], month.date())
        for month in sorted(months.dropna().unique())
    )


def profile_month(questionnaires: pd.DataFrame) -> MonthProfile:
    """Profile the rows of one month.

    Raises:
        ValueError: When ``questionnaires`` has no rows or more than one month.
    """
    return _profile_rows(questionnaires, _single_month(questionnaires).date())


def _profile_rows(rows: pd.DataFrame, month: dt.date) -> MonthProfile:
    null_counts = {
        column: int(rows[column].isna().sum()) for column in FEATURES if column in rows.columns
    }
    category_values = {
        column: frozenset(np.unique(_known_values(rows[column])).tolist())
        for column in CATEGORY_COLUMNS
        if column in rows.columns
    }
    labels = _known_values(rows[CHURNED]) if CHURNED in rows.columns else np.empty(0)
    return MonthProfile(
        month,
        len(rows),
        null_counts,
        category_values,
        n_labelled=len(labels),
        n_churned=int((labels == 1).sum()),
    )


def check_batch(
    questionnaires: pd.DataFrame,
    history: Sequence[MonthProfile],
    *,
    labels_confirmed: bool = False,
    limits: BatchRuleLimits = DEFAULT_LIMITS,
) -> tuple[Finding, ...]:
    """Run every batch rule on one month against the months before it.

    Args:
        questionnaires: The month's rows as they were loaded, before validation, so
            that null cells count: ``month`` (one value), the features, and
            ``churned`` (1, 0 or null) where outcomes are known.
        history: Profiles of earlier months (:func:`profile_months`). Profiles of
            the same or later months are ignored. Profile every questionnaire of
            those months, not only the labelled ones, because the row-count rule
            counts them.
        labels_confirmed: True when someone confirmed the month's labels (the setting
            named in ``CONFIRM_LABELS_SETTING``): a label shift is then a warning.
        limits: The rules' bands and thresholds.

    Returns:
        The findings, empty when every rule passed. With no earlier month there is
        nothing to compare with, so the result is empty.

    Raises:
        ValueError: When ``questionnaires`` has no rows or more than one month.
    """
    profile = profile_month(questionnaires)
    earlier = [past for past in history if past.month < profile.month]
    if not earlier:
        return ()
    findings = [
        *check_row_count(profile, earlier, limits=limits),
        *check_null_shares(profile, earlier, limits=limits),
        *check_new_values(questionnaires, earlier),
        *check_label_share(profile, earlier, labels_confirmed=labels_confirmed, limits=limits),
    ]
    return tuple(findings)


def check_row_count(
    month: MonthProfile,
    history: Sequence[MonthProfile],
    *,
    limits: BatchRuleLimits = DEFAULT_LIMITS,
) -> list[Finding]:
    """Compare the month's number of rows with the latest earlier month's."""
    if not history:
        return []
    previous = max(history, key=lambda profile: profile.month)
    n_rows = month.n_rows
    n_previous = previous.n_rows
    ratio = n_rows / n_previous

    numbers = {
        "rows": n_rows,
        "previous_rows": n_previous,
        "previous_month": format_month(previous.month),
        "ratio": ratio,
        "error_band": list(limits.row_count_error_band),
        "warning_band": list(limits.row_count_warning_band),
    }
    # The month is left out, because the log line, error and output that show
    # a finding name it already.
    text = f"{n_rows} rows, {ratio:.2f}x the {n_previous} rows of {format_month(previous.month)}"

    low, high = limits.row_count_error_band
    if not low <= ratio <= high:
        message = (
            f"{text}, outside the allowed {low:.2f}x to {high:.2f}x. Check that the "
            "export is complete and was loaded once. If the change is real, widen the "
            "band with GYMCHURN_ROW_COUNT_ERROR_BAND (a JSON list, for example [0, 1000]) "
            "and rerun."
        )
        return [Finding("row_count", ERROR, message, numbers=numbers)]
    low, high = limits.row_count_warning_band
    if not low <= ratio <= high:
        message = f"{text}, outside the usual {low:.2f}x to {high:.2f}x. The run goes on."
        return [Finding("row_count", WARNING, message, numbers=numbers)]
    return []


def check_null_shares(
    month: MonthProfile,
    history: Sequence[MonthProfile],
    *,
    limits: BatchRuleLimits = DEFAULT_LIMITS,
) -> list[Finding]:
    """Compare each feature's share of nulls with its highest share in an earlier month."""
    if not history:
        return []
    findings = []
    n_rows = month.n_rows
    for column in FEATURES:
        if column not in month.null_counts:
            continue
        n_null = month.null_counts[column]
        share = n_null / n_rows
        monthly = [
            profile.null_counts[column] / profile.n_rows
            for profile in history
            if column in profile.null_counts and profile.n_rows
        ]
        baseline = max(monthly, default=0.0)
        excess = share - baseline
        if excess > limits.null_share_error_excess:
            severity = ERROR
            action = "The run stops: fix the export of this column and rerun."
        elif excess > limits.null_share_warning_excess:
            severity = WARNING
            action = "Those rows are quarantined; the run goes on."
        else:
            continue
        message = (
            f"{column}: {share:.1%} null ({n_null} of {n_rows} rows), against at most "
            f"{baseline:.1%} in an earlier month. {action}"
        )
        numbers = {"null_share": share, "history_max_null_share": baseline}
        findings.append(
            Finding(
                f"{column}_null_share",
                severity,
                message,
                column=column,
                count=n_null,
                share=share,
                numbers=numbers,
            )
        )
    return findings


def check_new_values(
    questionnaires: pd.DataFrame, history: Sequence[MonthProfile]
) -> list[Finding]:
    """Report category values of the month that no earlier month has."""
    findings = []
    n_rows = len(questionnaires)
    for column in CATEGORY_COLUMNS:
        known = [
            profile.category_values[column]
            for profile in history
            if column in profile.category_values
        ]
        if column not in questionnaires.columns or not known:
            continue
        values = _float_values(questionnaires[column])
        seen = np.array(sorted(frozenset().union(*known)), dtype="float64")
        is_new = ~np.isnan(values) & ~np.isin(values, seen)
        if not is_new.any():
            continue
        new_values = sorted(set(values[is_new].tolist()))
        examples = tuple(_new_value_example(questionnaires, values, value) for value in new_values)
        value_text = ", ".join(f"{value:g}" for value in new_values)
        seen_text = ", ".join(f"{value:g}" for value in seen)
        n_new = int(is_new.sum())
        message = (
            f"{column}: value(s) {value_text} in {n_new} row(s) never appeared in an earlier "
            f"month (seen: {seen_text}). Rows whose value breaks a row rule are "
            "quarantined; the others are scored, but the model never trained on these values."
        )
        findings.append(
            Finding(
                f"{column}_new_values",
                WARNING,
                message,
                column=column,
                count=n_new,
                share=n_new / n_rows,
                numbers={"new_values": new_values, "seen_values": seen.tolist()},
                examples=examples,
            )
        )
    return findings


def check_label_share(
    month: MonthProfile,
    history: Sequence[MonthProfile],
    *,
    labels_confirmed: bool = False,
    limits: BatchRuleLimits = DEFAULT_LIMITS,
) -> list[Finding]:
    """Compare the churn share of the month's labelled rows with the earlier months'.

    To check a month whose outcomes arrived later, pass that month's profile as
    ``month`` and the profiles of the months before it as ``history``.
    """
    n_history_labelled = sum(profile.n_labelled for profile in history)
    if month.n_labelled < limits.min_labelled_rows or n_history_labelled == 0:
        return []
    share = month.n_churned / month.n_labelled
    history_share = sum(profile.n_churned for profile in history) / n_history_labelled
    difference = share - history_share
    if abs(difference) <= limits.label_share_max_difference:
        return []

    label = format_month(month.month)
    message = (
        f"{CHURNED}: {share:.1%} of the {month.n_labelled} labelled rows of {label} churned, "
        f"against {history_share:.1%} of {n_history_labelled} labelled rows of earlier "
        f"months ({abs(difference) * 100:.1f} points apart, allowed "
        f"{limits.label_share_max_difference * 100:.0f})."
    )
    if abs(share - (1 - history_share)) <= limits.label_share_max_difference / 3:
        message += f" The labels look inverted: 1 - {share:.1%} is {1 - share:.1%}."
    numbers = {
        "month": label,
        "churn_share": share,
        "history_churn_share": history_share,
        "labelled_rows": month.n_labelled,
        "history_labelled_rows": n_history_labelled,
        "max_difference": limits.label_share_max_difference,
    }
    if labels_confirmed:
        message += " The labels were confirmed, so they are used for training."
        severity = WARNING
    else:
        message += (
            f" The month is scored, but its labels stay out of training until confirmed: "
            f"check the Churn column of the export and reload the month if it is wrong, "
            f"or set {CONFIRM_LABELS_SETTING}={label} and rerun to train on them as they are."
        )
        severity = BLOCK_TRAINING
    return [
        Finding(
            "churned_share",
            severity,
            message,
            column=CHURNED,
            count=month.n_churned,
            share=share,
            numbers=numbers,
        )
    ]


def stops_run(findings: Iterable[Finding]) -> bool:
    """Return True when a finding has severity ``error``."""
    return any(finding.severity == ERROR for finding in findings)


def blocks_training(findings: Iterable[Finding]) -> bool:
    """Return True when a finding keeps the month's labels out of training."""
    return any(finding.severity == BLOCK_TRAINING for finding in findings)


def raise_for_errors(findings: Sequence[Finding], *, dataset: str) -> None:
    """Raise ``DataValidationError`` naming every finding of severity ``error``."""
    from gymchurn.validation import DataValidationError

    errors = [finding for finding in findings if finding.severity == ERROR]
    if errors:
        raise DataValidationError(
            f"{dataset}: " + " ".join(finding.message for finding in errors),
            dataset=dataset,
            batch_rule=errors[0].rule,
        )


def _single_month(questionnaires: pd.DataFrame) -> pd.Timestamp:
    months = _as_timestamps(questionnaires[MONTH]).dropna().unique()
    if len(months) != 1:
        raise ValueError(
            f"invalid batch: expected the rows of one month, found {len(months)} month(s)"
        )
    return pd.Timestamp(months[0])


def _as_timestamps(months: pd.Series) -> pd.Series:
    return pd.to_datetime(months)


def _float_values(column: pd.Series) -> np.ndarray:
    return column.to_numpy(dtype="float64", na_value=np.nan)


def _known_values(column: pd.Series) -> np.ndarray:
    values = _float_values(column)
    return values[~np.isnan(values)]


def _new_value_example(
    questionnaires: pd.DataFrame, values: np.ndarray, value: float
) -> dict[str, Any]:
    rows = np.flatnonzero(values == value)
    client_ids = []
    if CLIENT_ID in questionnaires.columns:
        client_ids = questionnaires[CLIENT_ID].to_numpy()[rows[:_MAX_EXAMPLES]].tolist()
    return {"value": value, "rows": len(rows), "client_ids": client_ids}
