"""Fit the simulator's figures on a real questionnaire file.

The simulator ships only these aggregate figures, never the rows they come
from. Regenerate them with::

    python -m gymchurn.simulation.fit gym_churn_us.csv gymchurn/simulation/figures.json

The figures are:

- ``hazard``: a logistic regression of next month's churn on the terms that
  :func:`hazard_terms` computes from a questionnaire.
- ``population``: for the clients who stayed and for those who left, a
  Gaussian copula: the marginal distribution of each feature and the
  correlation of their normal scores. The simulator draws a realistic first
  month from the mixture of the two.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata
from sklearn.linear_model import LogisticRegression

from gymchurn.loader import read_questionnaire_csv
from gymchurn.schema import CHURNED, CLIENT_ID, FEATURES

# The copula covers every feature but the months left on the contract, which
# is drawn from its distribution given the contract length.
COPULA_FEATURES = [name for name in FEATURES if name != "month_to_end_contract"]
CONTINUOUS_FEATURES = [
    "avg_additional_charges_total",
    "avg_class_frequency_total",
    "avg_class_frequency_current_month",
]
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 101)

HAZARD_TERMS = [
    "contract_1",
    "contract_6",
    "log_lifetime",
    "age",
    "charges_per_100",
    "month_to_end_contract",
    "frequency_current_month",
    "frequency_drop",
    "partner",
    "promo_friends",
    "group_visits",
    "near_location",
    "phone",
    "gender",
]


def hazard_terms(frame: pd.DataFrame) -> pd.DataFrame:
    """Compute the hazard model's terms from questionnaire columns.

    ``frequency_drop`` is how far the last month's visits a week fell below
    the lifetime average; a negative value is a rise.
    """
    period = frame["contract_period"].to_numpy(dtype="float64")
    terms = pd.DataFrame(index=frame.index)
    terms["contract_1"] = (period == 1).astype("float64")
    terms["contract_6"] = (period == 6).astype("float64")
    terms["log_lifetime"] = np.log1p(frame["lifetime"].to_numpy(dtype="float64"))
    terms["age"] = frame["age"].to_numpy(dtype="float64")
    terms["charges_per_100"] = frame["avg_additional_charges_total"].to_numpy("float64") / 100
    terms["month_to_end_contract"] = frame["month_to_end_contract"].to_numpy(dtype="float64")
    current = frame["avg_class_frequency_current_month"].to_numpy(dtype="float64")
    terms["frequency_current_month"] = current
    terms["frequency_drop"] = frame["avg_class_frequency_total"].to_numpy("float64") - current
    for name in ["partner", "promo_friends", "group_visits", "near_location", "phone", "gender"]:
        terms[name] = frame[name].to_numpy(dtype="float64")
    return terms[HAZARD_TERMS]


def _fit_hazard(rows: pd.DataFrame) -> dict:
    terms = hazard_terms(rows)
    # Weak regularisation: the figures should describe the file, not shrink.
    fitted = LogisticRegression(C=10.0, max_iter=5000).fit(terms, rows[CHURNED].astype(int))
    coefficients = dict(zip(HAZARD_TERMS, fitted.coef_[0].tolist(), strict=True))
    # The file has no 3-month contracts: place them between 1 and 6 months on
    # a log scale of the contract length.
    between = np.log(3) / np.log(6)
    coefficients["contract_3"] = (1 - between) * coefficients["contract_1"] + between * (
        coefficients["contract_6"]
    )
    return {"intercept": float(fitted.intercept_[0]), "coefficients": coefficients}


def _marginal(values: pd.Series, name: str) -> dict:
    if name in CONTINUOUS_FEATURES:
        quantiles = np.quantile(values.to_numpy(dtype="float64"), QUANTILE_LEVELS)
        return {"kind": "continuous", "quantiles": [round(float(q), 6) for q in quantiles]}
    shares = values.astype("int64").value_counts(normalize=True).sort_index()
    return {
        "kind": "discrete",
        "values": [int(v) for v in shares.index],
        "cumulative": [round(float(c), 8) for c in shares.cumsum()],
    }


def _normal_scores(values: pd.Series) -> np.ndarray:
    # Mid-ranks keep ties together, so a 0/1 flag gets two scores.
    ranks = rankdata(values.to_numpy(dtype="float64"), method="average")
    return norm.ppf(ranks / (len(values) + 1))


def _fit_component(rows: pd.DataFrame) -> dict:
    marginals = {name: _marginal(rows[name], name) for name in COPULA_FEATURES}
    scores = np.column_stack([_normal_scores(rows[name]) for name in COPULA_FEATURES])
    correlation = np.corrcoef(scores, rowvar=False)
    month_to_end = {}
    for period, group in rows.groupby("contract_period"):
        month_to_end[str(int(period))] = _marginal(group["month_to_end_contract"], "")
    return {
        "weight": len(rows),
        "marginals": marginals,
        "correlation": [[round(float(c), 6) for c in row] for row in correlation],
        "month_to_end_contract": month_to_end,
    }


def fit_figures(path: Path) -> dict:
    """Fit the hazard and the population figures on a labelled questionnaire file.

    Raises:
        ValueError: the file has no ``Churn`` column or unlabelled rows.
    """
    loaded = read_questionnaire_csv(path)
    if loaded.outcomes is None or len(loaded.outcomes) != len(loaded.questionnaires):
        raise ValueError(f"{path}: every row needs a Churn label to fit the simulator")
    rows = loaded.questionnaires.merge(loaded.outcomes, on=CLIENT_ID)
    if rows[FEATURES].isna().any().any():
        raise ValueError(f"{path}: rows with missing values cannot be used to fit the simulator")
    components = []
    for churned, group in rows.groupby(CHURNED):
        component = _fit_component(group)
        component["churned"] = bool(churned)
        component["weight"] = round(len(group) / len(rows), 6)
        components.append(component)
    return {
        "source": {"rows": len(rows), "churn_rate": round(float(rows[CHURNED].mean()), 6)},
        "copula_features": COPULA_FEATURES,
        "hazard": _fit_hazard(rows),
        "population": components,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m gymchurn.simulation.fit CSV_FILE FIGURES_JSON", file=sys.stderr)
        return 2
    figures = fit_figures(Path(argv[0]))
    Path(argv[1]).write_text(json.dumps(figures, indent=1) + "\n")
    print(f"{argv[1]}: figures fitted on {figures['source']['rows']} rows of {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
