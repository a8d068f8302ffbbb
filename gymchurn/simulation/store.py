"""Write simulated months into ``crm`` and read a starting snapshot from a file."""

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from gymchurn import db
from gymchurn.loader import CsvFormatError, read_questionnaire_csv
from gymchurn.schema import CHURNED, CLIENT_ID, MONTH, format_month
from gymchurn.simulation.simulator import ClientSimulator, SimulatedMonth, add_months
from gymchurn.validation import ROW_NUMBER, validate_questionnaires

logger = logging.getLogger(__name__)


class ExistingDataError(ValueError):
    """The months to simulate already hold questionnaires; nothing was written."""


@dataclass(frozen=True)
class StartingSnapshot:
    """Valid rows of a real file to start a simulation from."""

    questionnaires: pd.DataFrame
    outcomes: pd.Series | None
    """Known outcome by ``client_id``, or None when the file has no Churn column."""
    rows_read: int
    rows_left_out: int


def read_starting_snapshot(path: Path) -> StartingSnapshot:
    """Read a questionnaire file and keep the rows that pass the row rules.

    Raises:
        CsvFormatError: the file is not a readable questionnaire table, or no
            row of it passes the row rules.
    """
    loaded = read_questionnaire_csv(path)
    frame = loaded.questionnaires.assign(
        **{MONTH: dt.date(2000, 1, 1), ROW_NUMBER: np.arange(1, len(loaded.questionnaires) + 1)}
    )
    report = validate_questionnaires(frame, dataset=str(path), max_invalid_share=1.0)
    if report.n_quarantined:
        logger.warning(
            "%s: %d of %d rows break a row rule and are left out of the simulation",
            path,
            report.n_quarantined,
            report.n_rows,
        )
    if report.valid.empty:
        raise CsvFormatError(f"{path}: no row passes the row rules; nothing to simulate from")
    outcomes = None
    if loaded.outcomes is not None:
        outcomes = loaded.outcomes.set_index(CLIENT_ID)[CHURNED].astype(int)
        unlabelled = len(loaded.questionnaires) - len(outcomes)
        if unlabelled:
            logger.info(
                "%s: %d rows without a Churn label get an outcome drawn from the hazard",
                path,
                unlabelled,
            )
    return StartingSnapshot(
        report.valid.drop(columns=[MONTH, ROW_NUMBER]).reset_index(drop=True),
        outcomes,
        report.n_rows,
        report.n_quarantined,
    )


@dataclass
class SimulationSummary:
    """Counts of the rows a simulation wrote into ``crm``."""

    first: dt.date
    last: dt.date
    questionnaires_written: int = 0
    outcomes_written: int = 0
    questionnaires_replaced: int = 0
    months: list[dict] = field(default_factory=list)
    """Per month: clients, new clients, and clients who leave the month after."""


def _count_existing(engine: Engine, first: dt.date, last: dt.date) -> int:
    with engine.connect() as conn:
        params = {"first": first, "last": last}
        questionnaires = db.execute(conn, "count_questionnaires_between", params).scalar_one()
        outcomes = db.execute(conn, "count_outcomes_between", params).scalar_one()
    return questionnaires + outcomes


def _count_later(engine: Engine, last: dt.date) -> int:
    with engine.connect() as conn:
        return db.execute(conn, "count_questionnaires_after", {"month": last}).scalar_one()


def write_simulation(
    engine: Engine,
    simulator: ClientSimulator,
    start: dt.date,
    n_months: int,
    *,
    replace: bool = False,
    on_month: Callable[[SimulatedMonth], None] | None = None,
) -> SimulationSummary:
    """Simulate ``n_months`` from ``start`` and write them in one transaction.

    Every month gets its questionnaires, and every month but the last its
    outcomes, because the last month's outcomes lie in the future. Months are
    generated and written one at a time, so only one month is in memory. A failure
    part-way writes nothing.

    Raises:
        ExistingDataError: the months already hold rows and ``replace`` is false.
    """
    if n_months < 1:
        raise ValueError(f"invalid month count {n_months}: expected at least 1")
    last = add_months(start, n_months - 1)
    summary = SimulationSummary(start, last)
    existing = _count_existing(engine, start, last)
    later = _count_later(engine, last)
    if later:
        logger.warning(
            "crm contains %d questionnaires after %s that this simulation does not continue; "
            "their client ids do not follow these months",
            later,
            format_month(last),
        )
    if existing and not replace:
        raise ExistingDataError(
            f"crm already contains {existing} questionnaire and outcome rows for "
            f"{format_month(start)}..{format_month(last)}; pass --replace to overwrite "
            "them with simulated ones, or simulate other months with --start"
        )
    with engine.begin() as conn:
        for simulated in simulator.months(start, n_months):
            keys = {"month": simulated.month}
            summary.questionnaires_replaced += db.execute(
                conn, "delete_month_questionnaires", keys
            ).rowcount
            db.execute(conn, "delete_month_outcomes", keys)
            written = db.copy_frame(conn, "crm.questionnaires", simulated.questionnaires)
            summary.questionnaires_written += written
            leaving = int(simulated.outcomes[CHURNED].sum())
            if simulated.month != last:
                summary.outcomes_written += db.copy_frame(
                    conn, "crm.churn_outcomes", simulated.outcomes
                )
            summary.months.append(
                {
                    "month": format_month(simulated.month),
                    "clients": written,
                    "joined": simulated.joined,
                    "leaving": leaving if simulated.month != last else None,
                }
            )
            if on_month is not None:
                on_month(simulated)
        db.execute(conn, "analyze_crm")
    return summary
