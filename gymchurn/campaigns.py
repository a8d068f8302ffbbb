"""Did the contacts keep clients? The measured effect of a month's retention campaign.

A month's at-risk list (the high and medium tiers) is split at random into
the listed clients and a held-out control group (:mod:`gymchurn.holdout`).
Marketers contact listed clients during the following month and load those
contacts (:mod:`gymchurn.contacts`); the month's outcomes then tell who left.
For each risk tier, segment and suggested action, and overall:

- ``difference`` = churn rate of the held-out clients - churn rate of the
  contacted clients, with a 95 % confidence interval for the difference of two
  independent proportions (Newcombe's hybrid score interval, from statsmodels);
- ``clients_kept`` = difference * contacted clients;
- ``min_detectable_effect``: the smallest fall of the churn rate that groups
  of these sizes detect with 80 % power in a two-sided 5 % test (Cohen's
  effect size h for two proportions, from the pooled churn rate of both groups);
- ``difference_listed``: held-out minus all listed clients, contacted or not.
  The held-out group is a random part of the same strata, so this comparison
  stays fair when marketers chose whom to call. The contacted-only comparison
  does not: reachable clients may churn less anyway.

A held-out client contacted all the same stays in the control group (counted
in ``held_out_contacted``), so such contacts shrink the measured difference.
"""

import datetime as dt
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
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
]


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
    """The rates, differences, intervals and effects of one row of counts."""
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
    }


def campaign_results(month: dt.date, strata: pd.DataFrame) -> pd.DataFrame:
    """Measure a month's campaign from its counts per stratum.

    Args:
        strata: one row per risk tier, segment and suggested action, with the
            columns of :data:`STRATUM_KEYS` and :data:`COUNT_COLUMNS`.

    Returns:
        One ``overall`` row (the sums of every stratum) and one ``stratum`` row
        per row of ``strata``, with the columns of :data:`RESULT_COLUMNS`.
    """
    overall = {key: None for key in STRATUM_KEYS} | {
        name: int(strata[name].sum()) for name in COUNT_COLUMNS
    }
    rows = [{"level": "overall", **overall}]
    rows += [{"level": "stratum", **row} for row in strata.to_dict("records")]
    results = pd.DataFrame(rows)
    measured = pd.DataFrame([_measured(row) for _, row in results.iterrows()])
    results = pd.concat([results.reset_index(drop=True), measured], axis=1).assign(month=month)
    # The overall row has no segment, which would make the ids floats.
    results["cluster_id"] = results["cluster_id"].astype("Int64")
    return results[RESULT_COLUMNS]


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
    """Why the previous month has no results, or None when it has some."""

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
            "campaigns: %s: %d contacted, %d held out, churn %.3f against %.3f, "
            "difference %.3f (95 %% CI %.3f to %.3f)",
            format_month(measured),
            overall["contacted"],
            overall["held_out"],
            overall["churn_rate_contacted"],
            overall["churn_rate_held_out"],
            overall["difference"],
            overall["ci_lower"],
            overall["ci_upper"],
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
