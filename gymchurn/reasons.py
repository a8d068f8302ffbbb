"""Explain each client's churn score by the factors that push it up.

The method is a perturbation against a low-risk reference client:

1. A factor is one feature, or a group of features that only make sense
   together: both visit frequencies (since the first visit and last month),
   and the contract length with the months left on it. ``gender`` is not a
   factor, because it is not a reason staff can act on or should give.
2. Each factor has a reference value taken from the reference rows (the
   training rows, with ``churned``). A numeric feature gets its median among
   retained clients, and an integer feature the lower median, so that it is a
   value clients really have. A yes/no feature gets the value with the lower
   churn rate. The contract gets the lower median length among retained
   clients and then the lower median months left among retained clients with
   that length, so the months left never exceed the length.
3. For each factor, every client's values of that factor are replaced by the
   reference values, the other features are kept, and the model scores the
   changed rows. The factor's contribution is the client's probability minus
   that new probability: how much lower the score would be if the client
   matched a typical retained client in this respect. A positive contribution
   pushes the risk up.
4. A client's reasons are the factors with a contribution of at least
   ``min_contribution`` (by default 0.01, one percentage point), largest
   first, at most ``top`` of them, each phrased with the client's own values.

Contributions are measured one factor at a time. They do not add up to the
score, and two factors that only raise the risk together may each show little.
Near a probability of 1, replacing one of several strong factors barely lowers
the score, so such a client may get one reason or none.

The model is called once on all clients, then once per factor on the clients
whose values differ from the reference, never once per client. A contribution
is the client's probability minus another probability, so it is at most the
client's probability: clients whose probability is below the smallest
contribution that counts can have no reason, and they are not scored again.
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from gymchurn.schema import CHURNED, FEATURES

Predict = Callable[[pd.DataFrame], np.ndarray]
"""A function that returns the churn probability of each row of a questionnaire frame.

Each row must be scored independently of the others, as scikit-learn models do,
because rows whose values do not change are not scored again.
"""

VISITS = "visits"
CONTRACT = "contract"

# Factor name -> the features it replaces together, in the order reasons are
# tried when two contributions are equal.
FACTORS: dict[str, tuple[str, ...]] = {
    VISITS: ("avg_class_frequency_total", "avg_class_frequency_current_month"),
    CONTRACT: ("contract_period", "month_to_end_contract"),
    "lifetime": ("lifetime",),
    "group_visits": ("group_visits",),
    "near_location": ("near_location",),
    "partner": ("partner",),
    "promo_friends": ("promo_friends",),
    "phone": ("phone",),
    "age": ("age",),
    "avg_additional_charges_total": ("avg_additional_charges_total",),
}

_FLAGS = ["near_location", "partner", "promo_friends", "phone", "group_visits"]
_INTEGER_MEDIANS = ["lifetime", "age"]
_FLOAT_MEDIANS = [
    "avg_additional_charges_total",
    "avg_class_frequency_total",
    "avg_class_frequency_current_month",
]

# Phrases of each yes/no feature: (phrase for 0, phrase for 1).
_FLAG_PHRASES = {
    "group_visits": ("no group classes", "attends group classes"),
    "near_location": ("lives or works far from the club", "lives or works near the club"),
    "partner": ("not a partner-company employee", "partner-company employee"),
    "promo_friends": ("did not join through a friend", "joined through a friend"),
    "phone": ("no phone number on file", "phone number on file"),
}

# Phrase of each factor when one of the client's values for it is missing.
_MISSING_PHRASES = {
    VISITS: "visit frequency not recorded",
    CONTRACT: "contract not recorded",
    "lifetime": "membership length not recorded",
    "group_visits": "group classes not recorded",
    "near_location": "location not recorded",
    "partner": "partner-company status not recorded",
    "promo_friends": "friend referral not recorded",
    "phone": "phone number not recorded",
    "age": "age not recorded",
    "avg_additional_charges_total": "spending on extras not recorded",
}

DEFAULT_MIN_CONTRIBUTION = 0.01

SEPARATOR = "; "
"""Separator between a client's phrases in one text. No phrase contains it."""


@dataclass(frozen=True)
class Reason:
    """One factor that pushes a client's churn risk up."""

    factor: str
    """Key of ``FACTORS``."""
    contribution: float
    """Drop in churn probability when the factor is set to its reference value."""
    text: str
    """Plain-words phrase with the client's own values, such as ``1-month contract``."""


@dataclass(frozen=True)
class Attribution:
    """Contributions of every factor to every client's churn probability."""

    probability: np.ndarray
    """Churn probability of each client, in the row order of the clients."""
    contributions: pd.DataFrame
    """One row a client (the clients' index), one column a factor of ``FACTORS``.

    NaN for the clients whose probability is below ``min_probability``, which
    were not scored again.
    """
    reference: dict[str, float]
    """Reference value of each perturbed feature."""
    min_probability: float = 0.0
    """Probability below which a client's contributions were not measured."""


def reference_values(reference: pd.DataFrame) -> dict[str, float]:
    """Compute the low-risk value of each perturbed feature from labelled rows.

    Args:
        reference: the training rows, with the 13 features and ``churned``.

    Raises:
        ValueError: when a column is missing, a label is missing, no row is a
            retained client, or a feature has no value among retained clients.
    """
    _require_columns(reference, [*FEATURES, CHURNED], "reference")
    if reference[CHURNED].isna().any():
        raise ValueError(
            f"{int(reference[CHURNED].isna().sum())} of the {len(reference)} reference rows "
            f"have no {CHURNED} label; pass only labelled training rows"
        )
    churned = reference[CHURNED].astype("bool").to_numpy()
    retained = reference.loc[~churned]
    if retained.empty:
        raise ValueError(
            f"reference has no retained client among its {len(reference)} rows; "
            "pass training rows that include clients who stayed"
        )

    values: dict[str, float] = {}
    for column in _FLAGS:
        values[column] = _lowest_churn_value(reference, column)
    for column in _INTEGER_MEDIANS:
        values[column] = int(_median(retained[column], method="lower"))
    for column in _FLOAT_MEDIANS:
        values[column] = float(_median(retained[column], method="linear"))

    period = int(_median(retained["contract_period"], method="lower"))
    same_period = retained.loc[retained["contract_period"] == period, "month_to_end_contract"]
    months_left = int(_median(same_period, method="lower"))
    values["contract_period"] = period
    values["month_to_end_contract"] = min(months_left, period)
    return values


def _median(column: pd.Series, *, method: str) -> float:
    known = column.dropna().to_numpy(dtype="float64")
    if known.size == 0:
        raise ValueError(
            f"column {column.name} has no value among retained reference clients; "
            "pass training rows with that feature filled in"
        )
    return float(np.quantile(known, 0.5, method=method))


def _lowest_churn_value(reference: pd.DataFrame, column: str) -> int:
    rates = reference[CHURNED].astype("float64").groupby(reference[column].astype("float64")).mean()
    if rates.empty:
        raise ValueError(
            f"column {column} has no value in the reference rows; "
            "pass training rows with that feature filled in"
        )
    # On equal rates, idxmin keeps the first value, 0.
    return int(rates.idxmin())


def attribute(predict: Predict, clients: pd.DataFrame, reference: pd.DataFrame) -> Attribution:
    """Score the clients and measure each factor's contribution by perturbation.

    Args:
        predict: returns the churn probability of each row of a frame that has
            the columns of ``clients``.
        clients: one row a client, with at least the 13 features.
        reference: the training rows, with the 13 features and ``churned``.

    Raises:
        ValueError: when a column is missing, or ``predict`` does not return one
            probability in [0, 1] per row.
    """
    return attribute_against(predict, clients, reference_values(reference))


def attribute_against(
    predict: Predict,
    clients: pd.DataFrame,
    values: Mapping[str, float],
    *,
    min_probability: float = 0.0,
) -> Attribution:
    """Score the clients and measure each factor's contribution against given reference values.

    This is :func:`attribute` with the reference values computed once, by
    :func:`reference_values`, so that chunks of clients can be attributed apart
    and give the rows that one call on all of them gives.

    Args:
        min_probability: clients whose probability is below it are not scored
            again and get NaN contributions. Their contributions could not
            reach it, so :func:`top_reasons` with a ``min_contribution`` of at
            least this value selects the same reasons as without it.

    Raises:
        ValueError: when a column is missing, ``min_probability`` is negative,
            or ``predict`` does not return one probability in [0, 1] per row.
    """
    return attribute_rescored(
        _FrameRescorer(predict, clients), clients, values, min_probability=min_probability
    )


class Rescorer(Protocol):
    """Scores a fixed frame of clients, and rows of it with some features set to constants.

    Each row must be scored independently of the others, as scikit-learn
    models do. :mod:`gymchurn.rescoring` has the job's rescorers.
    """

    def score(self) -> np.ndarray:
        """Return the churn probability of each client, in row order."""

    def score_replaced(self, rows: np.ndarray, values: Mapping[str, float]) -> np.ndarray:
        """Return the probability of the clients at positions ``rows`` with ``values`` set."""


def attribute_rescored(
    rescorer: Rescorer,
    clients: pd.DataFrame,
    values: Mapping[str, float],
    *,
    min_probability: float = 0.0,
) -> Attribution:
    """Do what :func:`attribute_against` does, with a rescorer of ``clients`` in place of predict.

    Raises:
        ValueError: as :func:`attribute_against`.
    """
    _require_columns(clients, FEATURES, "clients")
    if min_probability < 0:
        raise ValueError(f"min_probability must be 0 or more; got {min_probability}")
    values = dict(values)
    if clients.empty:
        empty = pd.DataFrame(0.0, index=clients.index, columns=list(FACTORS))
        return Attribution(np.empty(0, dtype="float64"), empty, values, min_probability)

    probability = _checked(rescorer.score(), len(clients))
    skipped = probability < min_probability
    contributions = {}
    for factor, columns in FACTORS.items():
        # A row that already has the reference values would score the same, so
        # its contribution is 0 and only the other rows are scored again.
        changed = np.zeros(len(clients), dtype="bool")
        for column in columns:
            own = clients[column].to_numpy(dtype="float64", na_value=np.nan)
            changed |= own != values[column]
        rows = np.flatnonzero(changed & ~skipped)
        contribution = np.where(skipped, np.nan, 0.0)
        if rows.size:
            replaced = rescorer.score_replaced(rows, {column: values[column] for column in columns})
            contribution[rows] = probability[rows] - _checked(replaced, rows.size)
        contributions[factor] = contribution
    frame = pd.DataFrame(contributions, index=clients.index)
    return Attribution(probability, frame, values, min_probability)


class _FrameRescorer:
    """Rescorer that calls ``predict`` on frames: the clients, and the replaced rows."""

    def __init__(self, predict: Predict, clients: pd.DataFrame):
        self._predict = predict
        self._clients = clients

    def score(self) -> np.ndarray:
        return self._predict(self._clients)

    def score_replaced(self, rows: np.ndarray, values: Mapping[str, float]) -> np.ndarray:
        subset = self._clients.iloc[rows]
        replaced = {
            column: _constant_like(subset[column], value) for column, value in values.items()
        }
        return self._predict(subset.assign(**replaced))


def _constant_like(column: pd.Series, value: float) -> pd.Series:
    # Keep the client's dtype unless it would truncate the value, for example
    # a median of 2.04 visits in an integer column of a hand-made frame.
    dtype = column.dtype
    if pd.api.types.is_integer_dtype(dtype) and not float(value).is_integer():
        dtype = np.dtype("float64")
    return pd.Series(value, index=column.index, dtype=dtype)


def _checked(returned, n_rows: int) -> np.ndarray:
    probability = np.asarray(returned, dtype="float64")
    if probability.shape != (n_rows,):
        raise ValueError(
            f"predict returned an array of shape {probability.shape} for {n_rows} rows; "
            "it must return one churn probability per row"
        )
    if not np.all((probability >= 0.0) & (probability <= 1.0)):
        raise ValueError(
            "predict returned values outside [0, 1] or NaN; it must return churn probabilities"
        )
    return probability


def top_reasons(
    attribution: Attribution,
    clients: pd.DataFrame,
    *,
    top: int = 3,
    min_contribution: float = DEFAULT_MIN_CONTRIBUTION,
) -> list[list[Reason]]:
    """Select and phrase each client's largest positive contributions.

    Args:
        attribution: the result of ``attribute`` for the same ``clients``.
        clients: the rows that were attributed, in the same order.
        top: maximum number of reasons per client.
        min_contribution: smallest contribution, in probability, that counts
            as a reason. Contributions of 0 or less never count.

    Returns:
        One list per client, in the row order of ``clients``, largest
        contribution first. A client without a qualifying factor gets an empty list.

    Raises:
        ValueError: when ``top`` or ``min_contribution`` is negative, the
            attribution has another number of rows than ``clients``, or
            ``min_contribution`` is below the attribution's ``min_probability``.
    """
    factors = list(attribution.contributions.columns)
    rows, factor_indexes, chosen, texts = _select(attribution, clients, top, min_contribution)
    reasons: list[list[Reason]] = [[] for _ in range(len(clients))]
    for row, index, contribution, text in zip(
        rows.tolist(), factor_indexes.tolist(), chosen.tolist(), texts.tolist(), strict=True
    ):
        reasons[row].append(Reason(factors[index], contribution, text))
    return reasons


def top_phrases(
    attribution: Attribution,
    clients: pd.DataFrame,
    *,
    top: int = 3,
    min_contribution: float = DEFAULT_MIN_CONTRIBUTION,
) -> list[list[str]]:
    """Return the phrases of :func:`top_reasons`, without building a ``Reason`` per reason.

    The arguments, the order and the errors are those of :func:`top_reasons`.
    """
    rows, _, _, texts = _select(attribution, clients, top, min_contribution)
    phrases: list[list[str]] = [[] for _ in range(len(clients))]
    for row, text in zip(rows.tolist(), texts.tolist(), strict=True):
        phrases[row].append(text)
    return phrases


def phrase_sets(
    attribution: Attribution,
    clients: pd.DataFrame,
    *,
    top: int = 3,
    min_contribution: float = DEFAULT_MIN_CONTRIBUTION,
) -> pd.Categorical:
    """Return each client's phrases of :func:`top_phrases` as one text, in a categorical.

    A client's phrases are joined by :data:`SEPARATOR`, largest contribution
    first; a client without a reason gets ``""``. Many clients share a set of
    reasons, so each distinct set is held and joined once, and no list is
    built per client. :func:`split_phrases` gives the list back.

    The arguments, the order and the errors are those of :func:`top_reasons`.
    """
    rows, _, _, texts = _select(attribution, clients, top, min_contribution)
    n_clients = len(clients)
    if rows.size == 0:
        return pd.Categorical.from_codes(np.zeros(n_clients, dtype="int8"), categories=[""])
    phrase_codes, phrases = pd.factorize(texts)
    # The reasons come by client row, largest first, so a reason's rank is its
    # position after the first reason of its row.
    firsts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    ranks = np.arange(rows.size) - np.repeat(firsts, np.diff(np.r_[firsts, rows.size]))
    chosen = np.full((n_clients, max(top, 1)), -1, dtype="int64")
    chosen[rows, ranks] = phrase_codes
    # Number the distinct rows of chosen, one column at a time so that the
    # key stays below the number of clients.
    codes = np.zeros(n_clients, dtype="int64")
    for rank in range(chosen.shape[1]):
        codes = pd.factorize(codes * (len(phrases) + 1) + chosen[:, rank] + 1)[0]
    example = np.empty(codes.max() + 1, dtype="int64")
    example[codes] = np.arange(n_clients)
    words = np.asarray(phrases, dtype="object")
    categories = [SEPARATOR.join(words[row[row >= 0]]) for row in chosen[example]]
    return pd.Categorical.from_codes(codes, categories=categories)


def split_phrases(text: str) -> list[str]:
    """Return the phrases of one client's text from :func:`phrase_sets`, ``[]`` for ``""``."""
    return text.split(SEPARATOR) if text else []


def _select(
    attribution: Attribution, clients: pd.DataFrame, top: int, min_contribution: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Find each client's top qualifying factors.

    Returns:
        Four arrays with one entry a reason, by client row and then largest
        contribution first: the client's row, the factor's column in the
        contributions, the contribution and the phrase.
    """
    if top < 0:
        raise ValueError(f"top must be 0 or more; got {top}")
    if min_contribution < 0:
        raise ValueError(f"min_contribution must be 0 or more; got {min_contribution}")
    if len(attribution.contributions) != len(clients):
        raise ValueError(
            f"the attribution has {len(attribution.contributions)} rows but clients has "
            f"{len(clients)}; attribute the same clients first"
        )
    if min_contribution < attribution.min_probability:
        raise ValueError(
            f"min_contribution {min_contribution} is below the attribution's min_probability "
            f"{attribution.min_probability}, so some reasons were not measured; attribute "
            "with a min_probability of at most min_contribution"
        )

    factors = list(attribution.contributions.columns)
    matrix = attribution.contributions.to_numpy(dtype="float64")
    # Only clients with a contribution that counts are sorted. NaN, a
    # contribution that was not measured, never counts.
    counts = (matrix > 0.0) & (matrix >= min_contribution)
    candidates = np.flatnonzero(counts.any(axis=1))
    # A stable sort on the negated values keeps the FACTORS order on ties.
    order = np.argsort(-matrix[candidates], axis=1, kind="stable")[:, :top]
    chosen = np.take_along_axis(matrix[candidates], order, axis=1)
    keep = (chosen > 0.0) & (chosen >= min_contribution)

    positions, ranks = np.nonzero(keep)
    rows = candidates[positions]
    factor_indexes = order[positions, ranks]
    texts = np.empty(len(rows), dtype="object")
    for index, factor in enumerate(factors):
        selected = np.flatnonzero(factor_indexes == index)
        if selected.size:
            texts[selected] = _describe_rows(factor, clients, rows[selected])
    return rows, factor_indexes, chosen[positions, ranks], texts


def explain(
    predict: Predict,
    clients: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    top: int = 3,
    min_contribution: float = DEFAULT_MIN_CONTRIBUTION,
) -> list[list[str]]:
    """Return, for each client, the phrases of the top factors that push its risk up.

    The arguments are those of ``attribute`` and ``top_reasons``. The lists
    follow the row order of ``clients``, and a client without a qualifying
    factor gets an empty list.
    """
    attribution = attribute_against(
        predict, clients, reference_values(reference), min_probability=min_contribution
    )
    return top_phrases(attribution, clients, top=top, min_contribution=min_contribution)


def _describe_rows(factor: str, clients: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    # Phrase each distinct combination of values, as the phrase shows them,
    # once: phrasing every client of a chunk one by one is slow.
    columns = FACTORS[factor]
    own = np.column_stack(
        [clients[column].to_numpy(dtype="float64", na_value=np.nan)[rows] for column in columns]
    )
    shown = _as_phrased(factor, own)
    codes = np.zeros(len(rows), dtype="int64")
    for index in range(shown.shape[1]):
        column_codes, distinct = pd.factorize(shown[:, index], use_na_sentinel=False)
        codes = pd.factorize(codes * len(distinct) + column_codes)[0]
    example = np.empty(codes.max(initial=-1) + 1, dtype="int64")
    example[codes] = np.arange(len(rows))
    phrases = [describe(factor, dict(zip(columns, own[row], strict=True))) for row in example]
    return np.array(phrases, dtype="object")[codes]


def _as_phrased(factor: str, values: np.ndarray) -> np.ndarray:
    """Round ``values`` as the factor's phrase shows them, so that equal rows read the same."""
    if factor != VISITS:
        # Whole numbers: numpy's rint rounds halves to even, as Python's format does.
        return np.rint(values)
    tenths = values * 10
    # A value within rounding error of a half tenth keeps its own phrase,
    # because the product above may have rounded it across the half.
    halfway = np.abs(tenths - np.floor(tenths) - 0.5) < 1e-6
    return np.where(halfway, values, np.rint(tenths) / 10)


def format_count(count: float, unit: str) -> str:
    """Format a whole count with its unit, singular for 1: ``1 month``, ``3 months``."""
    whole = round(count)
    return f"{whole} {unit}" if whole == 1 else f"{whole} {unit}s"


def describe(factor: str, values: Mapping[str, float]) -> str:
    """Phrase a factor with one client's values, which ``values`` maps by feature name.

    Raises:
        KeyError: when ``factor`` is not in ``FACTORS`` or a feature is missing.
    """
    own = [float(values[column]) for column in FACTORS[factor]]
    if any(math.isnan(value) for value in own):
        return _MISSING_PHRASES[factor]
    if factor == VISITS:
        return _describe_visits(*own)
    if factor == CONTRACT:
        return _describe_contract(*own)
    if factor in _FLAG_PHRASES:
        return _FLAG_PHRASES[factor][int(round(own[0]) == 1)]
    (value,) = own
    if factor == "lifetime":
        if round(value) < 1:
            return "member for less than a month"
        return f"member for {format_count(value, 'month')}"
    if factor == "age":
        return f"age {value:.0f}"
    return f"spends {value:,.0f} on extras"


def _describe_visits(since_first_visit: float, last_month: float) -> str:
    before = f"{since_first_visit:.1f}"
    now = f"{last_month:.1f}"
    if float(now) < float(before):
        return f"visits fell from {before} to {now} a week"
    # Not a drop: the factor pushes the risk up because the rate is low.
    return f"only {now} visits a week last month"


def _describe_contract(period: float, months_left: float) -> str:
    length = f"{round(period)}-month contract"
    if round(months_left) < round(period):
        return f"{length} ends in {format_count(months_left, 'month')}"
    return length


def _require_columns(frame: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing the columns {missing}; it needs {columns}")
