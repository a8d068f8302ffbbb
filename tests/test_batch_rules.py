"""Tests of the batch rules on months built from the chain's real 4,000-row export."""

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gymchurn.batch_rules import (
    BLOCK_TRAINING,
    CONFIRM_LABELS_SETTING,
    ERROR,
    WARNING,
    BatchRuleLimits,
    blocks_training,
    check_batch,
    check_label_share,
    check_new_values,
    check_null_shares,
    check_row_count,
    profile_month,
    profile_months,
    raise_for_errors,
    stops_run,
)
from gymchurn.validation import DataValidationError, validation_result_rows

OCTOBER = dt.date(2026, 10, 1)
EARLIER = [dt.date(2026, 8, 1), dt.date(2026, 9, 1)]


@pytest.fixture(scope="module")
def real_rows(real_data: Path) -> pd.DataFrame:
    frame = pd.read_csv(real_data).rename(columns=str.lower).rename(columns={"churn": "churned"})
    frame.insert(0, "client_id", np.arange(1, len(frame) + 1, dtype="int64"))
    return frame


@pytest.fixture
def month(real_rows) -> pd.DataFrame:
    """October: the real rows as one month."""
    return real_rows.assign(month=OCTOBER)


@pytest.fixture
def history(real_rows) -> pd.DataFrame:
    """August and September: the real rows once each."""
    return pd.concat([real_rows.assign(month=m) for m in EARLIER], ignore_index=True)


def test_check_batch_real_months_pass(month, history):
    assert check_batch(month, profile_months(history)) == ()


def test_check_batch_without_history(month):
    assert check_batch(month, profile_months(month.iloc[0:0])) == ()


def test_check_batch_ignores_same_and_later_months(month, history):
    later = month.iloc[:100].assign(month=dt.date(2026, 11, 1))
    same = month.iloc[:100]

    findings = check_batch(
        month, profile_months(pd.concat([history, same, later], ignore_index=True))
    )

    assert findings == ()


def test_check_batch_two_months_rejected(month, history):
    frame = pd.concat([month, history.iloc[:10]], ignore_index=True)

    with pytest.raises(ValueError, match="found 2 month"):
        check_batch(frame, profile_months(history))


# ---------------------------------------------------------------------------
# row_count


def test_row_count_within_band(month, history):
    assert check_row_count(profile_month(month.iloc[:3300]), profile_months(history)) == []


def test_row_count_warning(month, history):
    findings = check_row_count(profile_month(month.iloc[:3000]), profile_months(history))

    assert [(f.rule, f.severity) for f in findings] == [("row_count", WARNING)]
    assert findings[0].numbers["ratio"] == 0.75
    assert findings[0].numbers["previous_rows"] == 4000
    assert findings[0].numbers["previous_month"] == "2026-09"


def test_row_count_halved_is_error(month, history):
    findings = check_row_count(profile_month(month.iloc[:1900]), profile_months(history))

    assert [(f.rule, f.severity) for f in findings] == [("row_count", ERROR)]
    assert findings[0].message.startswith("1900 rows, 0.47x the 4000 rows of 2026-09")
    assert "outside the allowed 0.50x to 2.00x" in findings[0].message


def test_row_count_doubled_is_error(month, history):
    doubled = pd.concat([month, month.assign(client_id=month["client_id"] + 4000)] * 2)

    findings = check_row_count(profile_month(doubled), profile_months(history))

    assert findings[0].severity == ERROR
    assert findings[0].numbers["ratio"] == 4.0


def test_row_count_band_from_limits(month, history):
    limits = BatchRuleLimits(row_count_error_band=(0.4, 3.0))

    findings = check_row_count(
        profile_month(month.iloc[:1900]), profile_months(history), limits=limits
    )

    assert [f.severity for f in findings] == [WARNING]


# ---------------------------------------------------------------------------
# <column>_null_share


def test_null_share_usual_nulls_pass(month, history):
    history = history.copy()
    history.loc[:99, "lifetime"] = np.nan
    month = month.copy()
    month.loc[:99, "lifetime"] = np.nan

    assert check_null_shares(profile_month(month), profile_months(history)) == []


def test_null_share_warning(month, history):
    month = month.copy()
    month.loc[:399, "lifetime"] = np.nan

    findings = check_null_shares(profile_month(month), profile_months(history))

    assert [(f.rule, f.severity) for f in findings] == [("lifetime_null_share", WARNING)]
    assert findings[0].count == 400
    assert findings[0].share == 0.1
    assert findings[0].column == "lifetime"
    assert "lifetime: 10.0% null (400 of 4000 rows), against at most 0.0%" in findings[0].message


def test_null_share_error(month, history):
    month = month.copy()
    month.loc[:1999, "age"] = np.nan

    findings = check_null_shares(profile_month(month), profile_months(history))

    assert [(f.rule, f.severity) for f in findings] == [("age_null_share", ERROR)]
    assert findings[0].numbers == {"null_share": 0.5, "history_max_null_share": 0.0}
    assert stops_run(findings)


def test_null_share_compares_worst_earlier_month(month, history):
    history = history.copy()
    history.loc[:399, "age"] = np.nan  # August: 10 % null
    month = month.copy()
    month.loc[:499, "age"] = np.nan  # 12.5 %

    assert check_null_shares(profile_month(month), profile_months(history)) == []


# ---------------------------------------------------------------------------
# <column>_new_values


def test_new_values_none(month, history):
    assert check_new_values(month, profile_months(history)) == []


def test_new_values_contract_period_three(month, history):
    month = month.copy()
    month.loc[[4, 9], "contract_period"] = 3

    findings = check_new_values(month, profile_months(history))

    assert [(f.rule, f.severity) for f in findings] == [("contract_period_new_values", WARNING)]
    assert findings[0].count == 2
    assert findings[0].examples == ({"value": 3.0, "rows": 2, "client_ids": [5, 10]},)
    assert findings[0].numbers == {"new_values": [3.0], "seen_values": [1.0, 6.0, 12.0]}
    assert "value(s) 3 in 2 row(s) never appeared" in findings[0].message
    assert not stops_run(findings)


def test_new_values_ignore_nulls(month, history):
    month = month.copy()
    month.loc[4, "gender"] = np.nan

    assert check_new_values(month, profile_months(history)) == []


# ---------------------------------------------------------------------------
# churned_share


def test_label_share_usual(month, history):
    assert check_label_share(profile_month(month), profile_months(history)) == []


def test_label_share_inverted_blocks_training(month, history):
    month = month.assign(churned=1 - month["churned"])

    findings = check_label_share(profile_month(month), profile_months(history))

    assert [(f.rule, f.severity) for f in findings] == [("churned_share", BLOCK_TRAINING)]
    finding = findings[0]
    assert finding.share == pytest.approx(0.73475)
    assert finding.count == 2939
    assert finding.numbers["history_churn_share"] == pytest.approx(0.26525)
    assert "73.5% of the 4000 labelled rows of 2026-10 churned" in finding.message
    assert "The labels look inverted" in finding.message
    assert f"set {CONFIRM_LABELS_SETTING}=2026-10 and rerun" in finding.message
    assert blocks_training(findings)
    assert not stops_run(findings)


def test_label_share_confirmed_is_warning(month, history):
    month = month.assign(churned=1 - month["churned"])

    findings = check_label_share(
        profile_month(month), profile_months(history), labels_confirmed=True
    )

    assert [f.severity for f in findings] == [WARNING]
    assert "confirmed" in findings[0].message
    assert not blocks_training(findings)


def test_label_share_shift_not_inverted(month, history):
    month = month.copy()
    churned = month.index[month["churned"] == 0][:1000]
    month.loc[churned, "churned"] = 1  # 51.5 % churn

    findings = check_label_share(profile_month(month), profile_months(history))

    assert [f.severity for f in findings] == [BLOCK_TRAINING]
    assert "inverted" not in findings[0].message


def test_label_share_too_few_labels(month, history):
    month = month.assign(churned=1 - month["churned"]).astype({"churned": "float64"})
    month.loc[40:, "churned"] = np.nan

    assert check_label_share(profile_month(month), profile_months(history)) == []


def test_label_share_unlabelled_month(month, history):
    assert (
        check_label_share(profile_month(month.drop(columns=["churned"])), profile_months(history))
        == []
    )


def test_check_batch_collects_every_rule(month, history):
    month = month.iloc[:1900].assign(churned=lambda f: 1 - f["churned"])
    month.loc[:999, "lifetime"] = np.nan
    month.loc[5, "contract_period"] = 3

    findings = check_batch(month, profile_months(history))

    assert [(f.rule, f.severity) for f in findings] == [
        ("row_count", ERROR),
        ("lifetime_null_share", ERROR),
        ("contract_period_new_values", WARNING),
        ("churned_share", BLOCK_TRAINING),
    ]


# ---------------------------------------------------------------------------
# Helpers for the caller


def test_raise_for_errors(month, history):
    findings = check_batch(month.iloc[:1900], profile_months(history))

    with pytest.raises(DataValidationError, match="0.47x the 4000 rows") as error:
        raise_for_errors(findings, dataset="questionnaires of 2026-10")

    assert error.value.batch_rule == "row_count"
    assert error.value.dataset == "questionnaires of 2026-10"
    assert str(error.value).startswith("questionnaires of 2026-10: 1900 rows, 0.47x")


def test_raise_for_errors_warnings_only(month, history):
    findings = check_batch(month.iloc[:3000], profile_months(history))

    assert [f.severity for f in findings] == [WARNING]
    assert raise_for_errors(findings, dataset="questionnaires of 2026-10") is None


def test_result_rows_of_findings(month, history):
    month = month.copy()
    month.loc[[4, 9], "contract_period"] = 3
    findings = check_batch(month, profile_months(history))

    rows = validation_result_rows(OCTOBER, findings=findings)

    assert len(rows) == 1
    assert rows[0]["rule"] == "contract_period_new_values"
    assert rows[0]["kind"] == "batch"
    assert rows[0]["severity"] == WARNING
    assert rows[0]["n_failed"] == 2
    assert rows[0]["share"] == 2 / 4000
    assert rows[0]["examples"] == '[{"value": 3.0, "rows": 2, "client_ids": [5, 10]}]'
