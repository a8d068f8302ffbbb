"""Reads of the months before the scored one: batch-rule profiles and training candidates.

A run never keeps the earlier months' questionnaires in memory. The batch rules
get one ``MonthProfile`` a month, computed by SQL aggregates, and training gets a
bounded sample of the labelled rows, drawn in SQL. The sample takes the rows with
the lowest sample keys, a hash of the client id seeded with the run's seed and
the month (see ``sql/queries/labelled_sample_of_months.sql``). So the same stored
rows give the same sample whatever their physical order.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd
from sqlalchemy.engine import Connection

from gymchurn import db
from gymchurn.batch_rules import CATEGORY_COLUMNS, MonthProfile
from gymchurn.schema import CLIENT_ID, FEATURES, MONTH

SAMPLE_KEY = "sample_key"

# month_profiles_before.sql records the category values from 0 to this one as
# the bits of a bigint.
_MAX_BIT_VALUE = 62

# The largest max_invalid_share that candidate_rows makes room for: at most twice
# max_training_rows are drawn.
_MAX_SLACK_SHARE = 0.5


def read_month_profiles(conn: Connection, month: dt.date) -> tuple[MonthProfile, ...]:
    """Profile every month before ``month`` with SQL aggregates, in month order."""
    rows = db.execute(conn, "month_profiles_before", {"month": month}).mappings().all()
    unusual: list[tuple] = []
    if any(_has_unusual_values(row) for row in rows):
        unusual = db.execute(conn, "month_unusual_values_before", {"month": month}).all()
    return profiles_from_aggregates(rows, unusual)


def _has_unusual_values(row: Mapping) -> bool:
    return any(
        row[f"{column}_min"] is not None
        and (row[f"{column}_min"] < 0 or row[f"{column}_max"] > _MAX_BIT_VALUE)
        for column in CATEGORY_COLUMNS
    )


def profiles_from_aggregates(
    rows: Iterable[Mapping], unusual: Iterable[Sequence]
) -> tuple[MonthProfile, ...]:
    """Build month profiles from the rows of the profile queries.

    Args:
        rows: The rows of ``month_profiles_before.sql``, one a month.
        unusual: (month, column, value) rows of ``month_unusual_values_before.sql``:
            the category values outside the range the bits record.
    """
    extra: dict[tuple, set[float]] = {}
    for month, column, value in unusual:
        extra.setdefault((month, column), set()).add(float(value))
    profiles = []
    for row in rows:
        month = row[MONTH]
        values = {
            column: frozenset(
                _bit_values(row[f"{column}_bits"]) | extra.get((month, column), set())
            )
            for column in CATEGORY_COLUMNS
        }
        profiles.append(
            MonthProfile(
                month,
                int(row["n_rows"]),
                {column: int(row[f"{column}_nulls"]) for column in FEATURES},
                values,
                n_labelled=int(row["n_labelled"]),
                n_churned=int(row["n_churned"]),
            )
        )
    return tuple(sorted(profiles, key=lambda profile: profile.month))


def _bit_values(bits: int | None) -> set[float]:
    if bits is None:
        return set()
    return {float(value) for value in range(_MAX_BIT_VALUE + 1) if bits >> value & 1}


def candidate_rows(max_training_rows: int, max_invalid_share: float) -> int:
    """Return how many labelled rows to draw so that ``max_training_rows`` stay valid.

    Validation rejects the drawn rows when more than ``max_invalid_share`` of them
    break a row rule. Drawing ``max_training_rows / (1 - max_invalid_share)`` rows
    therefore leaves at least ``max_training_rows`` valid ones unless the history
    is rejected. The share is capped at 0.5, so at most twice the bound is drawn.
    With a higher ``max_invalid_share``, a history with more than half of its
    drawn rows invalid trains on fewer than ``max_training_rows``.
    """
    share = min(max_invalid_share, _MAX_SLACK_SHARE)
    return math.ceil(max_training_rows / (1.0 - share))


def read_training_candidates(
    conn: Connection, months: Iterable[dt.date], n_rows: int, seed: int
) -> pd.DataFrame:
    """Read the ``n_rows`` labelled rows of ``months`` with the lowest sample keys.

    Returns:
        One row a client and month: ``client_id``, ``month`` (COPY's text), the
        features, ``churned`` (COPY's ``t``/``f``) and ``sample_key``, ordered by
        the key.
    """
    params = {"months": sorted(months), "n_rows": n_rows, "seed": seed}
    return db.read_frame(conn, "labelled_sample_of_months", params)


def select_candidates(candidates: pd.DataFrame, months: Iterable, n_rows: int) -> pd.DataFrame:
    """Keep the ``n_rows`` candidates of ``months`` with the lowest sample keys."""
    kept = candidates[candidates[MONTH].isin(set(months))]
    return kept.sort_values([SAMPLE_KEY, MONTH, CLIENT_ID], kind="stable").head(n_rows)
