"""Tests of the questionnaire validation on the chain's real 4,000-row export."""

import datetime as dt
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gymchurn import validation
from gymchurn.schema import FEATURES
from gymchurn.validation import (
    FAILED_RULES,
    RULE_NAMES,
    DataValidationError,
    validate_questionnaires,
)

MONTH = dt.date(2026, 10, 1)


@pytest.fixture(scope="module")
def real_questionnaires(real_data: Path) -> pd.DataFrame:
    """Load the real export once, with snake_case names and the id columns added."""
    frame = pd.read_csv(real_data).rename(columns=str.lower)
    frame = frame.rename(columns={"churn": "churned"})
    n_rows = len(frame)
    frame.insert(0, "client_id", np.arange(1, n_rows + 1, dtype="int64"))
    frame.insert(1, "month", [MONTH] * n_rows)
    frame["row_number"] = np.arange(1, n_rows + 1, dtype="int64")
    return frame


@pytest.fixture
def questionnaires(real_questionnaires: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of the real export that a test may change."""
    return real_questionnaires.copy()


def _rule(report, name: str):
    return next(result for result in report.rules if result.rule == name)


def _failed_rules_of(report, client_id: int) -> list[str]:
    rows = report.quarantined[report.quarantined["client_id"] == client_id]
    assert len(rows) == 1
    return rows[FAILED_RULES].iloc[0]


def test_validate_questionnaires_real_file_all_valid(questionnaires):
    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert report.n_rows == 4000
    assert report.n_valid == 4000
    assert report.n_quarantined == 0
    assert [r.n_failed for r in report.rules] == [0] * len(RULE_NAMES)
    assert tuple(r.rule for r in report.rules) == RULE_NAMES


def test_validate_questionnaires_age_out_of_range(questionnaires):
    questionnaires.loc[10, "age"] = -3

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert report.n_valid == 3999
    assert report.quarantined["client_id"].tolist() == [11]
    assert _failed_rules_of(report, 11) == ["age_in_range"]
    assert _rule(report, "age_in_range").n_failed == 1
    assert _rule(report, "age_in_range").examples == ((11, -3),)
    assert _rule(report, "age_in_range").description == "age between 12 and 100"


def test_validate_questionnaires_range_bounds_inclusive(questionnaires):
    questionnaires.loc[0, "age"] = 12
    questionnaires.loc[1, "age"] = 100
    questionnaires.loc[2, "lifetime"] = 0

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert report.n_quarantined == 0


def test_validate_questionnaires_contract_end_after_period(questionnaires):
    questionnaires.loc[20, ["contract_period", "month_to_end_contract"]] = [6, 7]

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    rule = "month_to_end_contract_within_contract_period"
    assert report.quarantined["client_id"].tolist() == [21]
    assert _failed_rules_of(report, 21) == [rule]
    assert _rule(report, rule).examples == ((21, (6, 7)),)


def test_validate_questionnaires_null_lifetime(questionnaires):
    questionnaires.loc[30, "lifetime"] = np.nan

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert report.n_quarantined == 1
    assert _failed_rules_of(report, 31) == ["lifetime_not_null"]


def test_validate_questionnaires_null_contract_period(questionnaires):
    # A null in a column of the set and pair rules must not fail them as well.
    questionnaires.loc[30, "contract_period"] = np.nan

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert _failed_rules_of(report, 31) == ["contract_period_not_null"]


def test_validate_questionnaires_binary_flag_two(questionnaires):
    questionnaires.loc[40, "gender"] = 2

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert _failed_rules_of(report, 41) == ["gender_in_set"]
    assert _rule(report, "gender_in_set").description == "gender in {0, 1}"


def test_validate_questionnaires_unknown_contract_period(questionnaires):
    row = questionnaires.index[questionnaires["month_to_end_contract"] <= 2][0]
    questionnaires.loc[row, "contract_period"] = 2

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    client_id = questionnaires.loc[row, "client_id"]
    assert _failed_rules_of(report, client_id) == ["contract_period_in_set"]


def test_validate_questionnaires_duplicate_client_id(questionnaires):
    questionnaires.loc[50, "client_id"] = 7

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert report.n_valid == 3998
    assert report.quarantined["row_number"].tolist() == [7, 51]
    assert report.quarantined[FAILED_RULES].tolist() == [["client_month_unique"]] * 2
    assert _rule(report, "client_month_unique").n_failed == 2


def test_validate_questionnaires_client_in_two_months(questionnaires):
    questionnaires.loc[50, "client_id"] = 7
    questionnaires.loc[50, "month"] = dt.date(2026, 9, 1)

    report = validate_questionnaires(questionnaires, dataset="months 2026-09/10")

    assert report.n_quarantined == 0


def test_validate_questionnaires_datetime64_month(questionnaires):
    questionnaires["month"] = pd.Timestamp("2026-10-01")
    questionnaires.loc[50, "client_id"] = 7

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert report.quarantined["row_number"].tolist() == [7, 51]


def test_validate_questionnaires_nullable_int_feature(questionnaires):
    questionnaires["age"] = questionnaires["age"].astype("Int64")
    questionnaires.loc[60, "age"] = pd.NA
    questionnaires.loc[61, "age"] = 101

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert _failed_rules_of(report, 61) == ["age_not_null"]
    assert _failed_rules_of(report, 62) == ["age_in_range"]


def test_validate_questionnaires_two_rules_one_row(questionnaires):
    questionnaires.loc[70, "age"] = 0
    questionnaires.loc[70, "avg_class_frequency_total"] = 25.0

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert _failed_rules_of(report, 71) == [
        "age_in_range",
        "avg_class_frequency_total_in_range",
    ]


def test_validate_questionnaires_counts_add_up(questionnaires):
    questionnaires.loc[0:99, "age"] = 5
    questionnaires.loc[50:149, "lifetime"] = np.nan
    questionnaires.loc[200, "client_id"] = 300

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert report.n_quarantined == 152
    assert report.n_valid + report.n_quarantined == report.n_rows
    assert report.quarantined[FAILED_RULES].map(len).min() >= 1
    assert report.quarantined[FAILED_RULES].map(sorted).tolist() == (
        report.quarantined[FAILED_RULES].tolist()
    )
    all_ids = sorted([*report.valid["row_number"], *report.quarantined["row_number"]])
    assert all_ids == list(range(1, 4001))


def test_validate_questionnaires_keeps_columns(questionnaires):
    questionnaires.loc[5, "age"] = -3

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    columns = list(questionnaires.columns)
    assert list(report.valid.columns) == columns
    assert list(report.quarantined.columns) == [*columns, FAILED_RULES]
    assert report.valid["age"].dtype == questionnaires["age"].dtype


def test_validate_questionnaires_leaves_input_unchanged(questionnaires):
    questionnaires.loc[5, "age"] = -3
    before = questionnaires.copy()

    validate_questionnaires(questionnaires, dataset="month 2026-10")

    pd.testing.assert_frame_equal(questionnaires, before)


def test_validate_questionnaires_summary_names_failed_rule(questionnaires):
    questionnaires.loc[10, "age"] = -3

    summary = validate_questionnaires(questionnaires, dataset="month 2026-10").summary()

    assert summary.splitlines()[0] == ("month 2026-10: 4000 rows, 3999 valid, 1 quarantined")
    assert "age_in_range (age between 12 and 100): 1 row" in summary
    assert "client ids 11" in summary


def test_validate_questionnaires_missing_column(questionnaires):
    frame = questionnaires.drop(columns=["lifetime", "phone"])

    with pytest.raises(DataValidationError, match="phone, lifetime") as error:
        validate_questionnaires(frame, dataset="month 2026-10")

    assert "month 2026-10" in str(error.value)
    assert error.value.rules == ()


def test_validate_questionnaires_zero_rows(questionnaires):
    with pytest.raises(DataValidationError, match="no data rows"):
        validate_questionnaires(questionnaires.iloc[0:0], dataset="month 2026-10")


def test_validate_questionnaires_too_many_invalid_rows(questionnaires):
    questionnaires.loc[0:2399, "age"] = -3

    with pytest.raises(DataValidationError, match=r"60\.0% of rows") as error:
        validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert "age_in_range 2400" in str(error.value)
    assert [(r.rule, r.n_failed) for r in error.value.rules] == [("age_in_range", 2400)]


def test_validate_questionnaires_invalid_share_at_limit(questionnaires):
    questionnaires.loc[0:1999, "age"] = -3

    report = validate_questionnaires(questionnaires, dataset="month 2026-10", max_invalid_share=0.5)

    assert report.n_quarantined == 2000


def test_validate_questionnaires_text_feature(questionnaires):
    questionnaires["age"] = questionnaires["age"].astype(str)

    with pytest.raises(DataValidationError, match=r"age \(str\)"):
        validate_questionnaires(questionnaires, dataset="month 2026-10")


def test_validate_questionnaires_duplicate_row_number(questionnaires):
    questionnaires.loc[3, "row_number"] = 1

    with pytest.raises(DataValidationError, match="row_number has duplicate"):
        validate_questionnaires(questionnaires, dataset="month 2026-10")


def test_validate_questionnaires_invalid_max_share(questionnaires):
    with pytest.raises(ValueError, match="max_invalid_share 1.5"):
        validate_questionnaires(questionnaires, dataset="month 2026-10", max_invalid_share=1.5)


def test_validate_questionnaires_opens_no_connection(questionnaires, monkeypatch):
    def refuse_connection(*args, **kwargs):
        raise AssertionError(f"network connection attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse_connection)
    monkeypatch.setattr(socket, "create_connection", refuse_connection)
    # A fresh context, so that creating it also runs under the guard.
    validation._gx_objects.cache_clear()

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert report.n_valid == 4000


def test_validate_questionnaires_no_stderr_output(questionnaires, capfd):
    validation._gx_objects.cache_clear()

    validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert capfd.readouterr().err == ""


def _gx_context():
    batch_definition, _ = validation._gx_objects()
    return batch_definition.data_asset.datasource.data_context


def test_gx_context_analytics_off():
    assert _gx_context().variables.analytics_enabled is False


def test_gx_context_progress_bars_off():
    progress_bars = _gx_context().variables.progress_bars

    assert progress_bars.globally is False
    assert progress_bars.metric_calculations is False


def test_gx_suite_has_one_expectation_per_rule():
    _, suite = validation._gx_objects()

    assert len(suite.expectations) == len(RULE_NAMES)
    assert len(set(RULE_NAMES)) == len(RULE_NAMES)
    assert {f"{feature}_not_null" for feature in FEATURES} <= set(RULE_NAMES)


def test_validate_questionnaires_unhashable_month(questionnaires):
    # Lists cannot be hashed, so GX cannot look for duplicate (client_id, month).
    questionnaires["month"] = [[2026, 10]] * len(questionnaires)

    with pytest.raises(DataValidationError, match="client_month_unique could not be"):
        validate_questionnaires(questionnaires, dataset="month 2026-10")
