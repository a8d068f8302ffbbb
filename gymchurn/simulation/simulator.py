"""Month-by-month simulation of a club chain's clients.

Each month the simulator produces a snapshot of questionnaires and, for each
client, whether the client leaves in the month that follows. Between two
snapshots the clients who stayed grow one month older as members, count down
their contracts and renew them, drift in how often they visit and spend, and
the clients who left are replaced by new ones.

Outcomes come from a logistic churn hazard fitted on a real questionnaire
file (``figures.json``, see :mod:`gymchurn.simulation.fit`). A first month
drawn from scratch follows the real file's joint distribution through a
mixture of two Gaussian copulas, one fitted on the clients who stayed and one
on the clients who left.

The month-to-month dynamics are assumptions, not fits, because a single
snapshot cannot show them; they are the constants below.
"""

import datetime as dt
import json
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd
from scipy.special import expit
from scipy.stats import norm

from gymchurn.schema import CHURNED, CLIENT_ID, FEATURES, MONTH, VALUE_RANGES
from gymchurn.simulation.fit import QUANTILE_LEVELS, hazard_terms

# Each month an engaged client starts to disengage with this probability. A
# disengaged client visits at a fraction of the usual rate until recovering
# or leaving.
DISENGAGE_PROBABILITY = 0.10
RECOVER_PROBABILITY = 0.30
DISENGAGED_VISIT_SHARE = (0.15, 0.75)
# Standard deviation of the monthly log change in a client's usual visit
# rate and spending, and of one month's spending around the usual level.
VISIT_DRIFT = 0.05
VISIT_NOISE = 0.08
SPEND_DRIFT = 0.05
SPEND_NOISE = 0.30
# A client whose contract ends and who stays keeps its length with this
# probability, and otherwise picks a length as new clients do.
SAME_CONTRACT_ON_RENEWAL = 0.80
# A client whose contract of several months ends next month lets it lapse
# with one of these probabilities, in addition to the hazard. The real file
# cannot show this, because none of its longer contracts is in its last month.
LAPSE_PROBABILITY_DISENGAGED = 0.70
LAPSE_PROBABILITY_ENGAGED = 0.15
GROUP_VISITS_SWITCH = 0.03

# Decimal places of the average columns (visits, spending) in a snapshot.
_DECIMALS = 6


@dataclass(frozen=True)
class Scenario:
    """A change in the chain's business from a month on, for monitoring tests."""

    name: str
    description: str
    one_month_share: float | None = None
    """Share of new and renewed contracts that are 1-month ones, instead of the usual mix."""
    hazard_shift: float = 0.0
    """Added to every client's churn log-odds."""
    extra_friend_joiners: float = 0.0
    """Extra new bring-a-friend clients in the start month, as a share of the client count."""
    contact_effect: float = 0.0
    """Relative fall of a contacted client's probability of leaving: 0.3 keeps 30 % of
    the contacted clients who would have left."""


SCENARIOS = {
    "steady": Scenario("steady", "the real file's relationships, unchanged"),
    "price_rise": Scenario(
        "price_rise",
        "from the start month 90 % of new and renewed contracts are 1-month ones "
        "and every client's churn odds rise 4.5-fold (log-odds + 1.5)",
        one_month_share=0.90,
        hazard_shift=1.5,
    ),
    "promo_wave": Scenario(
        "promo_wave",
        "in the start month new bring-a-friend clients join on top of the usual "
        "newcomers, 20 % of the client count",
        extra_friend_joiners=0.20,
    ),
    "intervention": Scenario(
        "intervention",
        "from the start month a contacted client's probability of leaving falls by 30 % "
        "(relative); the clients to contact come from the monthly job's at-risk list",
        contact_effect=0.30,
    ),
}


def load_figures() -> dict:
    """Return the figures fitted on the real questionnaire file."""
    text = resources.files("gymchurn.simulation").joinpath("figures.json").read_text()
    return json.loads(text)


def churn_probability(frame: pd.DataFrame, figures: dict, hazard_shift: float = 0.0) -> np.ndarray:
    """Return each client's probability of leaving next month under the fitted hazard."""
    hazard = figures["hazard"]
    coefficients = hazard["coefficients"]
    terms = hazard_terms(frame)
    weights = np.array([coefficients[name] for name in terms.columns])
    logit = hazard["intercept"] + terms.to_numpy() @ weights + hazard_shift
    three_months = frame["contract_period"].to_numpy() == 3
    logit = logit + coefficients["contract_3"] * three_months
    return expit(logit)


def _inverse_marginal(marginal: dict, levels: np.ndarray) -> np.ndarray:
    if marginal["kind"] == "continuous":
        return np.interp(levels, QUANTILE_LEVELS, marginal["quantiles"])
    values = np.asarray(marginal["values"])
    index = np.searchsorted(np.asarray(marginal["cumulative"]), levels, side="right")
    return values[np.minimum(index, len(values) - 1)]


def sample_population(figures: dict, n_clients: int, rng: np.random.Generator) -> pd.DataFrame:
    """Draw ``n_clients`` questionnaires from the fitted copula mixture, in random order."""
    components = figures["population"]
    names = figures["copula_features"]
    counts = rng.multinomial(n_clients, [c["weight"] for c in components])
    parts = []
    for component, count in zip(components, counts, strict=True):
        correlation = np.asarray(component["correlation"])
        cholesky = np.linalg.cholesky(correlation + 1e-9 * np.eye(len(names)))
        levels = norm.cdf(rng.standard_normal((count, len(names))) @ cholesky.T)
        part = pd.DataFrame(
            {
                name: _inverse_marginal(component["marginals"][name], levels[:, j])
                for j, name in enumerate(names)
            }
        )
        month_to_end = np.ones(count, dtype="int64")
        for period, marginal in component["month_to_end_contract"].items():
            chosen = part["contract_period"].to_numpy() == int(period)
            month_to_end[chosen] = _inverse_marginal(marginal, rng.random(chosen.sum()))
        part["month_to_end_contract"] = month_to_end
        parts.append(part)
    population = pd.concat(parts, ignore_index=True)
    population = population.iloc[rng.permutation(n_clients)].reset_index(drop=True)
    return population[FEATURES]


@dataclass(frozen=True)
class SimulatedMonth:
    """One month's snapshot."""

    month: dt.date
    questionnaires: pd.DataFrame
    """``client_id``, ``month`` and the 13 features."""
    outcomes: pd.DataFrame
    """``client_id``, ``month``, ``churned``: whether each client leaves next month."""
    joined: int | None
    """Clients new this month; None in the first month."""


def add_months(month: dt.date, count: int) -> dt.date:
    """Return the first day of the month ``count`` months after ``month``."""
    index = month.year * 12 + month.month - 1 + count
    return dt.date(index // 12, index % 12 + 1, 1)


class ClientSimulator:
    """Simulate a chain's clients month by month, keeping one month in memory.

    Args:
        n_clients: clients in the first month; later months stay near it.
        seed: the same seed, clients, start data and scenario give the same months.
        scenario: a key of :data:`SCENARIOS`.
        scenario_start: the month the scenario's change begins.
        first_month: questionnaires to start from, one row a client; by
            default the first month is drawn from the fitted figures.
        first_outcomes: known outcomes of ``first_month``, by ``client_id``;
            clients without one get an outcome drawn from the hazard.
    """

    def __init__(
        self,
        n_clients: int,
        *,
        seed: int,
        scenario: str = "steady",
        scenario_start: dt.date | None = None,
        first_month: pd.DataFrame | None = None,
        first_outcomes: pd.Series | None = None,
        figures: dict | None = None,
        contact_effect: float | None = None,
    ):
        if n_clients < 1:
            raise ValueError(f"invalid client count {n_clients}: expected at least 1")
        if scenario not in SCENARIOS:
            raise ValueError(
                f"unknown scenario {scenario!r}: expected one of {', '.join(SCENARIOS)}"
            )
        if contact_effect is not None and not 0 <= contact_effect <= 1:
            raise ValueError(f"invalid contact effect {contact_effect}: expected 0 to 1")
        self.n_clients = n_clients
        self.scenario = SCENARIOS[scenario]
        self.contact_effect = (
            self.scenario.contact_effect if contact_effect is None else contact_effect
        )
        self.true_effects: dict[dt.date, float] = {}
        """Per month with contacts: the expected fall of the contacted clients' churn
        rate, the mean of effect * probability of leaving without the contact."""
        self.scenario_start = scenario_start
        self.figures = figures or load_figures()
        self.rng = np.random.default_rng(seed)
        self.first_month = first_month
        self.first_outcomes = first_outcomes

    def months(
        self,
        start: dt.date,
        n_months: int,
        contacts: Callable[[dt.date, pd.DataFrame], Collection[int]] | None = None,
    ) -> Iterator[SimulatedMonth]:
        """Yield ``n_months`` snapshots from ``start``, one at a time.

        Args:
            contacts: called with each month and its questionnaires before the
                month's outcomes are drawn; returns the ids of the clients
                contacted in the month after it. Their probability of leaving
                falls by ``contact_effect`` from the scenario's start month.
        """
        clients = self._first_clients()
        joined = None
        for index in range(n_months):
            month = add_months(start, index)
            active = self._active(month)
            if index > 0:
                clients = self._advance(clients, month)
                clients, joined = self._add_joiners(clients, month, active)
            contacted = None
            if contacts is not None:
                contacted = contacts(month, self._questionnaires(clients, month))
            churned = self._draw_outcomes(clients, active, first=index == 0)
            if contacted is not None:
                churned = self._apply_contacts(clients, churned, contacted, month, active)
            clients["churned"] = churned
            yield self._snapshot(clients, month, joined)
            clients = clients[~clients["churned"]].reset_index(drop=True)

    def _active(self, month: dt.date) -> bool:
        return self.scenario_start is not None and month >= self.scenario_start

    def _first_clients(self) -> pd.DataFrame:
        if self.first_month is None:
            clients = sample_population(self.figures, self.n_clients, self.rng)
            clients.insert(0, CLIENT_ID, np.arange(1, self.n_clients + 1, dtype="int64"))
        elif len(self.first_month) == self.n_clients:
            clients = self.first_month[[CLIENT_ID, *FEATURES]].reset_index(drop=True)
        else:
            # Another size than the file's: draw its rows with replacement.
            picked = self.rng.integers(0, len(self.first_month), self.n_clients)
            clients = self.first_month[FEATURES].iloc[picked].reset_index(drop=True)
            clients.insert(0, CLIENT_ID, np.arange(1, self.n_clients + 1, dtype="int64"))
            if self.first_outcomes is not None:
                known = self.first_outcomes.reindex(self.first_month[CLIENT_ID]).to_numpy()
                self.first_outcomes = pd.Series(known[picked], index=clients[CLIENT_ID])
        clients = clients.astype({name: "float64" for name in FEATURES})
        clients[CLIENT_ID] = clients[CLIENT_ID].astype("int64")
        self.next_id = int(clients[CLIENT_ID].max()) + 1
        return self._with_hidden_state(clients)

    def _with_hidden_state(self, clients: pd.DataFrame) -> pd.DataFrame:
        # The usual visit rate is the lifetime average, and a client whose last
        # month fell well below it has started to disengage.
        clients["usual_visits"] = clients["avg_class_frequency_total"]
        clients["disengaged"] = (
            clients["avg_class_frequency_current_month"] < 0.8 * clients["usual_visits"]
        )
        clients["usual_spend"] = clients["avg_additional_charges_total"]
        clients["birthday_month"] = self.rng.integers(1, 13, len(clients))
        return clients

    def _draw_outcomes(self, clients: pd.DataFrame, active: bool, *, first: bool) -> np.ndarray:
        shift = self.scenario.hazard_shift if active else 0.0
        probability = churn_probability(clients, self.figures, shift)
        churned = self.rng.random(len(clients)) < probability
        ending = (clients["month_to_end_contract"].to_numpy() == 1) & (
            clients["contract_period"].to_numpy() > 1
        )
        lapse = np.where(
            clients["disengaged"].to_numpy(),
            LAPSE_PROBABILITY_DISENGAGED,
            LAPSE_PROBABILITY_ENGAGED,
        )
        churned |= ending & (self.rng.random(len(clients)) < lapse)
        if first and self.first_outcomes is not None:
            known = self.first_outcomes.reindex(clients[CLIENT_ID]).to_numpy(dtype="float64")
            churned = np.where(np.isnan(known), churned, known == 1)
        return churned

    def _apply_contacts(
        self,
        clients: pd.DataFrame,
        churned: np.ndarray,
        contacted: Collection[int],
        month: dt.date,
        active: bool,
    ) -> np.ndarray:
        """Let each contacted leaver stay with probability ``contact_effect``.

        That lowers a contacted client's probability of leaving by the same
        relative amount, whatever made the client leave (hazard or lapse).
        """
        effect = self.contact_effect if active else 0.0
        reached = clients[CLIENT_ID].isin(set(contacted)).to_numpy()
        kept = self.rng.random(len(clients)) < effect
        if reached.any():
            shift = self.scenario.hazard_shift if active else 0.0
            hazard = churn_probability(clients, self.figures, shift)
            ending = (clients["month_to_end_contract"].to_numpy() == 1) & (
                clients["contract_period"].to_numpy() > 1
            )
            lapse = ending * np.where(
                clients["disengaged"].to_numpy(),
                LAPSE_PROBABILITY_DISENGAGED,
                LAPSE_PROBABILITY_ENGAGED,
            )
            leaving = 1 - (1 - hazard) * (1 - lapse)
            self.true_effects[month] = float(effect * leaving[reached].mean())
        return churned & ~(reached & kept)

    def _contract_lengths(self, count: int, active: bool) -> np.ndarray:
        drawn = sample_population(self.figures, count, self.rng)["contract_period"].to_numpy()
        if active and self.scenario.one_month_share is not None:
            one_month = self.rng.random(count) < self.scenario.one_month_share
            drawn = np.where(one_month, 1.0, drawn)
        return drawn

    def _advance(self, clients: pd.DataFrame, month: dt.date) -> pd.DataFrame:
        """Move the clients who stayed on by one month."""
        rng = self.rng
        n = len(clients)
        months_before = clients["lifetime"].to_numpy() + 1
        clients["lifetime"] += 1
        clients.loc[clients["birthday_month"] == month.month, "age"] += 1

        clients["month_to_end_contract"] -= 1
        ended = clients["month_to_end_contract"].to_numpy() < 1
        if ended.any():
            renewed = clients.loc[ended, "contract_period"].to_numpy()
            changes = rng.random(ended.sum()) >= SAME_CONTRACT_ON_RENEWAL
            fresh = self._contract_lengths(ended.sum(), self._active(month))
            renewed = np.where(changes, fresh, renewed)
            clients.loc[ended, "contract_period"] = renewed
            clients.loc[ended, "month_to_end_contract"] = renewed

        engaged = ~clients["disengaged"].to_numpy()
        starts = engaged & (rng.random(n) < DISENGAGE_PROBABILITY)
        recovers = ~engaged & (rng.random(n) < RECOVER_PROBABILITY)
        disengaged = (~engaged & ~recovers) | starts
        clients["disengaged"] = disengaged
        clients["usual_visits"] *= np.exp(rng.normal(0.0, VISIT_DRIFT, n))
        share = np.where(
            disengaged,
            rng.uniform(*DISENGAGED_VISIT_SHARE, n),
            np.exp(rng.normal(0.0, VISIT_NOISE, n)),
        )
        current = np.clip(clients["usual_visits"].to_numpy() * share, 0.0, 21.0)
        total = clients["avg_class_frequency_total"].to_numpy()
        clients["avg_class_frequency_current_month"] = current
        clients["avg_class_frequency_total"] = (total * months_before + current) / (
            months_before + 1
        )

        clients["usual_spend"] *= np.exp(rng.normal(0.0, SPEND_DRIFT, n))
        spent = clients["usual_spend"].to_numpy() * np.exp(rng.normal(0.0, SPEND_NOISE, n))
        charges = clients["avg_additional_charges_total"].to_numpy()
        clients["avg_additional_charges_total"] = (charges * months_before + spent) / (
            months_before + 1
        )

        switches = rng.random(n) < GROUP_VISITS_SWITCH
        clients.loc[switches, "group_visits"] = 1 - clients.loc[switches, "group_visits"]
        return clients

    def _sample_newcomers(self, count: int) -> pd.DataFrame:
        """Draw clients like the real file's clients in their first month of membership."""
        batches, found = [], 0
        while found < count:
            batch = sample_population(self.figures, max(4 * (count - found), 64), self.rng)
            batch = batch[batch["lifetime"] == 0]
            batches.append(batch)
            found += len(batch)
        if not batches:
            return sample_population(self.figures, 0, self.rng)
        return pd.concat(batches, ignore_index=True).iloc[:count].reset_index(drop=True)

    def _add_joiners(
        self, clients: pd.DataFrame, month: dt.date, active: bool
    ) -> tuple[pd.DataFrame, int]:
        """Add new clients so that the count stays near ``n_clients``."""
        count = int(self.rng.poisson(max(self.n_clients - len(clients), 0)))
        extra = 0
        if active and month == self.scenario_start:
            extra = round(self.scenario.extra_friend_joiners * self.n_clients)
        joiners = self._sample_newcomers(count + extra)
        joiners.loc[joiners.index[count:], "promo_friends"] = 1.0
        joiners["contract_period"] = self._contract_lengths(len(joiners), active)
        joiners["month_to_end_contract"] = joiners["contract_period"]
        joiners["lifetime"] = 0.0
        joiners.insert(0, CLIENT_ID, np.arange(self.next_id, self.next_id + len(joiners)))
        self.next_id += len(joiners)
        joiners = self._with_hidden_state(joiners.astype({name: "float64" for name in FEATURES}))
        return pd.concat([clients, joiners], ignore_index=True), len(joiners)

    def _questionnaires(self, clients: pd.DataFrame, month: dt.date) -> pd.DataFrame:
        questionnaires = pd.DataFrame({CLIENT_ID: clients[CLIENT_ID].to_numpy(), MONTH: month})
        for name in FEATURES:
            values = clients[name].to_numpy()
            if name in VALUE_RANGES and name.startswith("avg_"):
                questionnaires[name] = np.round(values, _DECIMALS)
            else:
                questionnaires[name] = np.rint(values).astype("int64")
        return questionnaires

    def _snapshot(self, clients: pd.DataFrame, month: dt.date, joined: int) -> SimulatedMonth:
        questionnaires = self._questionnaires(clients, month)
        outcomes = pd.DataFrame(
            {
                CLIENT_ID: questionnaires[CLIENT_ID],
                MONTH: month,
                CHURNED: clients["churned"].to_numpy(),
            }
        )
        return SimulatedMonth(month, questionnaires, outcomes, joined)
