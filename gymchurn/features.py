"""Behaviour features computed from the 13 questionnaire features of one client.

Every engineered feature uses only the questionnaire features of its own row,
so the transformer learns nothing in ``fit`` and can sit in front of any model
without leaking labels.
"""

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from gymchurn.schema import FEATURES

# Columns appended after the 13 questionnaire features, in this order.
ENGINEERED_FEATURES = [
    "frequency_change",
    "frequency_ratio",
    "contract_share_used",
    "log_lifetime",
    "charges_per_month",
]

# Largest value of ``frequency_ratio``. Fewer than 0.1 % of the clients in the
# chain's export visit more than three times as often in the last month as over
# their whole membership. The cap is also the ratio of a client with visits in
# the last month and none on record before it.
FREQUENCY_RATIO_CAP = 3.0

_COLUMN = {name: index for index, name in enumerate(FEATURES)}


def behaviour_features(questionnaire: np.ndarray) -> np.ndarray:
    """Compute the ``ENGINEERED_FEATURES`` of each row of a 13-column questionnaire matrix.

    Args:
        questionnaire: float matrix with the columns of ``FEATURES``, in that order.

    Returns:
        A float matrix with one column per name in ``ENGINEERED_FEATURES``.
    """

    def column(name: str) -> np.ndarray:
        return questionnaire[:, _COLUMN[name]]

    total = column("avg_class_frequency_total")
    current = column("avg_class_frequency_current_month")
    contract = column("contract_period")
    lifetime = np.maximum(column("lifetime"), 0.0)

    # Visits a week, last month minus the whole membership: negative when a
    # client comes less often than before.
    frequency_change = current - total

    # Without visits on record the ratio is 1 (no change) when the last month
    # has none either, and the cap when it has some.
    has_total = total > 0
    ratio = np.divide(current, total, out=np.zeros_like(total), where=has_total)
    ratio = np.where(has_total, ratio, np.where(current > 0, FREQUENCY_RATIO_CAP, 1.0))
    frequency_ratio = np.clip(ratio, 0.0, FREQUENCY_RATIO_CAP)

    # Months of the contract already used, as a share of its length. A contract
    # length of 0 or less is invalid, so such a row gets 0.
    months_used = contract - column("month_to_end_contract")
    share = np.divide(months_used, contract, out=np.zeros_like(contract), where=contract > 0)
    contract_share_used = np.clip(share, 0.0, 1.0)

    log_lifetime = np.log1p(lifetime)

    # Lifetime 0 is the first month of membership, so its charges count as one month's.
    charges_per_month = column("avg_additional_charges_total") / np.maximum(lifetime, 1.0)

    return np.column_stack(
        [frequency_change, frequency_ratio, contract_share_used, log_lifetime, charges_per_month]
    )


class BehaviourFeatures(TransformerMixin, BaseEstimator):
    """Transformer that appends ``ENGINEERED_FEATURES`` to the 13 questionnaire features.

    It takes the matrix that ``gymchurn.model.feature_matrix`` builds
    (columns in ``FEATURES`` order) and returns those columns followed by the
    engineered ones. It is stateless: ``fit`` only checks the column count.
    """

    def fit(self, X, y=None):
        validate_data(self, X, dtype="float64", reset=True)
        names = getattr(self, "feature_names_in_", None)
        if names is not None and list(names) != FEATURES:
            raise ValueError(
                f"BehaviourFeatures expects the columns {FEATURES} in this order, got {list(names)}"
            )
        if self.n_features_in_ != len(FEATURES):
            raise ValueError(
                f"BehaviourFeatures expects the {len(FEATURES)} feature columns "
                f"{FEATURES}, got {self.n_features_in_} columns"
            )
        return self

    def transform(self, X):
        check_is_fitted(self, "n_features_in_")
        questionnaire = validate_data(self, X, dtype="float64", reset=False)
        return np.column_stack([questionnaire, behaviour_features(questionnaire)])

    def get_feature_names_out(self, input_features=None):
        return np.asarray([*FEATURES, *ENGINEERED_FEATURES], dtype=object)
