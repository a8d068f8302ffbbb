"""Did the contacts keep clients? The measured effect of a month's retention campaign.

A month's at-risk list (the high and medium tiers) is split at random into
the listed clients and a held-out control group (:mod:`gymchurn.holdout`),
a share of each stratum of risk tier and segment. Marketers contact listed
clients during the following month, in practice only the high tier that
``churn.at_risk`` and the CSV export contain. They load those contacts
(:mod:`gymchurn.contacts`), and the month's outcomes then show who left.

Each stratum (risk tier, segment and suggested action) gets a row with:

- ``difference`` = churn rate of the held-out clients - churn rate of the
  contacted clients, with a 95 % confidence interval for the difference of two
  independent proportions (Newcombe's hybrid score interval, from statsmodels);
- ``min_detectable_effect``: the smallest fall of the churn rate that groups
  of these sizes detect with 80 % power in a two-sided 5 % test (Cohen's
  effect size h for two proportions, from the pooled churn rate of both groups);
- ``difference_listed``: held-out minus all listed clients, contacted or not.

The ``overall`` row and one ``tier`` row per risk tier compare like with
like. Pooling every contacted client against every held-out client would
not: the medium tier is held out but never called, and its lower churn would
pull the control rate down. Within a tier the comparison is fair, because the
holdout takes the same share of every segment of the tier
(:func:`gymchurn.holdout.select_holdout`), so the tier's held-out clients are a
random sample of its listed clients across segments. So these rows stratify
by risk tier only:

- a ``tier`` row compares the tier's held-out clients with its contacted
  clients like a stratum row: the difference of the two churn rates with
  Newcombe's interval;
- the ``overall`` row combines the tiers with both contacted and held-out
  clients: ``difference`` = sum over those tiers of w_t * d_t, where d_t is
  the tier's difference and w_t its share of their contacted clients, the
  effect on the contacted clients. Its variance is sum w_t**2 * V_t, with V_t
  the tier's variance read from its Newcombe interval, ((upper - lower) /
  (2 * 1.96))**2, which stays positive for small groups and groups whose
  clients all left, unlike the Wald variance. The 95 % interval is
  difference +- 1.96 * sqrt of that sum. statsmodels has no routine for a
  stratified difference of rates (its StratifiedTable pools odds ratios and
  risk ratios only), so the sum is written out here;
- ``clients_kept`` = difference * the contacted clients of those tiers;
- ``min_detectable_effect`` = (z_0.975 + z_0.8) times the standard error of
  the same sum under no effect, with each tier's pooled churn rate;
- ``difference_listed`` is the same sum for held-out minus listed clients,
  over the same tiers and weighted by their listed clients.

Stratifying by segment and suggested action as well would add nothing to
the validity, and those strata often hold 1 to 5 held-out clients, too few
for a normal approximation of their sum. Stratum rows stay as descriptive
rows with their own Newcombe interval.

A tier nobody contacted (the medium tier, as a rule) is reported but left
out of the overall estimate, and so is a tier with no held-out client;
``contacted_measured`` and ``held_out_measured`` count the clients the
estimate used.

NOTE: the contacted clients are compared with a random sample of the whole
tier. When marketers reach only part of the tier, and the reached clients
churn less anyway, ``difference`` overstates the effect; ``difference_listed``
does not depend on whom they reached.

A held-out client contacted all the same stays in the control group (counted
in ``held_out_contacted``), so such contacts shrink the measured difference.
"""

import datetime as dt
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm
from sqlalchemy.engine import Connection, Engine
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import confint_proportions_2indep

from gymchurn import db
from gymchurn.schema import format_month
from gymchurn.simulation.simulator import add_months

logger = logging.getLogger(__name__)

ALPHA = 0.05
POWER = 0.8
STRATUM_KEYS = ["risk_tier", "cluster_id", "segment", "suggested_action"]
COUNT_COLUMNS = [
    "listed",
    "contacted",
    "held_out",
    "held_out_contacted",
    "churned_listed",
    "churned_contacted",
    "churned_held_out",
]
RESULT_COLUMNS = [
    "month",
    "level",
    *STRATUM_KEYS,
    *COUNT_COLUMNS,
    "churn_rate_listed",
    "churn_rate_contacted",
    "churn_rate_held_out",
    "difference",
    "ci_lower",
    "ci_upper",
    "clients_kept",
    "min_detectable_effect",
    "difference_listed",
    "ci_lower_listed",
    "ci_upper_listed",
    "strata_measured",
    "contacted_measured",
    "held_out_measured",
    "churn_rate_held_out_weighted",
]
LEVELS = ("overall", "tier", "stratum")
# Half the width of a 95 % interval above which a row is too small to read:
# an interval of +-20 points cannot tell a strong effect from none.
READABLE_HALF_WIDTH = 0.20


def _rate(churned: int, clients: int) -> float:
    return churned / clients if clients else math.nan


def difference_interval(
    churned_a: int, clients_a: int, churned_b: int, clients_b: int
) -> tuple[float, float]:
    """Return the 95 % confidence interval of rate a - rate b, or NaNs when a group is empty."""
    if clients_a == 0 or clients_b == 0:
        return math.nan, math.nan
    lower, upper = confint_proportions_2indep(
        churned_a, clients_a, churned_b, clients_b, method="newcomb", compare="diff", alpha=ALPHA
    )
    return float(lower), float(upper)


def min_detectable_effect(contacted: int, held_out: int, churn_rate: float) -> float:
    """Return the smallest fall of ``churn_rate`` that groups of these sizes detect.

    The power calculation works on Cohen's effect size h = 2 asin(sqrt(p1)) -
    2 asin(sqrt(p2)) at the 5 % level with 80 % power, and the result is turned
    back into a difference of rates below ``churn_rate``.

    Returns:
        A fall of the churn rate, 0 to 1; NaN when a group is empty, the rate is
        0 or 1, or not even a fall to zero churn would be detected.
    """
    if contacted == 0 or held_out == 0 or not 0 < churn_rate < 1:
        return math.nan
    effect_size = NormalIndPower().solve_power(
        effect_size=None, nobs1=contacted, alpha=ALPHA, power=POWER, ratio=held_out / contacted
    )
    angle = math.asin(math.sqrt(churn_rate)) - effect_size / 2
    if angle <= 0:
        return math.nan
    return churn_rate - math.sin(angle) ** 2


def _measured(counts: pd.Series) -> dict:
    """Compute the rates, differences, intervals and effects of one stratum's counts."""
    listed, contacted, held_out = counts["listed"], counts["contacted"], counts["held_out"]
    churned_listed = counts["churned_listed"]
    churned_contacted = counts["churned_contacted"]
    churned_held_out = counts["churned_held_out"]
    difference = _rate(churned_held_out, held_out) - _rate(churned_contacted, contacted)
    lower, upper = difference_interval(churned_held_out, held_out, churned_contacted, contacted)
    lower_listed, upper_listed = difference_interval(
        churned_held_out, held_out, churned_listed, listed
    )
    pooled = _rate(churned_contacted + churned_held_out, contacted + held_out)
    measured = contacted > 0 and held_out > 0
    return {
        "churn_rate_listed": _rate(churned_listed, listed),
        "churn_rate_contacted": _rate(churned_contacted, contacted),
        "churn_rate_held_out": _rate(churned_held_out, held_out),
        "difference": difference,
        "ci_lower": lower,
        "ci_upper": upper,
        "clients_kept": difference * contacted,
        "min_detectable_effect": min_detectable_effect(contacted, held_out, pooled),
        "difference_listed": _rate(churned_held_out, held_out) - _rate(churned_listed, listed),
        "ci_lower_listed": lower_listed,
        "ci_upper_listed": upper_listed,
        "strata_measured": int(measured),
        "contacted_measured": contacted if measured else 0,
        "held_out_measured": held_out if measured else 0,
        "churn_rate_held_out_weighted": _rate(churned_held_out, held_out) if measured else math.nan,
    }


@dataclass(frozen=True)
class StratifiedDifference:
    """A weighted sum of independent differences of churn rates, with its interval."""

    difference: float
    ci_lower: float
    ci_upper: float
    standard_error: float
    null_standard_error: float
    """Standard error under no effect, from each group's pooled churn rate."""


def stratified_difference(
    churned_a: np.ndarray,
    clients_a: np.ndarray,
    churned_b: np.ndarray,
    clients_b: np.ndarray,
    weights: np.ndarray,
) -> StratifiedDifference:
    """Combine the risk tiers' differences rate a - rate b, weighted by ``weights``.

    Every tier must have clients in both groups and the weights a positive
    sum. The estimate is sum w_t (a_t - b_t) with w_t = weights_t / sum
    weights. Its variance sums w_t**2 times each tier's variance, read from
    the half-width of the tier's Newcombe interval as ((upper - lower) /
    (2 z_0.975))**2, and the 95 % interval is the estimate +- z_0.975
    standard errors.

    Returns:
        The estimate and interval; NaNs when no tier is given.
    """
    clients_a = np.asarray(clients_a, dtype="float64")
    clients_b = np.asarray(clients_b, dtype="float64")
    weights = np.asarray(weights, dtype="float64")
    if len(weights) == 0 or weights.sum() <= 0:
        return StratifiedDifference(*[math.nan] * 5)
    share = weights / weights.sum()
    churned_a = np.asarray(churned_a, dtype="float64")
    churned_b = np.asarray(churned_b, dtype="float64")
    rate_a, rate_b = churned_a / clients_a, churned_b / clients_b
    z = norm.ppf(1 - ALPHA / 2)
    # Newcombe's interval rests on Wilson score intervals, whose width stays positive for a
    # group of a few clients who all left (or all stayed), where the Wald variance is 0.
    intervals = np.array(
        [
            difference_interval(int(a), int(n_a), int(b), int(n_b))
            for a, n_a, b, n_b in zip(churned_a, clients_a, churned_b, clients_b, strict=True)
        ]
    )
    variance = ((intervals[:, 1] - intervals[:, 0]) / (2 * z)) ** 2
    pooled = (churned_a + churned_b) / (clients_a + clients_b)
    null_variance = pooled * (1 - pooled) * (1 / clients_a + 1 / clients_b)
    difference = float(np.sum(share * (rate_a - rate_b)))
    error = math.sqrt(float(np.sum(share**2 * variance)))
    half = z * error
    return StratifiedDifference(
        difference,
        difference - half,
        difference + half,
        error,
        math.sqrt(float(np.sum(share**2 * null_variance))),
    )


def _stratified_detectable(estimate: StratifiedDifference, control_rate: float) -> float:
    """Return the smallest fall of the churn rate a stratified estimate detects, or NaN.

    NaN when the standard error is 0 or the fall would exceed ``control_rate``,
    the held-out churn rate weighted like the contacted clients.
    """
    if not estimate.null_standard_error > 0:
        return math.nan
    fall = (norm.ppf(1 - ALPHA / 2) + norm.ppf(POWER)) * estimate.null_standard_error
    return fall if fall < control_rate else math.nan


def _tier_counts(strata: pd.DataFrame) -> pd.DataFrame:
    """Sum the strata's counts per risk tier."""
    return strata.groupby("risk_tier", sort=True)[COUNT_COLUMNS].sum().astype("int64")


def _tier_row(counts: pd.Series) -> dict:
    """Measure one risk tier from its summed counts, like a stratum; see the module docstring."""
    return {name: int(counts[name]) for name in COUNT_COLUMNS} | _measured(counts)


def _overall_row(strata: pd.DataFrame) -> dict:
    """Sum the counts of all strata and combine the measured tiers' differences."""
    counts = {name: int(strata[name].sum()) for name in COUNT_COLUMNS}
    tiers = _tier_counts(strata)
    used = tiers[(tiers["contacted"] > 0) & (tiers["held_out"] > 0)]
    contacted_used = int(used["contacted"].sum())
    effect = stratified_difference(
        used["churned_held_out"],
        used["held_out"],
        used["churned_contacted"],
        used["contacted"],
        used["contacted"],
    )
    # Contacted clients are listed ones, so every measured tier has listed clients.
    listed_effect = stratified_difference(
        used["churned_held_out"],
        used["held_out"],
        used["churned_listed"],
        used["listed"],
        used["listed"],
    )
    control_rate = (
        float(
            np.sum(used["contacted"] / contacted_used * used["churned_held_out"] / used["held_out"])
        )
        if contacted_used
        else math.nan
    )
    return counts | {
        "churn_rate_listed": _rate(counts["churned_listed"], counts["listed"]),
        "churn_rate_contacted": _rate(counts["churned_contacted"], counts["contacted"]),
        "churn_rate_held_out": _rate(counts["churned_held_out"], counts["held_out"]),
        "difference": effect.difference,
        "ci_lower": effect.ci_lower,
        "ci_upper": effect.ci_upper,
        "clients_kept": effect.difference * contacted_used,
        "min_detectable_effect": _stratified_detectable(effect, control_rate),
        "difference_listed": listed_effect.difference,
        "ci_lower_listed": listed_effect.ci_lower,
        "ci_upper_listed": listed_effect.ci_upper,
        "strata_measured": len(used),
        "contacted_measured": contacted_used,
        "held_out_measured": int(used["held_out"].sum()),
        "churn_rate_held_out_weighted": control_rate,
    }


def campaign_results(month: dt.date, strata: pd.DataFrame) -> pd.DataFrame:
    """Measure a month's campaign from its counts per stratum.

    Args:
        strata: one row per risk tier, segment and suggested action, with the
            columns of :data:`STRATUM_KEYS` and :data:`COUNT_COLUMNS`.

    Returns:
        One ``overall`` row combining the risk tiers, one ``tier`` row per risk
        tier of ``strata`` (see the module docstring), then one ``stratum`` row
        per row of ``strata``; the columns of :data:`RESULT_COLUMNS`.
    """
    blank = {key: None for key in STRATUM_KEYS}
    rows = [{"level": "overall", **blank, **_overall_row(strata)}]
    for tier, counts in _tier_counts(strata).iterrows():
        rows.append({"level": "tier", **blank, "risk_tier": tier, **_tier_row(counts)})
    rows += [
        {"level": "stratum", **row, **_measured(pd.Series(row))}
        for row in strata.to_dict("records")
    ]
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS[1:]).assign(month=month)
    # The overall and tier rows have no segment, which would make the ids floats.
    results["cluster_id"] = results["cluster_id"].astype("Int64")
    return results[RESULT_COLUMNS]


def pool_months(overall: pd.DataFrame) -> tuple[float, float, float]:
    """Combine several months' ``overall`` rows into one effect with its 95 % interval.

    The months' differences are weighted by their ``contacted_measured``
    clients. Months are independent draws, so their variances, read from
    each interval's half-width, add with the squared weights.

    Returns:
        The pooled difference and the lower and upper ends of its interval;
        NaNs when no month has measured clients.
    """
    measured = overall[overall["contacted_measured"] > 0]
    if measured.empty:
        return math.nan, math.nan, math.nan
    weights = measured["contacted_measured"] / measured["contacted_measured"].sum()
    z = norm.ppf(1 - ALPHA / 2)
    errors = (measured["ci_upper"] - measured["ci_lower"]) / (2 * z)
    difference = float((weights * measured["difference"]).sum())
    half = z * math.sqrt(float((weights**2 * errors**2).sum()))
    return difference, difference - half, difference + half


def too_small_to_read(row) -> bool:
    """Tell whether a result row has too few clients to read its difference.

    True when its interval is missing or wider than +-:data:`READABLE_HALF_WIDTH`,
    or when no fall of the churn rate could be detected.
    """
    lower, upper = row["ci_lower"], row["ci_upper"]
    if pd.isna(lower) or pd.isna(upper) or pd.isna(row["min_detectable_effect"]):
        return True
    return (upper - lower) / 2 > READABLE_HALF_WIDTH


def rows_for_reading(results: pd.DataFrame) -> pd.DataFrame:
    """Return the overall row, the tier rows, then the strata with contacted clients.

    Strata nobody contacted are left out: they have no effect to show, and the
    overall and tier rows count their clients.
    """
    order = {level: position for position, level in enumerate(LEVELS)}
    shown = results[(results["level"] != "stratum") | (results["contacted"] > 0)]
    return shown.sort_values(
        "level", key=lambda levels: levels.map(order), kind="stable"
    ).reset_index(drop=True)


def read_strata(conn: Connection, month: dt.date) -> pd.DataFrame:
    """Count the listed, contacted and held-out clients of ``month`` with known outcomes."""
    result = db.execute(conn, "campaign_strata", {"month": month})
    strata = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    return strata.astype({name: "int64" for name in COUNT_COLUMNS})


def measure_month(conn: Connection, month: dt.date) -> pd.DataFrame:
    """Measure one month's campaign from the database; see :func:`campaign_results`."""
    return campaign_results(month, read_strata(conn, month))


@dataclass(frozen=True)
class Measurement:
    """The campaign results a run computed, and why its previous month has none."""

    month: dt.date
    """The run's month; its report describes the month before it."""
    results: pd.DataFrame
    """Rows of :func:`campaign_results` for every measured month."""
    months: list = field(default_factory=list)
    """The months measured, whose rows :func:`store_results` replaces."""
    previous_note: str | None = None
    """Reason the previous month has no results, or None when it has some."""

    @property
    def previous_month(self) -> dt.date:
        return add_months(self.month, -1)

    def previous_results(self) -> pd.DataFrame:
        return self.results[self.results["month"] == self.previous_month]


def missing_reason(conn: Connection, month: dt.date) -> str:
    """Say why ``month`` cannot be measured: no list, no contacts, or no outcomes yet."""
    label = format_month(month)
    state = db.execute(conn, "campaign_month_state", {"month": month}).one()
    if not state.scores:
        return f"No at-risk list was published for {label}, so there is nothing to measure."
    if not state.contacts:
        return (
            f"No contacts were loaded for the at-risk list of {label}. Load the calls and "
            f"messages made with: gymchurn contacts load FILE --month {label}"
        )
    return (
        f"The outcomes of {label} (who left in the month after it) are not loaded yet; "
        f"load them with: gymchurn load-csv FILE --month {label}, a file with a Churn column."
    )


def measure_before(engine: Engine, month: dt.date) -> Measurement:
    """Measure every month before ``month`` with published scores, contacts and outcomes.

    A run recomputes them all, so a late contact or outcome file changes the
    results at the next run.
    """
    with engine.connect() as conn:
        months = [row.month for row in db.execute(conn, "campaign_months", {"before": month})]
        frames = [measure_month(conn, measured) for measured in months]
        previous = add_months(month, -1)
        note = None if previous in months else missing_reason(conn, previous)
    results = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RESULT_COLUMNS)
    )
    for measured in months:
        overall = results[(results["month"] == measured) & (results["level"] == "overall")].iloc[0]
        logger.info(
            "campaigns: %s: %d contacted, %d held out; over the %d risk tiers with both, "
            "churn %.3f of the contacted against %.3f of held-out clients weighted like them, "
            "difference %.3f (95 %% CI %.3f to %.3f); %d held-out clients of tiers nobody "
            "contacted left out",
            format_month(measured),
            overall["contacted"],
            overall["held_out"],
            overall["strata_measured"],
            overall["churn_rate_held_out_weighted"] - overall["difference"],
            overall["churn_rate_held_out_weighted"],
            overall["difference"],
            overall["ci_lower"],
            overall["ci_upper"],
            overall["held_out"] - overall["held_out_measured"],
        )
    return Measurement(month, results, months, note)


def store_results(engine: Engine, results: pd.DataFrame, months: list) -> int:
    """Replace the rows of ``months`` in ``churn.campaign_results`` in one transaction.

    Returns:
        The number of rows written.
    """
    rows = results.replace({np.nan: None})
    with engine.begin() as conn:
        for month in months:
            db.execute(conn, "delete_month_campaign_results", {"month": month})
        written = db.copy_rows(
            conn, "churn.campaign_results", RESULT_COLUMNS, db.frame_rows(rows, RESULT_COLUMNS)
        )
    logger.info(
        "campaigns: wrote %d rows of %d month(s) to churn.campaign_results", written, len(months)
    )
    return written


def refresh_month(engine: Engine, month: dt.date) -> pd.DataFrame | None:
    """Recompute and store one month's results when its contacts and outcomes are loaded.

    Returns:
        The month's rows, or None when the month cannot be measured yet.
    """
    with engine.connect() as conn:
        state = db.execute(conn, "campaign_month_state", {"month": month}).one()
        if not (state.scores and state.contacts and state.outcomes):
            return None
        results = measure_month(conn, month)
    store_results(engine, results, [month])
    return results
