"""Tests of the questionnaire validation on the chain's real 4,000-row export."""

import datetime as dt
import gc
import json
import re
import socket
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gymchurn import validation
from gymchurn.batch_rules import BLOCK_TRAINING, Finding
from gymchurn.loader import read_questionnaire_csv
from gymchurn.schema import (
    BINARY_FEATURES,
    CONTRACT_PERIODS,
    FEATURES,
    INTEGER_FEATURES,
    VALUE_RANGES,
)
from gymchurn.validation import (
    COLUMN_RULE_NAMES,
    FAILED_RULES,
    FAILED_VALUES,
    RESULT_COLUMNS,
    RULE_NAMES,
    DataDocsError,
    DataValidationError,
    build_data_docs,
    validate_questionnaires,
    validation_result_rows,
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
    assert list(report.quarantined.columns) == [*columns, FAILED_RULES, FAILED_VALUES]
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
    batch_definition = validation._gx_objects().batch_definition
    return batch_definition.data_asset.datasource.data_context


def test_gx_context_analytics_off():
    assert _gx_context().variables.analytics_enabled is False


def test_gx_context_progress_bars_off():
    progress_bars = _gx_context().variables.progress_bars

    assert progress_bars.globally is False
    assert progress_bars.metric_calculations is False


def test_gx_suites_have_one_expectation_per_rule():
    objects = validation._gx_objects()
    gx_rule_names = [
        expectation.meta["gymchurn_rule"]
        for suite in (objects.row_suite, objects.fault_suite)
        for expectation in suite.expectations
    ]

    # duplicate_row is the one row rule checked with pandas instead of GX.
    assert sorted([*gx_rule_names, "duplicate_row"]) == sorted(RULE_NAMES)
    assert len(set(RULE_NAMES)) == len(RULE_NAMES)
    assert {f"{feature}_not_null" for feature in FEATURES} <= set(RULE_NAMES)
    assert {f"{feature}_parseable" for feature in FEATURES} <= set(RULE_NAMES)
    assert len(objects.column_suite.expectations) == len(COLUMN_RULE_NAMES)


def test_validate_questionnaires_unhashable_month(questionnaires):
    questionnaires["month"] = [[2026, 10]] * len(questionnaires)

    with pytest.raises(DataValidationError, match="column month must hold dates") as error:
        validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert error.value.batch_rule == "column_types"


def test_gx_exception_message_both_shapes():
    flat = {"raised_exception": True, "exception_message": "boom"}
    keyed = {("column_values.unique", "abc"): {"raised_exception": True, "exception_message": "x"}}
    passed = {"raised_exception": False, "exception_message": None}

    assert validation._gx_exception_message(flat) == "boom"
    assert validation._gx_exception_message(keyed) == "x"
    assert validation._gx_exception_message(passed) is None
    assert validation._gx_exception_message({}) is None


# ---------------------------------------------------------------------------
# One damaged row per rule: the row is quarantined, with its client id, the rule
# and the failing value.


def _plain_row(questionnaires) -> int:
    """Index of a row with a 1-month contract ending this month, so that no pair rule
    fires when one of the two values is damaged alone."""
    plain = (questionnaires["contract_period"] == 1) & (
        questionnaires["month_to_end_contract"] == 1
    )
    return int(questionnaires.index[plain][0])


_RANGE_CASES = [
    pytest.param(column, value, id=f"{column}={value:g}")
    for column, (low, high) in VALUE_RANGES.items()
    for value in (low - 1, high + 1)
]


@pytest.mark.parametrize("column", [*FEATURES, "month"])
def test_row_rule_not_null(questionnaires, column):
    row = _plain_row(questionnaires)
    questionnaires[column] = questionnaires[column].astype(object)
    questionnaires.loc[row, column] = None
    if column != "month":
        questionnaires[column] = pd.to_numeric(questionnaires[column])

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    _assert_quarantined(report, row + 1, f"{column}_not_null", {column: None})


@pytest.mark.parametrize("column", [*BINARY_FEATURES, "contract_period", "churned"])
def test_row_rule_in_set(questionnaires, column):
    row = _plain_row(questionnaires)
    value = 3 if column == "churned" else 2
    questionnaires.loc[row, column] = value

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    _assert_quarantined(report, row + 1, f"{column}_in_set", {column: value})


@pytest.mark.parametrize(("column", "value"), _RANGE_CASES)
def test_row_rule_in_range(questionnaires, column, value):
    row = _plain_row(questionnaires)
    if not float(value).is_integer():
        questionnaires[column] = questionnaires[column].astype("float64")
    questionnaires.loc[row, column] = value

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    _assert_quarantined(report, row + 1, f"{column}_in_range", {column: value})


def test_row_rule_contract_end(questionnaires):
    row = _plain_row(questionnaires)
    questionnaires.loc[row, ["contract_period", "month_to_end_contract"]] = [3, 6]

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    rule = "month_to_end_contract_within_contract_period"
    _assert_quarantined(report, row + 1, rule, {"contract_period": 3, "month_to_end_contract": 6})


def test_row_rule_client_id_not_null(questionnaires):
    questionnaires["client_id"] = questionnaires["client_id"].astype("Int64")
    questionnaires.loc[99, "client_id"] = pd.NA

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    quarantined = report.quarantined
    assert quarantined["row_number"].tolist() == [100]
    assert quarantined[FAILED_RULES].iloc[0] == ["client_id_not_null"]
    assert quarantined[FAILED_VALUES].iloc[0] == {"client_id_not_null": {"client_id": None}}


def _assert_quarantined(report, client_id, rule, values):
    rows = report.quarantined[report.quarantined["client_id"] == client_id]
    assert len(rows) == 1
    assert rule in rows[FAILED_RULES].iloc[0]
    assert rows[FAILED_VALUES].iloc[0][rule] == values
    result = _rule(report, rule)
    assert result.n_failed == 1
    shown = next(iter(values.values())) if len(values) == 1 else tuple(values.values())
    assert result.examples == ((client_id, shown),)
    assert f"{rule} (" in report.summary()
    assert f"client ids {client_id} (" in report.summary()


def test_failed_values_one_entry_per_rule(questionnaires):
    questionnaires.loc[70, "age"] = 0
    questionnaires.loc[70, "avg_class_frequency_total"] = 25.0

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert report.quarantined[FAILED_VALUES].iloc[0] == {
        "age_in_range": {"age": 0},
        "avg_class_frequency_total_in_range": {"avg_class_frequency_total": 25.0},
    }


def test_failed_values_keys_match_failed_rules(questionnaires):
    questionnaires.loc[0:9, "age"] = 5
    questionnaires.loc[5:14, "lifetime"] = np.nan
    questionnaires.loc[20, "client_id"] = 30

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    keys = report.quarantined[FAILED_VALUES].map(lambda values: list(values))
    assert keys.tolist() == report.quarantined[FAILED_RULES].tolist()


def test_gx_result_lists_failing_row_numbers(questionnaires):
    questionnaires.loc[10, "age"] = -3
    questionnaires.loc[20, "age"] = 101

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    row_suite = next(r for r in report.gx_results if r.suite_name == "questionnaire_rows")
    age = next(
        r
        for r in row_suite.results
        if r.expectation_config.type == "expect_column_values_to_be_between"
        and r.expectation_config.kwargs["column"] == "age"
    )
    assert age.result["unexpected_index_column_names"] == ["row_number"]
    assert age.result["unexpected_index_list"] == [{"row_number": [11, 21]}]
    assert _rule(report, "age_in_range").examples == ((11, -3), (21, 101))


def test_run_suite_frees_frame_after_run(questionnaires):
    keys = validation._BatchKeys.of(questionnaires)
    gx_frame = validation._prepare_for_gx(questionnaires, keys, slice(0, 100))
    reference = weakref.ref(gx_frame)

    validation._run_suite(
        gx_frame, "questionnaire_rows", "month 2026-10", validation._RESULT_FORMAT
    )
    del gx_frame
    gc.collect()

    assert reference() is None


# ---------------------------------------------------------------------------
# Column presence and dtype


def test_column_rule_float_client_id(questionnaires):
    questionnaires["client_id"] = questionnaires["client_id"].astype("float64")

    with pytest.raises(DataValidationError, match=r"client_id \(float64\)") as error:
        validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert error.value.batch_rule == "column_types"
    assert [r.suite_name for r in error.value.gx_results] == ["questionnaire_columns"]


def test_column_rule_text_churned(questionnaires):
    questionnaires["churned"] = questionnaires["churned"].map({0: "no", 1: "yes"})

    with pytest.raises(DataValidationError, match=r"churned \(str\)"):
        validate_questionnaires(questionnaires, dataset="month 2026-10")


def test_column_rule_text_month(questionnaires):
    questionnaires["month"] = "2026-10"

    with pytest.raises(DataValidationError, match="kind 'string'") as error:
        validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert error.value.batch_rule == "column_types"


def test_column_rule_accepts_loader_dtypes(questionnaires):
    for column in ["age", "lifetime", "contract_period"]:
        questionnaires[column] = questionnaires[column].astype("Int64")
    questionnaires["gender"] = questionnaires["gender"].astype(bool)
    questionnaires["churned"] = questionnaires["churned"].astype("float64")

    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    assert report.n_valid == 4000


def test_column_rule_missing_column_names_rule(questionnaires):
    frame = questionnaires.drop(columns=["row_number"])

    with pytest.raises(DataValidationError, match="missing required columns: row_number") as error:
        validate_questionnaires(frame, dataset="month 2026-10")

    assert error.value.batch_rule == "required_columns"
    assert error.value.report is None


def test_validate_questionnaires_without_churned(questionnaires):
    report = validate_questionnaires(
        questionnaires.drop(columns=["churned"]), dataset="month 2026-10"
    )

    assert report.n_valid == 4000
    assert _rule(report, "churned_in_set").n_failed == 0


# ---------------------------------------------------------------------------
# Load faults


def _faults(*records) -> pd.DataFrame:
    return pd.DataFrame.from_records(
        records, columns=["client_id", "column", "line", "raw_value", "fault"]
    )


def test_fault_quarantines_row_with_raw_value(questionnaires):
    questionnaires.loc[30, "lifetime"] = np.nan
    faults = _faults((31, "lifetime", 32, "abc", "not_a_number"))

    report = validate_questionnaires(questionnaires, dataset="month 2026-10", faults=faults)

    assert report.quarantined["client_id"].tolist() == [31]
    assert report.quarantined[FAILED_RULES].iloc[0] == ["lifetime_not_null", "lifetime_parseable"]
    assert report.quarantined[FAILED_VALUES].iloc[0] == {
        "lifetime_not_null": {"lifetime": None},
        "lifetime_parseable": {"lifetime": "abc"},
    }
    assert _rule(report, "lifetime_parseable").examples == ((31, "abc"),)
    assert "lifetime_parseable (lifetime parsed from the source file)" in report.summary()
    assert "31 (lifetime='abc')" in report.summary()


def test_fault_suite_in_gx_results(questionnaires):
    questionnaires.loc[30, "age"] = np.nan
    faults = _faults((31, "age", 32, "3O", "not_a_number"))

    report = validate_questionnaires(questionnaires, dataset="month 2026-10", faults=faults)

    suites = [result.suite_name for result in report.gx_results]
    assert suites == ["questionnaire_columns", "questionnaire_rows", "questionnaire_load_faults"]
    fault_suite = report.gx_results[2]
    assert fault_suite.statistics["unsuccessful_expectations"] == 1


def test_fault_empty_raw_value_still_quarantines(questionnaires):
    questionnaires.loc[40, "age"] = np.nan
    faults = _faults((41, "age", 42, None, "missing"))

    report = validate_questionnaires(questionnaires, dataset="month 2026-10", faults=faults)

    assert report.quarantined[FAILED_VALUES].iloc[0]["age_parseable"] == {"age": ""}


def test_fault_on_parsed_cell_quarantines(questionnaires):
    # The loader nulls a faulty cell, but a fault on a cell with a value still counts.
    faults = _faults((51, "phone", 52, "yes", "not_a_number"))

    report = validate_questionnaires(questionnaires, dataset="month 2026-10", faults=faults)

    assert report.quarantined["client_id"].tolist() == [51]
    assert report.quarantined[FAILED_RULES].iloc[0] == ["phone_parseable"]


def test_fault_unknown_client_is_unmatched(questionnaires):
    faults = _faults((99999, "age", 5000, "x", "not_a_number"), (None, "client_id", 7, "?", "x"))

    report = validate_questionnaires(questionnaires, dataset="month 2026-10", faults=faults)

    assert report.n_quarantined == 0
    assert report.unmatched_faults["line"].tolist() == [5000, 7]
    assert "2 load fault(s) name no row of the batch, for example line(s) 5000, 7" in (
        report.summary()
    )


def test_fault_matched_by_month(questionnaires):
    september = questionnaires.copy()
    september["month"] = dt.date(2026, 9, 1)
    september["row_number"] += 4000
    frame = pd.concat([september, questionnaires], ignore_index=True)
    faults = _faults((8, "age", 9, "x", "not_a_number")).assign(month=dt.date(2026, 9, 1))

    report = validate_questionnaires(frame, dataset="months 2026-09/10", faults=faults)

    assert report.quarantined["row_number"].tolist() == [4008]


def test_fault_table_missing_column(questionnaires):
    faults = _faults((8, "age", 9, "x", "not_a_number")).drop(columns=["raw_value"])

    with pytest.raises(ValueError, match="missing columns raw_value"):
        validate_questionnaires(questionnaires, dataset="month 2026-10", faults=faults)


def test_fault_table_unknown_column(questionnaires):
    faults = _faults((8, "Age", 9, "x", "not_a_number"))

    with pytest.raises(ValueError, match="unknown column name"):
        validate_questionnaires(questionnaires, dataset="month 2026-10", faults=faults)


def test_fault_table_empty(questionnaires):
    report = validate_questionnaires(questionnaires, dataset="month 2026-10", faults=_faults())

    assert report.n_valid == 4000
    assert len(report.gx_results) == 2
    assert report.unmatched_faults.empty


# ---------------------------------------------------------------------------
# Duplicates policy


def _with_copies(questionnaires, rows, **changes) -> pd.DataFrame:
    copies = questionnaires.iloc[rows].assign(**changes)
    frame = pd.concat([questionnaires, copies], ignore_index=True)
    frame["row_number"] = np.arange(1, len(frame) + 1)
    return frame


def test_duplicate_row_first_copy_scored(questionnaires):
    frame = _with_copies(questionnaires, [5])

    report = validate_questionnaires(frame, dataset="month 2026-10")

    assert report.n_quarantined == 1
    assert report.quarantined["row_number"].tolist() == [4001]
    assert report.quarantined[FAILED_RULES].iloc[0] == ["duplicate_row"]
    assert 6 in report.valid["client_id"].tolist()
    assert _rule(report, "duplicate_row").n_failed == 1
    assert _rule(report, "client_month_unique").n_failed == 0


def test_duplicate_row_three_copies(questionnaires):
    frame = _with_copies(questionnaires, [5, 5])

    report = validate_questionnaires(frame, dataset="month 2026-10")

    assert report.quarantined["row_number"].tolist() == [4001, 4002]
    assert _rule(report, "duplicate_row").n_failed == 2
    assert _rule(report, "duplicate_row").examples[0][0] == 6


def test_duplicate_row_with_conflicting_row(questionnaires):
    frame = _with_copies(questionnaires, [5])
    conflict = frame.iloc[[6]].assign(client_id=6, row_number=4002)
    frame = pd.concat([frame, conflict], ignore_index=True)

    report = validate_questionnaires(frame, dataset="month 2026-10")

    rules = dict(
        zip(report.quarantined["row_number"], report.quarantined[FAILED_RULES], strict=True)
    )
    assert rules == {
        6: ["client_month_unique"],
        4001: ["duplicate_row"],
        4002: ["client_month_unique"],
    }


def test_duplicate_row_other_label_conflicts(questionnaires):
    label = 1 - questionnaires.loc[5, "churned"]
    frame = _with_copies(questionnaires, [5], churned=label)

    report = validate_questionnaires(frame, dataset="month 2026-10")

    assert report.quarantined["row_number"].tolist() == [6, 4001]
    assert report.quarantined[FAILED_RULES].tolist() == [["client_month_unique"]] * 2


def test_identical_answers_counted_not_quarantined(questionnaires):
    frame = _with_copies(questionnaires, [5], client_id=9001)

    report = validate_questionnaires(frame, dataset="month 2026-10")

    result = _rule(report, "identical_answers")
    assert report.n_quarantined == 0
    assert report.n_identical_answers == 2
    assert result.severity == "warning"
    assert result.examples == ((6, (9001,)), (9001, (6,)))
    assert "warning only, rows kept" in report.summary()
    assert "6 (same answers as 9001)" in report.summary()


def test_identical_answers_do_not_count_toward_share(questionnaires):
    frame = _with_copies(questionnaires, list(range(4000)), client_id=np.arange(5001, 9001))

    report = validate_questionnaires(frame, dataset="month 2026-10", max_invalid_share=0.0)

    assert report.n_identical_answers == 8000
    assert report.n_valid == 8000


# ---------------------------------------------------------------------------
# Data Docs


def _page_text(path: Path) -> str:
    html = path.read_text(encoding="utf-8")
    html = re.sub(r"<(script|style).*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_build_data_docs_names_failing_rule(questionnaires, tmp_path):
    questionnaires.loc[10, "age"] = -3
    report = validate_questionnaires(questionnaires, dataset="month 2026-10")

    index = build_data_docs([report], tmp_path / "docs")

    assert index == tmp_path / "docs" / "index.html"
    assert index.is_file()
    assert "questionnaire_rows" in index.read_text(encoding="utf-8")
    pages = sorted((tmp_path / "docs" / "validations" / "questionnaire_rows").rglob("*.html"))
    assert len(pages) == 1
    text = _page_text(pages[0])
    assert "month 2026-10" in text
    assert "age between 12 and 100 1 unexpected values found" in text
    assert "Status: Failed" in text


def test_build_data_docs_of_rejected_batch(questionnaires, tmp_path):
    with pytest.raises(DataValidationError) as error:
        validate_questionnaires(questionnaires.drop(columns=["phone"]), dataset="month 2026-10")

    index = build_data_docs([error.value], tmp_path)

    pages = list((tmp_path / "validations" / "questionnaire_columns").rglob("*.html"))
    assert index.is_file()
    assert len(pages) == 1
    assert "column phone present" in _page_text(pages[0])


def test_build_data_docs_lists_only_given_results(questionnaires, tmp_path):
    first = validate_questionnaires(questionnaires, dataset="scoring 2026-10")
    second = validate_questionnaires(questionnaires, dataset="training before 2026-10")
    build_data_docs([first], tmp_path / "one")

    build_data_docs([first, second], tmp_path / "two")

    assert len(list((tmp_path / "one" / "validations").rglob("*.html"))) == 2
    assert len(list((tmp_path / "two" / "validations").rglob("*.html"))) == 4


def test_build_data_docs_file_path_as_run_name(questionnaires, tmp_path):
    report = validate_questionnaires(questionnaires, dataset="/exports/clubs/clients 2026-10.csv")

    build_data_docs([report], tmp_path)

    pages = list((tmp_path / "validations" / "questionnaire_rows").rglob("*.html"))
    assert len(pages) == 1
    # validations/SUITE/RUN_NAME/RUN_TIME/BATCH.html
    assert pages[0].parent.parent.name == "clients 2026-10.csv"


def test_build_data_docs_render_failure_raises(questionnaires, tmp_path, monkeypatch):
    report = validate_questionnaires(questionnaires, dataset="/exports/clients.csv")
    # Without the sanitised key the path's separators reach GX's store.
    monkeypatch.setattr(validation, "_safe_key", lambda name, default: name or default)

    with pytest.raises(DataDocsError, match="failed to write 2 page") as raised:
        build_data_docs([report], tmp_path)

    assert "must not contain substrings" in str(raised.value)
    assert "Traceback" not in str(raised.value)


def test_build_data_docs_without_results(tmp_path):
    with pytest.raises(ValueError, match="no GX validation results"):
        build_data_docs([], tmp_path)


# ---------------------------------------------------------------------------
# Rows for churn.validation_results


def test_result_rows_report_and_finding(questionnaires):
    questionnaires.loc[10, "age"] = -3
    report = validate_questionnaires(questionnaires, dataset="scoring")
    finding = Finding(
        "churned_share",
        BLOCK_TRAINING,
        "labels look inverted",
        column="churned",
        count=2960,
        share=0.74,
        numbers={"churn_share": 0.74},
    )

    rows = validation_result_rows(MONTH, reports=[report], findings=[finding])

    assert len(rows) == len(RULE_NAMES) + 1
    assert all(tuple(row) == RESULT_COLUMNS for row in rows)
    age = next(row for row in rows if row["rule"] == "age_in_range")
    assert age["kind"] == "row"
    assert age["severity"] == "quarantine"
    assert age["n_failed"] == 1
    assert age["share"] == 1 / 4000
    assert age["month"] == MONTH
    assert age["dataset"] == "scoring"
    assert json.loads(age["examples"]) == [{"client_id": 11, "values": {"age": -3}}]
    assert json.loads(age["numbers"]) == {"n_rows": 4000}
    assert age["message"] == "age between 12 and 100: 1 row(s) quarantined"
    batch = rows[-1]
    assert batch["kind"] == "batch"
    assert batch["severity"] == BLOCK_TRAINING
    assert batch["n_failed"] == 2960
    assert batch["dataset"] == "questionnaires of 2026-10"
    assert json.loads(batch["numbers"]) == {"churn_share": 0.74}


def test_result_rows_dates_and_nulls_as_json(questionnaires):
    questionnaires.loc[50, "client_id"] = 7
    questionnaires.loc[60, "lifetime"] = np.nan
    report = validate_questionnaires(questionnaires, dataset="scoring")

    rows = {row["rule"]: row for row in validation_result_rows(MONTH, reports=[report])}

    unique = json.loads(rows["client_month_unique"]["examples"])
    assert unique[0] == {"client_id": 7, "values": {"client_id": 7, "month": "2026-10-01"}}
    assert json.loads(rows["lifetime_not_null"]["examples"]) == [
        {"client_id": 61, "values": {"lifetime": None}}
    ]
    assert rows["age_in_range"]["message"] == "age between 12 and 100: passed"


def test_result_rows_rejected_batch(questionnaires):
    questionnaires.loc[0:2399, "age"] = -3
    with pytest.raises(DataValidationError) as error:
        validate_questionnaires(questionnaires, dataset="scoring")
    run_id = validation.uuid.uuid4()

    rows = validation_result_rows(MONTH, run_id=run_id, error=error.value)

    assert len(rows) == len(RULE_NAMES) + 1
    assert {row["run_id"] for row in rows} == {run_id}
    assert rows[-1]["rule"] == "max_invalid_share"
    assert rows[-1]["severity"] == "error"
    assert "60.0% of rows" in rows[-1]["message"]
    assert next(r for r in rows if r["rule"] == "age_in_range")["n_failed"] == 2400


# ---------------------------------------------------------------------------
# Property-based: random damage never loses a row


_N_PROPERTY_ROWS = 1000
_SETS = {**{c: {0, 1} for c in BINARY_FEATURES}, "contract_period": set(CONTRACT_PERIODS)}


@pytest.fixture(scope="module")
def loaded_rows(real_data) -> pd.DataFrame:
    """The first rows of the real file as the loader reads them, with month and row number."""
    frame = read_questionnaire_csv(real_data).questionnaires.head(_N_PROPERTY_ROWS).copy()
    frame["month"] = [MONTH] * len(frame)
    frame["row_number"] = np.arange(1, len(frame) + 1, dtype="int64")
    return frame


@st.composite
def _damage(draw):
    row = draw(st.integers(0, _N_PROPERTY_ROWS - 1))
    column = draw(st.sampled_from(FEATURES))
    if column in INTEGER_FEATURES:
        value = draw(st.one_of(st.none(), st.integers(-5, 1300)))
    else:
        value = draw(st.one_of(st.none(), st.floats(-10.0, 200_000.0, allow_nan=False)))
    return row, column, value


def _breaks_row_rule(column, value) -> str | None:
    """Return the rule a single damaged value must break, or None if it is allowed."""
    if value is None:
        return f"{column}_not_null"
    if column in _SETS and value not in _SETS[column]:
        return f"{column}_in_set"
    if column in VALUE_RANGES:
        low, high = VALUE_RANGES[column]
        if not low <= value <= high:
            return f"{column}_in_range"
    return None


def _assert_no_row_lost(report, frame):
    assert report.n_valid + report.n_quarantined == report.n_rows == len(frame)
    row_numbers = sorted([*report.valid["row_number"], *report.quarantined["row_number"]])
    assert row_numbers == sorted(frame["row_number"])
    for rules, values in zip(
        report.quarantined[FAILED_RULES], report.quarantined[FAILED_VALUES], strict=True
    ):
        assert rules
        assert list(values) == rules


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    damages=st.lists(_damage(), min_size=1, max_size=15),
    copies=st.lists(st.integers(0, _N_PROPERTY_ROWS - 1), max_size=3),
)
def test_random_damage_never_loses_a_row(loaded_rows, damages, copies):
    frame = loaded_rows.copy()
    for row, column, value in damages:
        frame.loc[row, column] = pd.NA if value is None else value
    frame = pd.concat([frame, frame.iloc[copies]], ignore_index=True)
    frame["row_number"] = np.arange(1, len(frame) + 1, dtype="int64")

    report = validate_questionnaires(frame, dataset="damaged", max_invalid_share=1.0)

    _assert_no_row_lost(report, frame)
    quarantined = dict(
        zip(report.quarantined["row_number"], report.quarantined[FAILED_RULES], strict=True)
    )
    final = {(row, column): frame.loc[row, column] for row, column, _ in damages}
    for (row, column), value in final.items():
        rule = _breaks_row_rule(column, None if pd.isna(value) else value)
        if rule is not None:
            assert rule in quarantined.get(row + 1, [])
    for offset in range(len(copies)):
        assert "duplicate_row" in quarantined[_N_PROPERTY_ROWS + 1 + offset]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    faulty=st.lists(
        st.tuples(st.integers(0, _N_PROPERTY_ROWS - 1), st.sampled_from(FEATURES)),
        min_size=1,
        max_size=10,
        unique=True,
    ),
    raw=st.text(min_size=0, max_size=6),
)
def test_random_faults_quarantine_with_raw_value(loaded_rows, faulty, raw):
    frame = loaded_rows.copy()
    for row, column in faulty:
        frame.loc[row, column] = pd.NA
    faults = _faults(
        *((int(frame.loc[row, "client_id"]), column, row + 2, raw, "x") for row, column in faulty)
    )

    report = validate_questionnaires(frame, dataset="faulty", max_invalid_share=1.0, faults=faults)

    _assert_no_row_lost(report, frame)
    values = dict(
        zip(report.quarantined["row_number"], report.quarantined[FAILED_VALUES], strict=True)
    )
    for row, column in faulty:
        assert values[row + 1][f"{column}_parseable"] == {column: raw}
        assert values[row + 1][f"{column}_not_null"] == {column: None}
    assert report.n_quarantined == len({row for row, _ in faulty})


# ---------------------------------------------------------------------------
# Validation in slices: with chunk_rows, the same outcome as one run on the batch


def _gx_fields(result) -> dict:
    """Return a GX suite result as JSON, without the times that differ between runs."""
    fields = result.to_json_dict()
    fields["meta"]["run_id"].pop("run_time")
    fields["meta"]["batch_markers"].pop("ge_load_time")
    return fields


def _assert_same_outcome(sliced, whole):
    assert sliced.dataset == whole.dataset
    assert sliced.n_rows == whole.n_rows
    assert sliced.rules == whole.rules
    pd.testing.assert_frame_equal(sliced.valid, whole.valid)
    pd.testing.assert_frame_equal(sliced.quarantined, whole.quarantined)
    if whole.unmatched_faults is None:
        assert sliced.unmatched_faults is None
    else:
        pd.testing.assert_frame_equal(sliced.unmatched_faults, whole.unmatched_faults)
    assert [r.suite_name for r in sliced.gx_results] == [r.suite_name for r in whole.gx_results]
    for sliced_result, whole_result in zip(sliced.gx_results, whole.gx_results, strict=True):
        assert _gx_fields(sliced_result) == _gx_fields(whole_result)
    assert validation_result_rows(MONTH, reports=[sliced]) == validation_result_rows(
        MONTH, reports=[whole]
    )


def _damaged_across_borders(questionnaires) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Damage rows on both sides of the borders of slices of 333 and 1000 rows.

    Returns:
        The batch of 4,004 rows and its load faults, one of which names no row.
    """
    frame = questionnaires.copy()
    frame.loc[[332, 333], "age"] = -3
    frame.loc[[999, 1000], "lifetime"] = np.nan
    frame.loc[2000, "gender"] = 2
    frame.loc[1500, ["contract_period", "month_to_end_contract"]] = [1, 6]
    # Client 7 again, with other answers, far from the first row of client 7.
    frame.loc[3500, "client_id"] = 7
    exact_repeats = frame.iloc[[5, 332, 999]]
    same_answers = frame.iloc[[20]].assign(client_id=9001)
    frame = pd.concat([frame, exact_repeats, same_answers], ignore_index=True)
    frame["row_number"] = np.arange(1, len(frame) + 1, dtype="int64")
    faults = _faults(
        (15, "phone", 16, "yes", "not_a_number"),
        (2501, "age", 2502, "3O", "not_a_number"),
        (9001, "lifetime", 4005, "", "missing"),
        (99999, "age", 5000, "x", "not_a_number"),
    )
    return frame, faults


@pytest.mark.parametrize("chunk_rows", [333, 1000])
def test_chunk_rows_real_file_same_outcome(questionnaires, chunk_rows):
    whole = validate_questionnaires(questionnaires, dataset="month 2026-10")

    sliced = validate_questionnaires(questionnaires, dataset="month 2026-10", chunk_rows=chunk_rows)

    assert sliced.n_valid == 4000
    _assert_same_outcome(sliced, whole)


@pytest.mark.parametrize("chunk_rows", [333, 1000])
def test_chunk_rows_damage_across_borders(questionnaires, chunk_rows):
    frame, faults = _damaged_across_borders(questionnaires)
    whole = validate_questionnaires(frame, dataset="month 2026-10", faults=faults)

    sliced = validate_questionnaires(
        frame, dataset="month 2026-10", faults=faults, chunk_rows=chunk_rows
    )

    _assert_same_outcome(sliced, whole)
    rules = dict(
        zip(sliced.quarantined["row_number"], sliced.quarantined[FAILED_RULES], strict=True)
    )
    assert rules == {
        7: ["client_month_unique"],
        15: ["phone_parseable"],
        333: ["age_in_range"],
        334: ["age_in_range"],
        1000: ["lifetime_not_null"],
        1001: ["lifetime_not_null"],
        1501: ["month_to_end_contract_within_contract_period"],
        2001: ["gender_in_set"],
        2501: ["age_parseable"],
        3501: ["client_month_unique"],
        4001: ["duplicate_row"],
        4002: ["duplicate_row"],
        4003: ["duplicate_row"],
        4004: ["lifetime_parseable"],
    }
    assert _rule(sliced, "identical_answers").examples == ((21, (9001,)), (9001, (21,)))
    assert sliced.unmatched_faults["line"].tolist() == [5000]


def test_chunk_rows_merged_gx_result(questionnaires):
    frame, faults = _damaged_across_borders(questionnaires)

    report = validate_questionnaires(frame, dataset="month 2026-10", faults=faults, chunk_rows=333)

    row_suite = report.gx_results[1]
    by_rule = {r.expectation_config.meta["gymchurn_rule"]: r for r in row_suite.results}
    age = by_rule["age_in_range"].result
    assert age["element_count"] == 4001
    assert age["unexpected_count"] == 2
    assert age["unexpected_index_list"] == [{"row_number": [333, 334]}]
    assert age["unexpected_percent"] == 2 / 4001 * 100
    unique = by_rule["client_month_unique"]
    assert unique.success is False
    assert unique.result["unexpected_index_list"] == [{"row_number": [7, 3501]}]
    assert by_rule["identical_answers"].result["unexpected_index_list"] == [
        {"row_number": [21, 4004]}
    ]
    assert row_suite.statistics["unsuccessful_expectations"] == 6
    assert row_suite.meta["run_id"].run_name == "month 2026-10"
    fault_suite = report.gx_results[2]
    assert fault_suite.statistics["unsuccessful_expectations"] == 3


def _damaged_small(loaded_rows) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Damage 40 rows of the loader's dtypes for slices of 7 and 13 rows.

    Rows 8 to 14 fill one slice of 7 with null ages, two rows lack a client id,
    two rows lack the month and every answer, and copies of rows at the start
    are added at the end.
    """
    frame = loaded_rows.head(40).copy()
    frame["client_id"] = frame["client_id"].astype("Int64")
    frame.loc[7:13, ["age", "avg_class_frequency_total"]] = pd.NA
    frame.loc[14, "age"] = 101
    frame.loc[[21, 22], "client_id"] = pd.NA
    frame.loc[[23, 30], ["month", *FEATURES]] = pd.NA
    frame.loc[35, "client_id"] = frame.loc[2, "client_id"]
    copies = [
        frame.iloc[[3]],
        frame.iloc[[4]].assign(client_id=9001),
        frame.iloc[[4]].assign(client_id=9002),
    ]
    frame = pd.concat([frame, *copies], ignore_index=True)
    frame["row_number"] = np.arange(1, len(frame) + 1, dtype="int64")
    faults = _faults(
        (int(frame.loc[10, "client_id"]), "age", 12, "3O", "not_a_number"),
        (int(frame.loc[36, "client_id"]), "phone", 38, "yes", "not_a_number"),
    )
    return frame, faults


@pytest.mark.parametrize("chunk_rows", [7, 13])
def test_chunk_rows_small_slices_same_outcome(loaded_rows, chunk_rows):
    frame, faults = _damaged_small(loaded_rows)
    whole = validate_questionnaires(frame, dataset="damaged", max_invalid_share=1.0, faults=faults)

    sliced = validate_questionnaires(
        frame, dataset="damaged", max_invalid_share=1.0, faults=faults, chunk_rows=chunk_rows
    )

    _assert_same_outcome(sliced, whole)
    assert _rule(sliced, "age_not_null").n_failed == 9
    assert _rule(sliced, "client_month_unique").n_failed == 4
    assert _rule(sliced, "duplicate_row").n_failed == 1
    assert _rule(sliced, "identical_answers").n_failed == 3
    assert _rule(sliced, "age_parseable").n_failed == 1


def test_chunk_rows_invalid_share_same_error(questionnaires):
    questionnaires.loc[0:2399, "age"] = -3
    with pytest.raises(DataValidationError) as whole:
        validate_questionnaires(questionnaires, dataset="scoring")

    with pytest.raises(DataValidationError) as sliced:
        validate_questionnaires(questionnaires, dataset="scoring", chunk_rows=1000)

    assert str(sliced.value) == str(whole.value)
    assert "60.0% of rows" in str(sliced.value)
    assert sliced.value.batch_rule == "max_invalid_share"
    assert sliced.value.rules == whole.value.rules
    _assert_same_outcome(sliced.value.report, whole.value.report)
    run_id = validation.uuid.uuid4()
    assert validation_result_rows(MONTH, run_id=run_id, error=sliced.value) == (
        validation_result_rows(MONTH, run_id=run_id, error=whole.value)
    )


def test_hash_collision_flags_no_row(questionnaires, monkeypatch):
    frame, faults = _damaged_across_borders(questionnaires)
    whole = validate_questionnaires(frame, dataset="month 2026-10", faults=faults)
    calls = []

    def same_hash(rows):
        calls.append(len(rows))
        return np.zeros(len(rows), dtype=np.uint64)

    monkeypatch.setattr(validation, "_row_hashes", same_hash)

    sliced = validate_questionnaires(frame, dataset="month 2026-10", faults=faults, chunk_rows=1000)

    assert sum(calls) == 4004 + 2 * 4001
    assert sliced.n_quarantined == 14
    assert _rule(sliced, "duplicate_row").n_failed == 3
    assert _rule(sliced, "client_month_unique").n_failed == 2
    assert _rule(sliced, "identical_answers").n_failed == 2
    _assert_same_outcome(sliced, whole)


def test_chunk_rows_slice_sizes(questionnaires, monkeypatch):
    frame, faults = _damaged_across_borders(questionnaires)
    run_suite = validation._run_suite
    sizes = []

    def recording_run_suite(gx_frame, suite_name, *args):
        sizes.append((suite_name, len(gx_frame)))
        return run_suite(gx_frame, suite_name, *args)

    monkeypatch.setattr(validation, "_run_suite", recording_run_suite)

    validate_questionnaires(frame, dataset="month 2026-10", faults=faults, chunk_rows=1000)

    assert sizes == [
        ("questionnaire_columns", 4004),
        *[("questionnaire_rows", n) for n in (1000, 1000, 1000, 1000, 1)],
        *[("questionnaire_load_faults", n) for n in (1000, 1000, 1000, 1000, 4)],
    ]


def test_chunk_rows_over_batch_runs_once(questionnaires, monkeypatch):
    suites = []
    run_suite = validation._run_suite

    def recording_run_suite(gx_frame, suite_name, *args):
        suites.append((suite_name, len(gx_frame)))
        return run_suite(gx_frame, suite_name, *args)

    monkeypatch.setattr(validation, "_run_suite", recording_run_suite)

    validate_questionnaires(questionnaires, dataset="month 2026-10", chunk_rows=4000)

    assert suites == [("questionnaire_columns", 4000), ("questionnaire_rows", 4000)]


def test_chunk_rows_builds_data_docs(questionnaires, tmp_path):
    frame, faults = _damaged_across_borders(questionnaires)
    report = validate_questionnaires(frame, dataset="month 2026-10", faults=faults, chunk_rows=333)

    build_data_docs([report], tmp_path)

    pages = list((tmp_path / "validations" / "questionnaire_rows").rglob("*.html"))
    assert len(pages) == 1
    text = _page_text(pages[0])
    assert "age between 12 and 100 2 unexpected values found" in text
    assert "Status: Failed" in text
    assert len(list((tmp_path / "validations").rglob("*.html"))) == 3


@pytest.mark.parametrize("chunk_rows", [0, -5, 2.5, True, "100"])
def test_chunk_rows_invalid_value(questionnaires, chunk_rows):
    with pytest.raises(ValueError, match="invalid chunk_rows"):
        validate_questionnaires(questionnaires, dataset="month 2026-10", chunk_rows=chunk_rows)


def test_row_hashes_match_pandas_equality():
    frame = pd.DataFrame(
        {
            "answer": [0.0, -0.0, np.nan, -np.nan, 1.0],
            "flag": pd.array([1, 1, None, None, 1], dtype="Int64"),
            "month": np.array(
                [dt.date(2026, 10, 1), dt.date(2026, 10, 1), None, np.nan, dt.date(2026, 9, 1)],
                dtype=object,
            ),
        }
    )

    hashes = validation._row_hashes(frame)

    assert frame.duplicated(keep=False).tolist() == [True, True, True, True, False]
    assert hashes[0] == hashes[1]
    assert hashes[2] == hashes[3]
    assert hashes[0] != hashes[4]


@pytest.mark.parametrize("chunk_rows", [1, 2, 3])
def test_repeated_rows_hashed_match_duplicated(loaded_rows, chunk_rows):
    # pandas finds 0.0 equal to -0.0, and NaNs with different bits equal.
    frame = pd.concat([loaded_rows.iloc[[0]]] * 6, ignore_index=True)
    frame["client_id"] = [1, 1, 2, 1, 1, 2]
    frame["avg_additional_charges_total"] = [0.0, -0.0, np.nan, 0.0, -0.0, -np.nan]
    frame["lifetime"] = pd.array([None] * 6, dtype="Int64")
    frame["row_number"] = np.arange(1, 7, dtype="int64")

    repeats = validation._repeated_rows(frame, chunk_rows)

    assert repeats.tolist() == [False, True, False, True, True, True]
    assert repeats.tolist() == validation._repeated_rows(frame, None).tolist()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    damages=st.lists(_damage(), min_size=1, max_size=15),
    copies=st.lists(st.integers(0, _N_PROPERTY_ROWS - 1), max_size=3),
    same_answers=st.lists(st.integers(0, _N_PROPERTY_ROWS - 1), max_size=3),
    chunk_rows=st.integers(200, _N_PROPERTY_ROWS + 5),
)
def test_random_damage_same_in_slices(loaded_rows, damages, copies, same_answers, chunk_rows):
    frame = loaded_rows.copy()
    for row, column, value in damages:
        frame.loc[row, column] = pd.NA if value is None else value
    new_ids = np.arange(len(same_answers)) + 10_001
    others = frame.iloc[same_answers].assign(client_id=new_ids)
    frame = pd.concat([frame, frame.iloc[copies], others], ignore_index=True)
    frame["row_number"] = np.arange(1, len(frame) + 1, dtype="int64")
    whole = validate_questionnaires(frame, dataset="damaged", max_invalid_share=1.0)

    sliced = validate_questionnaires(
        frame, dataset="damaged", max_invalid_share=1.0, chunk_rows=chunk_rows
    )

    _assert_same_outcome(sliced, whole)
    assert _rule(sliced, "duplicate_row").n_failed >= len(copies)
