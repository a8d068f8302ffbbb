"""The features that drive churn among the labelled clients of one month.

Three views of the same question:

- Permutation importance: how much the held-out ROC-AUC of the month's model
  drops when one questionnaire feature is shuffled. The model is refitted
  without the held-out rows, or used as it is when it trained only on earlier
  months, so it is measured on clients it has not seen.
- A logistic regression on the month's standardised features, whose
  coefficient signs show whether a feature raises or lowers churn when the
  others are held fixed.
- The churn rate by value or quantile bin of each feature.

Features are shuffled before the model computes its behaviour features, so a
feature's importance includes its use through them. On the real file, visits a
week since the first visit ranks first although it separates churners weakly
on its own (ROC-AUC 0.67), because the behaviour features include its change
to last month's visits. Shuffling one of two correlated features also pairs
values that never occur together. Importances therefore measure the model's
reliance on a feature, not its association with churn, which
``churn_by_value`` shows. The regression coefficients of two correlated
features can take opposite signs.
"""

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from gymchurn.model import feature_matrix, settled_clone
from gymchurn.schema import (
    BINARY_FEATURES,
    CHURNED,
    CLIENT_ID,
    FEATURE_LABELS,
    FEATURES,
    INTEGER_FEATURES,
    MONTH,
)

logger = logging.getLogger(__name__)

# Share of the reference rows held out to measure permutation importance on.
HOLDOUT_SHARE = 0.25
# Fewer held-out rows than this get a warning that the drivers' order is not
# to be trusted. A judgement, not a measured bound: on a few dozen rows, one
# client more or less can reorder features whose importances are close.
MIN_TRUSTED_HOLDOUT_ROWS = 200

# Maximum number of quantile bins of a feature that is not shown by value.
MAX_BINS = 5

# Features whose churn rate is shown for each value rather than by quantile bin:
# the yes/no features, and the contract lengths the chain sells.
BY_VALUE_FEATURES = [*BINARY_FEATURES, "contract_period"]

# Decimals of the float bounds in bin labels.
LABEL_DECIMALS = 2

RAISES_CHURN = "raises churn"
LOWERS_CHURN = "lowers churn"

# lbfgs converged in 15 iterations on the real file's standardised features
# (scikit-learn 1.9.1), so this limit leaves a wide margin for other months.
_LR_MAX_ITER = 2000

_REQUIRED_COLUMNS = [CLIENT_ID, MONTH, *FEATURES, CHURNED]


@dataclass(frozen=True)
class Drivers:
    """What drives churn among the labelled clients of one month."""

    influence: pd.DataFrame
    """One row a feature, strongest first: ``feature``, ``label`` (plain name, from
    ``schema.FEATURE_LABELS``), ``permutation_importance`` (mean drop of the held-out
    ROC-AUC when the feature is shuffled), ``permutation_std``, ``lr_coefficient``
    (standardised logistic-regression coefficient; positive raises churn),
    ``direction`` (``raises churn`` or ``lowers churn``, from the coefficient's sign),
    ``rank`` (1 = largest permutation importance)."""
    churn_by_value: pd.DataFrame
    """Churn rate by value or bin of each feature: ``feature``, ``bin_order`` (0, 1, ...
    from the lowest values), ``bin_label`` (``"1"``, ``"0-2"``, ``"27.5-33"``),
    ``lower``, ``upper`` (inclusive bounds of the bin's values), ``clients``,
    ``churned``, ``churn_rate``."""
    holdout_rows: int
    """Held-out labelled rows the permutation importance was measured on."""
    holdout_roc_auc: float
    """ROC-AUC of the measured model on those rows, before any shuffling."""


def find_drivers(
    pipeline: Pipeline,
    training: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    seed: int,
    max_training_rows: int = 50_000,
    n_repeats: int = 5,
    refit: bool = True,
) -> Drivers:
    """Measure which features drive churn among the ``reference`` clients.

    A stratified ``HOLDOUT_SHARE`` of ``reference`` is held out. A clone of
    ``pipeline`` is refitted on the ``training`` rows outside it, matched by
    (``client_id``, ``month``), or on a random sample of ``max_training_rows``
    of them when there are more. Each feature is then shuffled ``n_repeats``
    times on the held-out rows to measure the drop of their ROC-AUC. The
    logistic-regression signs and the churn rates by value come from all of
    ``reference``. Rows are sorted by month and client first, so the same rows
    in any order give the same result.

    With ``refit`` False, the importance is measured on ``pipeline`` as it is,
    and ``training`` is not used. The caller passes False only for a model
    that trained on none of the ``reference`` rows.

    Args:
        pipeline: the month's churn model, a scikit-learn pipeline that takes
            ``model.feature_matrix``. Its unfitted parameters are used, and
            the setting its search chose when it is fitted
            (:func:`gymchurn.model.settled_clone`).
        training: labelled rows the model can be trained on, one row a client
            and month: ``client_id``, ``month``, the 13 features and
            ``churned`` (0 or 1).
        reference: labelled rows of the month described, with the same
            columns, usually the latest month of ``training``.
        seed: seed of the held-out split, the sample and the shuffles. The
            refit keeps the random state set in ``pipeline``.
        max_training_rows: maximum number of rows the model is refitted on.
        n_repeats: shuffles of each feature.
        refit: whether to refit a clone of ``pipeline`` outside the held-out
            rows; False only for a fitted pipeline that never saw ``reference``.

    Returns:
        The features ranked by permutation importance with their regression
        coefficients, the churn rate by value or bin of each feature, and the
        size and ROC-AUC of the held-out part.

    Raises:
        ValueError: when a column or value is missing, a ``churned`` value is
            not 0 or 1, or a (``client_id``, ``month``) pair repeats. Also when
            ``reference`` has fewer than 2 churned rows, 2 retained rows or 5
            rows, when the held-out rows contain a single class, and when no
            training row remains outside them.
    """
    started = time.perf_counter()
    training = _sorted_rows(_checked(training, "training"))
    reference = _sorted_rows(_checked(reference, "reference"))
    if max_training_rows < 1:
        raise ValueError(f"max_training_rows must be at least 1, got {max_training_rows}")

    holdout = _holdout_rows(reference, seed)
    if refit:
        fit_rows = _fit_rows(training, holdout, max_training_rows, seed)
        measured = settled_clone(pipeline).fit(feature_matrix(fit_rows), _labels(fit_rows))
        fit_note = f"model refitted on {len(fit_rows)} rows"
    else:
        measured = pipeline
        fit_note = "model as trained, on earlier months"

    holdout_features = feature_matrix(holdout)
    holdout_labels = _labels(holdout)
    holdout_roc_auc = float(
        roc_auc_score(holdout_labels, measured.predict_proba(holdout_features)[:, 1])
    )
    importance = permutation_importance(
        measured,
        holdout_features,
        holdout_labels,
        scoring="roc_auc",
        n_repeats=n_repeats,
        random_state=seed,
    )

    influence = _influence(
        importance.importances_mean, importance.importances_std, _lr_coefficients(reference)
    )
    drivers = Drivers(
        influence=influence,
        churn_by_value=_churn_by_value(reference),
        holdout_rows=len(holdout),
        holdout_roc_auc=holdout_roc_auc,
    )

    top = ", ".join(
        f"{row.feature} ({row.permutation_importance:.3f})"
        for row in influence.head(3).itertuples()
    )
    logger.info(
        "Drivers of churn measured on %d held-out rows (%s, ROC-AUC %.4f): "
        "top drivers %s; took %.1f s",
        len(holdout),
        fit_note,
        holdout_roc_auc,
        top,
        time.perf_counter() - started,
    )
    if len(holdout) < MIN_TRUSTED_HOLDOUT_ROWS:
        logger.warning(
            "Drivers of churn measured on only %d held-out rows, fewer than %d: their order "
            "may change with a few clients. Read them with care, or load outcomes for more "
            "clients of the latest labelled month",
            len(holdout),
            MIN_TRUSTED_HOLDOUT_ROWS,
        )
    return drivers


def _checked(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Check the columns, values and keys of ``frame``, named ``name`` in errors, and return it."""
    missing = [column for column in _REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing the columns {missing}; expected {_REQUIRED_COLUMNS}")
    incomplete = [column for column in _REQUIRED_COLUMNS if frame[column].isna().any()]
    if incomplete:
        raise ValueError(f"{name} has missing values in {incomplete}; drop or fix those rows first")
    labels = frame[CHURNED].astype("float64")
    if not labels.isin([0.0, 1.0]).all():
        invalid = sorted(labels[~labels.isin([0.0, 1.0])].unique().tolist())
        raise ValueError(f"{name} has churned values {invalid[:5]}; expected 0 or 1")
    repeated = frame.duplicated([CLIENT_ID, MONTH], keep=False)
    if repeated.any():
        examples = frame.loc[repeated, [CLIENT_ID, MONTH]].head(3).to_dict("records")
        raise ValueError(
            f"{name} has {int(repeated.sum())} rows whose (client_id, month) repeats, "
            f"for example {examples}; expected one row a client and month"
        )
    return frame


def _sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Return the rows ordered by month and client, with a new index and a datetime month."""
    rows = frame.loc[:, _REQUIRED_COLUMNS].assign(**{MONTH: pd.to_datetime(frame[MONTH])})
    order = np.lexsort((rows[CLIENT_ID].to_numpy(), rows[MONTH].to_numpy()))
    return rows.iloc[order].reset_index(drop=True)


def _labels(frame: pd.DataFrame) -> np.ndarray:
    return frame[CHURNED].to_numpy(dtype="float64").astype("int64")


def can_hold_out(labels: np.ndarray) -> bool:
    """Tell whether labels (1 churned, 0 retained) allow a stratified ``HOLDOUT_SHARE``."""
    n_churned = int(labels.sum())
    # scikit-learn's stratified split needs two rows of each class, and at least
    # as many held-out rows as classes.
    return min(n_churned, len(labels) - n_churned) >= 2 and (
        math.ceil(HOLDOUT_SHARE * len(labels)) >= 2
    )


def _holdout_rows(reference: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Return a stratified ``HOLDOUT_SHARE`` of the reference rows, in their order."""
    labels = _labels(reference)
    n_churned = int(labels.sum())
    n_retained = len(labels) - n_churned
    if not can_hold_out(labels):
        raise ValueError(
            f"reference needs at least 2 churned rows, 2 retained rows and 5 rows in all "
            f"to hold out a stratified {HOLDOUT_SHARE:.0%}; found {n_churned} churned "
            f"and {n_retained} retained"
        )
    _, holdout_index = train_test_split(
        np.arange(len(labels)), test_size=HOLDOUT_SHARE, stratify=labels, random_state=seed
    )
    holdout = reference.iloc[np.sort(holdout_index)].reset_index(drop=True)
    classes = np.unique(_labels(holdout))
    if len(classes) < 2:
        raise ValueError(
            f"the {len(holdout)} held-out reference rows all have churned={classes[0]}, so "
            f"ROC-AUC is undefined; reference needs more churned and retained rows "
            f"(found {n_churned} churned and {n_retained} retained)"
        )
    return holdout


def _fit_rows(
    training: pd.DataFrame, holdout: pd.DataFrame, max_rows: int, seed: int
) -> pd.DataFrame:
    """Return the training rows not held out, at most ``max_rows`` of them drawn at random."""
    keys = pd.MultiIndex.from_frame(training[[CLIENT_ID, MONTH]])
    held_out = pd.MultiIndex.from_frame(holdout[[CLIENT_ID, MONTH]])
    remaining = training[~keys.isin(held_out)]
    if remaining.empty:
        raise ValueError(
            f"no training rows remain outside the {len(holdout)} held-out reference rows; "
            "training must contain rows other than the held-out ones"
        )
    if len(remaining) > max_rows:
        sample = np.random.default_rng(seed).choice(len(remaining), size=max_rows, replace=False)
        remaining = remaining.iloc[np.sort(sample)]
    return remaining.reset_index(drop=True)


def _lr_coefficients(reference: pd.DataFrame) -> np.ndarray:
    """Fit a logistic regression on the standardised features and return its coefficients."""
    regression = make_pipeline(
        StandardScaler(), LogisticRegression(solver="lbfgs", max_iter=_LR_MAX_ITER)
    )
    regression.fit(feature_matrix(reference), _labels(reference))
    return regression[-1].coef_[0]


def _influence(
    importance_mean: np.ndarray, importance_std: np.ndarray, coefficients: np.ndarray
) -> pd.DataFrame:
    influence = pd.DataFrame(
        {
            "feature": FEATURES,
            "label": [FEATURE_LABELS[feature] for feature in FEATURES],
            "permutation_importance": importance_mean,
            "permutation_std": importance_std,
            "lr_coefficient": coefficients,
            "direction": np.where(coefficients > 0, RAISES_CHURN, LOWERS_CHURN),
        }
    )
    # A stable sort keeps tied features in FEATURES order.
    influence = influence.sort_values(
        "permutation_importance", ascending=False, kind="stable"
    ).reset_index(drop=True)
    influence["rank"] = np.arange(1, len(influence) + 1)
    return influence


def _churn_by_value(reference: pd.DataFrame) -> pd.DataFrame:
    """Count the clients and churned clients of each value or quantile bin of each feature."""
    labels = _labels(reference)
    tables = []
    for feature in FEATURES:
        values = reference[feature].astype("float64")
        if feature in BY_VALUE_FEATURES:
            groups = values
        else:
            # Ties can merge quantile edges, so a feature may get fewer bins.
            groups = pd.qcut(values, MAX_BINS, labels=False, duplicates="drop")
            if groups.isna().any():
                # qcut puts no row in a bin when all values are equal.
                groups = values
        table = (
            pd.DataFrame({"value": values, "group": groups, CHURNED: labels})
            .groupby("group", sort=True)
            .agg(
                lower=("value", "min"),
                upper=("value", "max"),
                clients=("value", "size"),
                churned=(CHURNED, "sum"),
            )
            .reset_index(drop=True)
        )
        is_integer = feature in INTEGER_FEATURES
        bounds = zip(table["lower"], table["upper"], strict=True)
        table.insert(0, "feature", feature)
        table.insert(1, "bin_order", np.arange(len(table)))
        table.insert(2, "bin_label", [_bin_label(lo, hi, is_integer) for lo, hi in bounds])
        tables.append(table)

    churn_by_value = pd.concat(tables, ignore_index=True)
    churn_by_value["clients"] = churn_by_value["clients"].astype("int64")
    churn_by_value["churned"] = churn_by_value["churned"].astype("int64")
    churn_by_value["churn_rate"] = churn_by_value["churned"] / churn_by_value["clients"]
    return churn_by_value


def _bin_label(lower: float, upper: float, is_integer: bool) -> str:
    """Label the inclusive range of a bin's values, ``"3-5"``, or ``"4"`` for one value."""
    low, high = _format_bound(lower, is_integer), _format_bound(upper, is_integer)
    return low if low == high else f"{low}-{high}"


def _format_bound(value: float, is_integer: bool) -> str:
    if is_integer:
        return str(round(value))
    text = f"{value:.{LABEL_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text
