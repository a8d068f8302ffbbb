"""Simulated months with a retention campaign between them, to check the measured effect.

Each month in turn:

1. the simulator draws the month's questionnaires, which are written to ``crm``;
2. the monthly job scores the month (except the first, which has no labelled
   month to train on) and publishes its list and holdout;
3. every listed client of the high and medium tiers that is not held out is
   contacted, and the contacts are written to ``crm.contacts``;
4. the simulator draws the month's outcomes, the contacted clients' churn
   lowered by the scenario's ``contact_effect``, and they are written too.

The next month's run then measures the month's campaign. The last month's
results are stored at the end, as the run of the month after would.
"""

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy.engine import Engine

from gymchurn import campaigns, db
from gymchurn.contacts import CONTACT_COLUMNS
from gymchurn.schema import CLIENT_ID, format_month
from gymchurn.simulation.simulator import ClientSimulator, add_months

logger = logging.getLogger(__name__)

SOURCE_FILE = "simulated_contacts.csv"


@dataclass
class CampaignSimulation:
    """Months, contacts and planted effects of a simulated campaign."""

    scored: list = field(default_factory=list)
    """Results of the monthly runs, one dict a scored month."""
    contacted: dict = field(default_factory=dict)
    """Clients contacted per month."""
    true_effects: dict = field(default_factory=dict)
    """Per month with contacts, the expected fall of the contacted clients' churn rate."""

    def planted_effect(self) -> float:
        """Return the expected fall of the contacted clients' churn rate, weighted by clients."""
        contacted = sum(self.contacted.values())
        if not contacted:
            raise ValueError("no client was contacted, so no effect was planted")
        return (
            sum(self.true_effects.get(month, 0.0) * n for month, n in self.contacted.items())
            / contacted
        )


def _listed_clients(engine: Engine, month: dt.date) -> list[int]:
    with engine.connect() as conn:
        scored = db.execute(conn, "scores_for_contacts", {"month": month}).fetchall()
    return [
        row.client_id for row in scored if row.risk_tier in ("high", "medium") and not row.holdout
    ]


def _write_contacts(engine: Engine, month: dt.date, client_ids: list[int]) -> None:
    first = add_months(month, 1)
    contacts = pd.DataFrame(
        {
            "month": month,
            CLIENT_ID: client_ids,
            "contact_date": [first + dt.timedelta(days=i % 28) for i in range(len(client_ids))],
            "channel": "call",
            "outcome": "reached",
            "source_file": SOURCE_FILE,
            "line": range(2, len(client_ids) + 2),
            "load_id": uuid.uuid4(),
        }
    )
    keys = {"month": month, "source_file": SOURCE_FILE, "legacy_name": SOURCE_FILE}
    with engine.begin() as conn:
        db.execute(conn, "delete_file_contacts", keys)
        db.copy_rows(
            conn, "crm.contacts", CONTACT_COLUMNS, db.frame_rows(contacts, CONTACT_COLUMNS)
        )


def _replace_month(engine: Engine, table: str, delete: str, frame: pd.DataFrame, month) -> None:
    with engine.begin() as conn:
        db.execute(conn, delete, {"month": month})
        db.copy_frame(conn, table, frame)


def simulate_campaign(
    engine: Engine,
    simulator: ClientSimulator,
    start: dt.date,
    n_months: int,
    run_month: Callable[[str], dict],
) -> CampaignSimulation:
    """Simulate ``n_months`` from ``start`` with the job and a campaign between them.

    Args:
        run_month: runs the monthly job on a month (``YYYY-MM``) and returns its result,
            for example ``lambda label: monthly_scoring(month=label)``.

    Returns:
        The runs, the contacted clients and the effects the simulator planted.
    """
    simulation = CampaignSimulation()

    def contact(month: dt.date, questionnaires: pd.DataFrame) -> list[int]:
        _replace_month(
            engine, "crm.questionnaires", "delete_month_questionnaires", questionnaires, month
        )
        if month == start:
            # Nothing is labelled yet to train on: the first month only gives outcomes.
            return []
        simulation.scored.append(run_month(format_month(month)))
        listed = _listed_clients(engine, month)
        _write_contacts(engine, month, listed)
        simulation.contacted[month] = len(listed)
        logger.info("campaign: %d listed clients of %s contacted", len(listed), format_month(month))
        return listed

    last = None
    for simulated in simulator.months(start, n_months, contacts=contact):
        _replace_month(
            engine,
            "crm.churn_outcomes",
            "delete_month_outcomes",
            simulated.outcomes,
            simulated.month,
        )
        last = simulated.month
    if last is not None and last != start:
        campaigns.refresh_month(engine, last)
    simulation.true_effects = dict(simulator.true_effects)
    return simulation
