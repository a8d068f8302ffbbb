"""Tests of reading questionnaire CSV files and loading them into a real database."""

import datetime as dt
import logging

import pandas as pd
import pytest
import sqlalchemy as sa

from gymchurn.loader import (
    CsvFormatError,
    LoadConflictError,
    load_questionnaire_file,
    read_questionnaire_csv,
)
from gymchurn.schema import CHURNED, CLIENT_ID, FEATURES
from tests.conftest import CASES

OCTOBER = dt.date(2026, 10, 1)

# The header and first data row of the chain's export.
HEADER = (
    "gender,Near_Location,Partner,Promo_friends,Phone,Contract_period,Group_visits,Age,"
    "Avg_additional_charges_total,Month_to_end_contract,Lifetime,Avg_class_frequency_total,"
    "Avg_class_frequency_current_month,Churn"
)
ROW = "1,1,1,1,0,6,1,29,14.22747042,5,3,0.020397948,0,0"


def _write(tmp_path, text: str, name: str = "questionnaires.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _with_client_ids(source, tmp_path, name: str):
    """Copy a case file with a client_id column 1..N in front."""
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame.insert(0, "client_id", [str(i) for i in range(1, len(frame) + 1)])
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_read_questionnaire_csv_real_file(real_data):
    loaded = read_questionnaire_csv(real_data)

    assert len(loaded.questionnaires) == 4000
    assert loaded.questionnaires[CLIENT_ID].to_list() == list(range(1, 4001))
    assert loaded.ids_assigned is True
    assert list(loaded.questionnaires.columns) == [CLIENT_ID, *FEATURES]
    assert len(loaded.outcomes) == 4000
    assert int(loaded.outcomes[CHURNED].sum()) == 1061
    assert loaded.ignored_columns == []


def test_read_questionnaire_csv_keeps_client_id_column(tmp_path):
    path = _write(tmp_path, f"client_id,{HEADER}\n17,{ROW}\n5,{ROW}\n")

    loaded = read_questionnaire_csv(path)

    assert loaded.questionnaires[CLIENT_ID].to_list() == [17, 5]
    assert loaded.outcomes[CLIENT_ID].to_list() == [17, 5]
    assert loaded.ids_assigned is False


def test_read_questionnaire_csv_reordered_columns_same_values():
    reference = read_questionnaire_csv(CASES / "00_clean_reference.csv")
    reordered = read_questionnaire_csv(CASES / "17_columns_reordered.csv")

    pd.testing.assert_frame_equal(reordered.questionnaires, reference.questionnaires)
    pd.testing.assert_frame_equal(reordered.outcomes, reference.outcomes)


def test_read_questionnaire_csv_header_case_and_spaces(tmp_path):
    reference = read_questionnaire_csv(CASES / "00_clean_reference.csv")
    text = (CASES / "00_clean_reference.csv").read_text(encoding="utf-8")
    header, body = text.split("\n", 1)
    path = _write(tmp_path, header.upper().replace("_", " ") + "\n" + body)

    loaded = read_questionnaire_csv(path)

    pd.testing.assert_frame_equal(loaded.questionnaires, reference.questionnaires)
    assert loaded.ignored_columns == []


def test_read_questionnaire_csv_bom_not_in_first_column(tmp_path):
    # With the BOM kept, the first header would read "\ufeffclient_id", so the
    # column would be ignored and the clients numbered 1..N instead.
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"client_id,{HEADER}\n42,{ROW}\n".encode())

    loaded = read_questionnaire_csv(path)

    assert loaded.questionnaires[CLIENT_ID].to_list() == [42]
    assert loaded.ids_assigned is False
    assert loaded.ignored_columns == []


def test_read_questionnaire_csv_missing_column():
    with pytest.raises(
        CsvFormatError, match=r"missing column\(s\) avg_class_frequency_current_month;"
    ):
        read_questionnaire_csv(CASES / "08_missing_column.csv")


def test_read_questionnaire_csv_header_only():
    with pytest.raises(CsvFormatError, match="06_header_only.csv: no data rows"):
        read_questionnaire_csv(CASES / "06_header_only.csv")


def test_read_questionnaire_csv_zero_bytes(tmp_path):
    path = _write(tmp_path, "", name="zero.csv")

    with pytest.raises(CsvFormatError, match="zero.csv: empty file"):
        read_questionnaire_csv(path)


def test_read_questionnaire_csv_binary_file():
    with pytest.raises(CsvFormatError, match="20_binary_not_csv.csv: not a UTF-8/CSV text file"):
        read_questionnaire_csv(CASES / "20_binary_not_csv.csv")


def test_read_questionnaire_csv_no_header():
    # Read naively, the first client would become the header and be lost.
    with pytest.raises(CsvFormatError, match="line 1 contains numbers.*header missing"):
        read_questionnaire_csv(CASES / "14_no_header.csv")


def test_read_questionnaire_csv_non_numeric_cell(tmp_path):
    path = _write(tmp_path, f"{HEADER}\n{ROW}\n{ROW.replace(',29,', ',abc,')}\n")

    with pytest.raises(CsvFormatError, match=r"line 3, column Age: 'abc' is not an integer"):
        read_questionnaire_csv(path)


def test_read_questionnaire_csv_fractional_integer(tmp_path):
    path = _write(tmp_path, f"{HEADER}\n{ROW.replace(',29,', ',29.5,')}\n")

    with pytest.raises(CsvFormatError, match=r"line 2, column Age: '29.5' is not an integer"):
        read_questionnaire_csv(path)


def test_read_questionnaire_csv_empty_lifetime_is_na():
    loaded = read_questionnaire_csv(CASES / "10_nan_in_lifetime.csv")

    lifetime = loaded.questionnaires.set_index(CLIENT_ID)["lifetime"]
    assert lifetime[lifetime.isna()].index.to_list() == [2, 6, 13, 17]
    assert str(lifetime.dtype) == "Int64"
    assert len(loaded.questionnaires) == 20


def test_load_questionnaire_file_empty_lifetime_is_null(database):
    loaded = read_questionnaire_csv(CASES / "10_nan_in_lifetime.csv")

    load_questionnaire_file(database, loaded, OCTOBER)

    with database.connect() as conn:
        null_ids = conn.execute(
            sa.text("SELECT client_id FROM crm.questionnaires WHERE lifetime IS NULL ORDER BY 1")
        ).scalars()
        assert list(null_ids) == [2, 6, 13, 17]
    assert _count(database, "crm.questionnaires") == 20


def test_read_questionnaire_csv_extra_columns_ignored():
    loaded = read_questionnaire_csv(CASES / "09_extra_unknown_columns.csv")

    assert loaded.ignored_columns == ["gender-label", "Churn_label", "Total_Frequency", "member_id"]
    assert list(loaded.questionnaires.columns) == [CLIENT_ID, *FEATURES]
    assert len(loaded.questionnaires) == 20
    reference = read_questionnaire_csv(CASES / "00_clean_reference.csv")
    pd.testing.assert_frame_equal(loaded.questionnaires, reference.questionnaires)


def test_read_questionnaire_csv_churn_label_not_outcome(tmp_path):
    extra = pd.read_csv(CASES / "09_extra_unknown_columns.csv", dtype=str)
    path = tmp_path / "no_churn.csv"
    extra.drop(columns="Churn").to_csv(path, index=False)

    loaded = read_questionnaire_csv(path)

    assert loaded.outcomes is None
    assert "Churn_label" in loaded.ignored_columns


def test_read_questionnaire_csv_churn_yes_no(caplog):
    reference = read_questionnaire_csv(CASES / "00_clean_reference.csv").outcomes

    with caplog.at_level(logging.WARNING, logger="gymchurn.loader"):
        loaded = read_questionnaire_csv(CASES / "02_churn_yes_no.csv")

    assert loaded.outcomes[CLIENT_ID].to_list() == [i for i in range(1, 21) if i != 7]
    expected = reference[reference[CLIENT_ID] != 7]
    assert loaded.outcomes[CHURNED].to_list() == expected[CHURNED].to_list()
    assert len(loaded.questionnaires) == 20
    assert "column Churn: 1 row(s) without a known label (line 8)" in caplog.text


@pytest.mark.parametrize(("source", "n_rows"), [("reference", 20), ("real", 4000)])
def test_load_questionnaire_file_twice_changes_nothing(database, real_data, source, n_rows):
    path = real_data if source == "real" else CASES / "00_clean_reference.csv"
    first = load_questionnaire_file(database, read_questionnaire_csv(path), OCTOBER)

    second = load_questionnaire_file(database, read_questionnaire_csv(path), OCTOBER)

    assert first.questionnaires_inserted == n_rows
    assert second.rows_read == n_rows
    assert second.questionnaires_inserted == 0
    assert second.questionnaires_updated == 0
    assert second.outcomes_inserted == 0
    assert second.outcomes_updated == 0
    assert _count(database, "crm.questionnaires") == n_rows
    assert _count(database, "crm.churn_outcomes") == n_rows


def test_load_questionnaire_file_one_changed_value(database, tmp_path):
    reference = _with_client_ids(CASES / "00_clean_reference.csv", tmp_path, "reference.csv")
    load_questionnaire_file(database, read_questionnaire_csv(reference), OCTOBER)
    changed = pd.read_csv(reference, dtype=str)
    changed.loc[4, "Age"] = "44"
    path = tmp_path / "changed.csv"
    changed.to_csv(path, index=False)

    summary = load_questionnaire_file(database, read_questionnaire_csv(path), OCTOBER)

    assert summary.questionnaires_inserted == 0
    assert summary.questionnaires_updated == 1
    assert summary.outcomes_updated == 0
    with database.connect() as conn:
        age = conn.execute(
            sa.text("SELECT age FROM crm.questionnaires WHERE client_id = 5")
        ).scalar_one()
    assert age == 44
    assert _count(database, "crm.questionnaires") == 20


def test_load_questionnaire_file_one_changed_outcome(database, tmp_path):
    reference = _with_client_ids(CASES / "00_clean_reference.csv", tmp_path, "reference.csv")
    load_questionnaire_file(database, read_questionnaire_csv(reference), OCTOBER)
    changed = pd.read_csv(reference, dtype=str)
    changed.loc[0, "Churn"] = "1"
    path = tmp_path / "changed.csv"
    changed.to_csv(path, index=False)

    summary = load_questionnaire_file(database, read_questionnaire_csv(path), OCTOBER)

    assert summary.outcomes_inserted == 0
    assert summary.outcomes_updated == 1
    assert summary.questionnaires_updated == 0


def test_read_questionnaire_csv_semicolon_decimal_comma():
    # Acceptable: a CsvFormatError naming the separator, or the values of 00_clean_reference.csv.
    path = CASES / "01_bom_semicolon_decimal_comma.csv"
    try:
        loaded = read_questionnaire_csv(path)
    except CsvFormatError as err:
        assert "separator" in str(err)
    else:
        reference = read_questionnaire_csv(CASES / "00_clean_reference.csv")
        pd.testing.assert_frame_equal(loaded.questionnaires, reference.questionnaires)


@pytest.mark.parametrize("cell", ["inf", "1e30"])
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_read_questionnaire_csv_non_finite_integer(tmp_path, cell):
    path = _write(tmp_path, f"{HEADER}\n{ROW.replace(',29,', f',{cell},')}\n")

    with pytest.raises(CsvFormatError, match="line 2, column Age"):
        read_questionnaire_csv(path)


def test_load_questionnaire_file_integer_out_of_column_range(database, tmp_path):
    path = _write(tmp_path, f"{HEADER}\n{ROW}\n{ROW.replace(',29,', ',99999999999,')}\n")

    with pytest.raises(CsvFormatError, match="line 3, column Age"):
        load_questionnaire_file(database, read_questionnaire_csv(path), OCTOBER)

    assert _count(database, "crm.questionnaires") == 0


def test_read_questionnaire_csv_line_after_blank_line(tmp_path):
    # Line 1 header, line 2 a client, line 3 blank, line 4 the bad cell.
    path = _write(tmp_path, f"{HEADER}\n{ROW}\n\n{ROW.replace(',29,', ',abc,')}\n")

    with pytest.raises(CsvFormatError, match="line 4, column Age"):
        read_questionnaire_csv(path)


def test_read_questionnaire_csv_trailing_comma_not_shifted(tmp_path):
    # Whole-number values, so every shifted value still parses.
    row = "0,1,1,1,0,6,1,29,14,5,3,2,0,0"
    path = _write(tmp_path, f"{HEADER}\n{row},\n{row},\n")

    # Acceptable: an error naming line 2, or the values as written.
    try:
        loaded = read_questionnaire_csv(path)
    except CsvFormatError as err:
        assert "line 2" in str(err)
    else:
        assert loaded.questionnaires["age"].to_list() == [29, 29]
        assert loaded.questionnaires["gender"].to_list() == [0, 0]


def test_load_numbered_rows_other_count_rejected(database, tmp_path):
    reference = CASES / "00_clean_reference.csv"
    lines = reference.read_text().splitlines()
    shorter = _write(tmp_path, "\n".join(lines[:5] + lines[6:]) + "\n")
    load_questionnaire_file(database, read_questionnaire_csv(reference), OCTOBER)

    with pytest.raises(LoadConflictError, match="already has 20 questionnaires"):
        load_questionnaire_file(database, read_questionnaire_csv(shorter), OCTOBER)

    assert _count(database, "crm.questionnaires") == 20
    with database.connect() as conn:
        age = conn.execute(sa.text("SELECT age FROM crm.questionnaires WHERE client_id = 5"))
        assert age.scalar_one() == int(lines[5].split(",")[7])


def test_load_replace_deletes_month_first(database, tmp_path):
    reference = CASES / "00_clean_reference.csv"
    lines = reference.read_text().splitlines()
    shorter = _write(tmp_path, "\n".join(lines[:5] + lines[6:]) + "\n")
    load_questionnaire_file(database, read_questionnaire_csv(reference), OCTOBER)

    summary = load_questionnaire_file(
        database, read_questionnaire_csv(shorter), OCTOBER, replace=True
    )

    assert summary.questionnaires_removed == 20
    assert summary.outcomes_removed == 20
    assert summary.questionnaires_inserted == 19
    assert _count(database, "crm.questionnaires") == 19
    assert _count(database, "crm.churn_outcomes") == 19


def test_load_unknown_label_removes_old_outcome(database, tmp_path):
    reference = _with_client_ids(CASES / "00_clean_reference.csv", tmp_path, "reference.csv")
    yes_no = _with_client_ids(CASES / "02_churn_yes_no.csv", tmp_path, "yes_no.csv")
    load_questionnaire_file(database, read_questionnaire_csv(reference), OCTOBER)

    summary = load_questionnaire_file(database, read_questionnaire_csv(yes_no), OCTOBER)

    assert summary.outcomes_removed == 1
    assert summary.outcomes_updated == 0
    with database.connect() as conn:
        ids = conn.execute(sa.text("SELECT client_id FROM crm.churn_outcomes")).scalars().all()
    assert sorted(ids) == [i for i in range(1, 21) if i != 7]


@pytest.mark.parametrize("cell", ["0", "-4"])
def test_read_questionnaire_csv_client_id_not_positive(tmp_path, cell):
    path = _write(tmp_path, f"client_id,{HEADER}\n1,{ROW}\n{cell},{ROW}\n")

    with pytest.raises(CsvFormatError, match=f"line 3, column client_id: client id '{cell}'"):
        read_questionnaire_csv(path)


def test_read_questionnaire_csv_directory(tmp_path):
    with pytest.raises(CsvFormatError, match="not a regular file"):
        read_questionnaire_csv(tmp_path)


def test_load_numbered_rows_changed_values_rejected(database, tmp_path):
    """Check that a same-size file whose rows moved is not taken for corrections."""
    reference = CASES / "00_clean_reference.csv"
    lines = reference.read_text().splitlines()
    # One client left (data row 4) and another joined at the end.
    swapped = _write(tmp_path, "\n".join(lines[:4] + lines[5:] + [lines[4]]) + "\n")
    load_questionnaire_file(database, read_questionnaire_csv(reference), OCTOBER)

    with pytest.raises(LoadConflictError, match="would change [0-9]+ questionnaire"):
        load_questionnaire_file(database, read_questionnaire_csv(swapped), OCTOBER)

    with database.connect() as conn:
        age = conn.execute(sa.text("SELECT age FROM crm.questionnaires WHERE client_id = 4"))
        assert age.scalar_one() == int(lines[4].split(",")[7])
