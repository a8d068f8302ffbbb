"""Column names and value rules of the client questionnaire.

The questionnaire columns keep the spelling of the chain's export in CSV files
(``Near_Location``) and are snake_case in the database (``near_location``).
"""

import datetime as dt
import re
from zoneinfo import ZoneInfo

CLIENT_ID = "client_id"
MONTH = "month"
CHURNED = "churned"

# The 13 model features, in the order of the chain's export.
FEATURES = [
    "gender",
    "near_location",
    "partner",
    "promo_friends",
    "phone",
    "contract_period",
    "group_visits",
    "age",
    "avg_additional_charges_total",
    "month_to_end_contract",
    "lifetime",
    "avg_class_frequency_total",
    "avg_class_frequency_current_month",
]

# Header of each column in the chain's CSV export, by database column name.
# The export has no client key, and ``client_id`` is the header the job reads first.
CSV_HEADERS = {
    CLIENT_ID: "client_id",
    "gender": "gender",
    "near_location": "Near_Location",
    "partner": "Partner",
    "promo_friends": "Promo_friends",
    "phone": "Phone",
    "contract_period": "Contract_period",
    "group_visits": "Group_visits",
    "age": "Age",
    "avg_additional_charges_total": "Avg_additional_charges_total",
    "month_to_end_contract": "Month_to_end_contract",
    "lifetime": "Lifetime",
    "avg_class_frequency_total": "Avg_class_frequency_total",
    "avg_class_frequency_current_month": "Avg_class_frequency_current_month",
    CHURNED: "Churn",
}

BINARY_FEATURES = [
    "gender",
    "near_location",
    "partner",
    "promo_friends",
    "phone",
    "group_visits",
]
INTEGER_FEATURES = [*BINARY_FEATURES, "contract_period", "age", "month_to_end_contract", "lifetime"]

# The chain sells 1-, 3-, 6- and 12-month contracts.
CONTRACT_PERIODS = [1, 3, 6, 12]

# Inclusive bounds of a plausible answer. Values outside them are typing or
# export errors: nobody trains 22 times a week or joined 100 years ago.
VALUE_RANGES = {
    "age": (12, 100),
    "avg_additional_charges_total": (0.0, 100_000.0),
    "month_to_end_contract": (1, 12),
    "lifetime": (0, 1_200),
    "avg_class_frequency_total": (0.0, 21.0),
    "avg_class_frequency_current_month": (0.0, 21.0),
}

_MONTH_PATTERN = re.compile(r"^(\d{4})-(\d{2})(?:-01)?$")


def parse_month(text: str) -> dt.date:
    """Parse ``YYYY-MM`` (or ``YYYY-MM-01``) into the first day of that month.

    Raises:
        ValueError: when ``text`` is not a month in that form.
    """
    match = _MONTH_PATTERN.match(text.strip())
    if match is None:
        raise ValueError(f"invalid month {text!r}: expected YYYY-MM, for example 2026-11")
    year, month = int(match[1]), int(match[2])
    if not 1 <= month <= 12 or year < 1900:
        raise ValueError(f"invalid month {text!r}: expected YYYY-MM, for example 2026-11")
    return dt.date(year, month, 1)


def format_month(month: dt.date) -> str:
    """Format a month as ``YYYY-MM``."""
    return f"{month.year:04d}-{month.month:02d}"


def previous_month(timezone: str, now: dt.datetime | None = None) -> dt.date:
    """Return the first day of the month before ``now`` in ``timezone``.

    The monthly job scores the month that has just ended: a run on 1 December
    in the business timezone scores November, even when it is still
    30 November in UTC. ``now`` defaults to the current time.
    """
    local = (now or dt.datetime.now(dt.UTC)).astimezone(ZoneInfo(timezone))
    first_of_month = local.date().replace(day=1)
    return (first_of_month - dt.timedelta(days=1)).replace(day=1)


# Plain names of the features, for reports and tables people read.
FEATURE_LABELS = {
    "gender": "gender",
    "near_location": "lives or works near the club",
    "partner": "partner company employee",
    "promo_friends": "came through a friend's promo code",
    "phone": "gave a phone number",
    "contract_period": "contract length, months",
    "group_visits": "attends group classes",
    "age": "age",
    "avg_additional_charges_total": "spending on other services",
    "month_to_end_contract": "months left on the contract",
    "lifetime": "months since the first visit",
    "avg_class_frequency_total": "visits a week since the first visit",
    "avg_class_frequency_current_month": "visits a week last month",
}
