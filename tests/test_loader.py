"""Tests of reading questionnaire CSV files and loading them into a real database."""

import codecs
import csv
import datetime as dt
import io
import logging
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gymchurn import db
from gymchurn import loader as loader_module
from gymchurn.aliases import CLIENT_KEY_ALIASES, HEADER_ALIASES, normalize_header
from gymchurn.loader import (
    CsvFormatError,
    LoadConflictError,
    load_csv,
    load_questionnaire_file,
    open_questionnaire_csv,
    read_month_faults,
    read_questionnaire_csv,
)
from gymchurn.schema import CHURNED, CLIENT_ID, CSV_HEADERS, FEATURES
from gymchurn.validation import ROW_NUMBER, DataValidationError, validate_questionnaires
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


def _fault_records(loaded) -> list[tuple]:
    columns = [CLIENT_ID, "line", "column", "raw_value", "fault"]
    return list(loaded.faults[columns].itertuples(index=False, name=None))


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
        CsvFormatError, match=r"missing column\(s\) Avg_class_frequency_current_month;"
    ):
        read_questionnaire_csv(CASES / "08_missing_column.csv")


def test_missing_columns_named_as_export_spells(tmp_path):
    names = HEADER.split(",")
    values = ROW.split(",")
    dropped = [names.index("Near_Location"), names.index("Month_to_end_contract")]
    header = ",".join(name for i, name in enumerate(names) if i not in dropped)
    row = ",".join(value for i, value in enumerate(values) if i not in dropped)
    path = _write(tmp_path, f"{header}\n{row}\n")

    with pytest.raises(CsvFormatError) as raised:
        read_questionnaire_csv(path)

    message = str(raised.value)
    assert "line 1: missing column(s) Near_Location, Month_to_end_contract; found " in message
    assert "Add the missing column(s) and load the file again" in message


def test_csv_headers_are_accepted_aliases():
    for column, header in CSV_HEADERS.items():
        if column == CLIENT_ID:
            assert normalize_header(header) in CLIENT_KEY_ALIASES[0]
        else:
            assert HEADER_ALIASES[normalize_header(header)] == column
    assert [CSV_HEADERS[name] for name in [*FEATURES, CHURNED]] == HEADER.split(",")


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
    # A text cell is a row fault, and the other rows load.
    path = _write(tmp_path, f"{HEADER}\n{ROW}\n{ROW.replace(',29,', ',abc,')}\n")

    loaded = read_questionnaire_csv(path)

    assert loaded.questionnaires["age"].isna().to_list() == [False, True]
    assert loaded.questionnaires["age"][0] == 29
    assert _fault_records(loaded) == [(2, 3, "age", "abc", "not_a_number")]


def test_read_questionnaire_csv_fractional_integer(tmp_path):
    path = _write(tmp_path, f"{HEADER}\n{ROW.replace(',29,', ',29.5,')}\n")

    loaded = read_questionnaire_csv(path)

    assert loaded.questionnaires["age"].isna().all()
    assert _fault_records(loaded) == [(1, 2, "age", "29.5", "not_an_integer")]


def test_read_questionnaire_csv_empty_lifetime_is_na():
    loaded = read_questionnaire_csv(CASES / "10_nan_in_lifetime.csv")

    lifetime = loaded.questionnaires.set_index(CLIENT_ID)["lifetime"]
    assert lifetime[lifetime.isna()].index.to_list() == [2, 6, 13, 17]
    assert str(lifetime.dtype) == "Int64"
    assert len(loaded.questionnaires) == 20
    assert _fault_records(loaded) == [
        (2, 3, "lifetime", "", "missing"),
        (6, 7, "lifetime", "", "missing"),
        (13, 14, "lifetime", "", "missing"),
        (17, 18, "lifetime", "NaN", "missing"),
    ]


def test_load_questionnaire_file_empty_lifetime_is_null(database):
    loaded = read_questionnaire_csv(CASES / "10_nan_in_lifetime.csv")

    summary = load_questionnaire_file(database, loaded, OCTOBER)

    assert summary.faults == 4
    with database.connect() as conn:
        null_ids = conn.execute(
            sa.text("SELECT client_id FROM crm.questionnaires WHERE lifetime IS NULL ORDER BY 1")
        ).scalars()
        assert list(null_ids) == [2, 6, 13, 17]
        not_a_number = conn.execute(
            sa.text("SELECT count(*) FROM crm.questionnaires WHERE lifetime::text = 'NaN'")
        ).scalar_one()
        faults = read_month_faults(conn, OCTOBER)
    assert not_a_number == 0
    assert _count(database, "crm.questionnaires") == 20
    assert faults[CLIENT_ID].to_list() == [2, 6, 13, 17]
    assert faults["line"].to_list() == [3, 7, 14, 18]
    assert set(faults["column_name"]) == {"lifetime"}
    assert faults["raw_value"].to_list() == ["", "", "", "NaN"]
    assert set(faults["fault"]) == {"missing"}


def test_read_questionnaire_csv_extra_columns_ignored():
    # Without a client_id column, member_id is the client key.
    loaded = read_questionnaire_csv(CASES / "09_extra_unknown_columns.csv")

    assert loaded.ignored_columns == ["gender-label", "Churn_label", "Total_Frequency"]
    assert loaded.ids_assigned is False
    assert loaded.questionnaires[CLIENT_ID].to_list() == list(range(1, 21))
    assert list(loaded.questionnaires.columns) == [CLIENT_ID, *FEATURES]
    assert loaded.faults.empty
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


def _stored_lines(engine) -> dict[int, tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT q.client_id, l.source_file, q.line FROM crm.questionnaires AS q"
                " JOIN crm.questionnaire_loads AS l USING (load_id)"
            )
        ).all()
    return {client: (source, line) for client, source, line in rows}


def test_load_records_file_and_line_of_each_questionnaire(database, tmp_path):
    path = _with_client_ids(CASES / "00_clean_reference.csv", tmp_path, "reference.csv")
    load_questionnaire_file(database, read_questionnaire_csv(path), OCTOBER)
    # The same path again with its first client's row gone: the other rows
    # move up a line, with the same answers.
    rows = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([rows[0], *rows[2:]]) + "\n", encoding="utf-8")

    summary = load_questionnaire_file(database, read_questionnaire_csv(path), OCTOBER)

    assert summary.questionnaires_updated == 0
    lines = _stored_lines(database)
    assert len(lines) == 20
    # Client 1 is kept, but client 2 is on its line now.
    assert lines[1] == (str(path.resolve()), None)
    assert lines[2] == (str(path.resolve()), 2)
    assert lines[20] == (str(path.resolve()), 20)
    assert _count(database, "crm.questionnaire_loads") == 1


def test_load_of_another_file_takes_its_rows(database, tmp_path):
    first = _with_client_ids(CASES / "00_clean_reference.csv", tmp_path, "first.csv")
    load_questionnaire_file(database, read_questionnaire_csv(first), OCTOBER)
    frame = pd.read_csv(first, dtype=str).iloc[[4, 9]]
    frame.loc[frame.index[0], "Age"] = "44"
    second = tmp_path / "second.csv"
    frame.to_csv(second, index=False)

    load_questionnaire_file(database, read_questionnaire_csv(second), OCTOBER)

    lines = _stored_lines(database)
    # Client 5 changed, client 10 did not: both are now on the second file's lines.
    assert lines[5] == (str(second.resolve()), 2)
    assert lines[10] == (str(second.resolve()), 3)
    assert lines[6] == (str(first.resolve()), 7)
    assert _count(database, "crm.questionnaire_loads") == 2


def test_load_questionnaire_file_analyzes_tables(database, real_data):
    load_questionnaire_file(database, read_questionnaire_csv(real_data), OCTOBER)

    # The planner's row counts, which ANALYZE sets exactly for tables this small.
    with database.connect() as conn:
        tuples = dict(
            conn.execute(
                sa.text(
                    "SELECT relname, reltuples FROM pg_class WHERE oid IN "
                    "('crm.questionnaires'::regclass, 'crm.churn_outcomes'::regclass)"
                )
            ).all()
        )
    assert tuples == {"questionnaires": 4000, "churn_outcomes": 4000}


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
    reference = read_questionnaire_csv(CASES / "00_clean_reference.csv")

    loaded = read_questionnaire_csv(CASES / "01_bom_semicolon_decimal_comma.csv")

    pd.testing.assert_frame_equal(loaded.questionnaires, reference.questionnaires)
    pd.testing.assert_frame_equal(loaded.outcomes, reference.outcomes)
    assert (loaded.delimiter, loaded.decimal_mark) == (";", ",")
    assert loaded.ignored_columns == []


@pytest.mark.parametrize(("cell", "fault"), [("inf", "not_a_number"), ("1e30", "too_large")])
def test_read_questionnaire_csv_non_finite_integer(tmp_path, cell, fault):
    path = _write(tmp_path, f"{HEADER}\n{ROW.replace(',29,', f',{cell},')}\n")

    loaded = read_questionnaire_csv(path)

    assert loaded.questionnaires["age"].isna().all()
    assert _fault_records(loaded) == [(1, 2, "age", cell, fault)]


def test_load_questionnaire_file_integer_out_of_column_range(database, tmp_path):
    # An integer too large for its column is a row fault, stored as NULL.
    path = _write(tmp_path, f"{HEADER}\n{ROW}\n{ROW.replace(',29,', ',99999999999,')}\n")

    summary = load_questionnaire_file(database, read_questionnaire_csv(path), OCTOBER)

    assert summary.faults == 1
    with database.connect() as conn:
        ages = conn.execute(sa.text("SELECT age FROM crm.questionnaires ORDER BY client_id"))
        assert ages.scalars().all() == [29, None]
        faults = read_month_faults(conn, OCTOBER)
    assert faults.to_dict("records") == [
        {
            "client_id": 2,
            "column_name": "age",
            "line": 3,
            "raw_value": "99999999999",
            "fault": "too_large",
        }
    ]


def test_read_questionnaire_csv_line_after_blank_line(tmp_path):
    # Line 1 header, line 2 a client, line 3 blank, line 4 the bad cell.
    path = _write(tmp_path, f"{HEADER}\n{ROW}\n\n{ROW.replace(',29,', ',abc,')}\n")

    loaded = read_questionnaire_csv(path)

    assert len(loaded.questionnaires) == 2
    assert _fault_records(loaded) == [(2, 4, "age", "abc", "not_a_number")]


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

    with pytest.raises(LoadConflictError, match="would change [0-9]+ questionnaire") as raised:
        load_questionnaire_file(database, read_questionnaire_csv(swapped), OCTOBER)

    # The message names what --replace would delete, and where those rows came from.
    assert (
        "load with --replace, which first deletes every questionnaire and outcome of the "
        f"month (20 from {reference.resolve()})"
    ) in str(raised.value)
    with database.connect() as conn:
        age = conn.execute(sa.text("SELECT age FROM crm.questionnaires WHERE client_id = 4"))
        assert age.scalar_one() == int(lines[4].split(",")[7])


def test_load_numbered_rows_changed_names_first_line(database, tmp_path):
    lines = REFERENCE.read_text().splitlines()
    # Row 4 moved to the end: clients 4 to 20 get the values of the next row.
    moved = _write(tmp_path, "\n".join(lines[:4] + lines[5:] + [lines[4]]) + "\n")
    answers, label = lines[12].rsplit(",", 1)
    churn_changed = [*lines[:12], f"{answers},{1 - int(label)}", *lines[13:]]
    relabelled = _write(tmp_path, "\n".join(churn_changed) + "\n", "relabelled.csv")
    load_csv(database, open_questionnaire_csv(REFERENCE), OCTOBER)

    with pytest.raises(LoadConflictError) as moved_error:
        load_csv(database, open_questionnaire_csv(moved), OCTOBER)
    with pytest.raises(LoadConflictError) as relabelled_error:
        load_csv(database, open_questionnaire_csv(relabelled), OCTOBER)

    assert "already loaded for 2026-10, the first on line 5 (client 4);" in str(moved_error.value)
    assert "would change 0 questionnaire(s) and 1 outcome(s)" in str(relabelled_error.value)
    assert "the first on line 13 (client 12);" in str(relabelled_error.value)


REFERENCE = CASES / "00_clean_reference.csv"
NOVEMBER = dt.date(2026, 11, 1)

# Less common Russian spellings of the 14 headers, in the column order of the export.
OTHER_RUSSIAN_HEADER = [
    "ПОЛ",
    "Живёт рядом",
    "Сотрудник партнёра",
    "Приведи друга",
    "Есть телефон",
    "Длительность абонемента",
    "Групповые тренировки",
    "возраст",
    "Дополнительные расходы",
    "Месяцев до окончания абонемента",
    "Время с первого обращения",
    "Средняя частота посещений",
    "Частота посещений за месяц",
    "Факт оттока",
]


def _reference_table() -> tuple[list[str], list[list[str]]]:
    """Return the header and the data rows of the clean reference file as text."""
    with REFERENCE.open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    return rows[0], rows[1:]


def _decimal_comma(rows: list[list[str]]) -> list[list[str]]:
    return [[cell.replace(".", ",") for cell in row] for row in rows]


def _write_table(
    tmp_path,
    header: list[str],
    rows: list[list[str]],
    *,
    delimiter: str = ",",
    encoding: str = "utf-8",
    quoting: int = csv.QUOTE_MINIMAL,
    line_end: str = "\n",
    final_newline: bool = True,
    name: str = "variant.csv",
):
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, quoting=quoting, lineterminator=line_end)
    writer.writerows([header, *rows])
    text = buffer.getvalue()
    if not final_newline:
        text = text.removesuffix(line_end)
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def _with_cell(rows: list[list[str]], row: int, column: int, cell: str) -> list[list[str]]:
    changed = [list(fields) for fields in rows]
    changed[row][column] = cell
    return changed


def _assert_same_as_reference(loaded) -> None:
    reference = read_questionnaire_csv(REFERENCE)
    pd.testing.assert_frame_equal(loaded.questionnaires, reference.questionnaires)
    pd.testing.assert_frame_equal(loaded.outcomes, reference.outcomes)
    assert loaded.faults.empty


def test_read_cp1251_russian_headers_same_values():
    loaded = read_questionnaire_csv(CASES / "12_cp1251_russian_headers.csv")

    _assert_same_as_reference(loaded)
    assert loaded.encoding == "cp1251"
    assert loaded.ignored_columns == []


@pytest.mark.parametrize("encoding", ["cp1251", "utf-8", "utf-8-sig"])
def test_read_other_russian_spellings_same_values(tmp_path, encoding):
    _, rows = _reference_table()
    path = _write_table(
        tmp_path,
        OTHER_RUSSIAN_HEADER,
        _decimal_comma(rows),
        delimiter=";",
        encoding=encoding,
        line_end="\r\n",
    )

    loaded = read_questionnaire_csv(path)

    _assert_same_as_reference(loaded)
    assert loaded.encoding == ("cp1251" if encoding == "cp1251" else "utf-8")
    assert loaded.ignored_columns == []


def test_read_cp1251_unknown_headers_rejected(tmp_path):
    _, rows = _reference_table()
    header = [*OTHER_RUSSIAN_HEADER]
    header[7] = "Годы"
    path = _write_table(tmp_path, header, rows, encoding="cp1251")

    with pytest.raises(CsvFormatError) as raised:
        read_questionnaire_csv(path)

    message = str(raised.value)
    assert "not a UTF-8 file (invalid UTF-8 at byte 0 on line 1)" in message
    assert "read as Windows-1251" in message
    assert "unknown column(s) Годы" in message
    assert "is missing column(s) Age;" in message


def test_read_latin1_headers_rejected_not_mojibake(tmp_path):
    header, rows = _reference_table()
    header = ["Âge" if name == "Age" else name for name in header]
    path = _write_table(tmp_path, header, rows, encoding="latin-1")

    with pytest.raises(CsvFormatError) as raised:
        read_questionnaire_csv(path)

    message = str(raised.value)
    assert "read as Windows-1251" in message
    assert "is missing column(s) Age;" in message


def test_read_mojibake_utf8_headers_rejected(tmp_path):
    # Windows-1251 bytes decoded as Windows-1252 and saved as UTF-8: "Пол" becomes "Ïîë".
    _, rows = _reference_table()
    header = [name.encode("cp1251").decode("cp1252") for name in OTHER_RUSSIAN_HEADER]
    path = _write_table(tmp_path, header, rows)

    with pytest.raises(CsvFormatError) as raised:
        read_questionnaire_csv(path)

    message = str(raised.value)
    assert "missing column(s) gender, Near_Location, " in message
    assert "decoded as cp1252 instead of cp1251" in message


def test_read_utf16_tab_separated_same_values(tmp_path):
    # Excel's "Unicode text" export: UTF-16 with a byte order mark, tabs, CRLF.
    header, rows = _reference_table()
    path = _write_table(tmp_path, header, rows, delimiter="\t", encoding="utf-16", line_end="\r\n")

    loaded = read_questionnaire_csv(path)

    _assert_same_as_reference(loaded)
    assert (loaded.encoding, loaded.delimiter) == ("utf-16", "\t")


@pytest.mark.parametrize(
    ("delimiter", "decimal_comma", "quoting", "line_end", "final_newline"),
    [
        ("\t", False, csv.QUOTE_MINIMAL, "\n", True),
        ("|", False, csv.QUOTE_MINIMAL, "\n", True),
        (";", True, csv.QUOTE_ALL, "\r\n", True),
        (";", True, csv.QUOTE_NONNUMERIC, "\n", False),
        (",", True, csv.QUOTE_MINIMAL, "\r\n", True),
        (",", False, csv.QUOTE_MINIMAL, "\r\n", False),
    ],
    ids=["tab", "pipe", "semicolon-quoted", "semicolon-no-final-newline", "comma-quoted", "crlf"],
)
def test_read_dialects_same_values(
    tmp_path, delimiter, decimal_comma, quoting, line_end, final_newline
):
    header, rows = _reference_table()
    if decimal_comma:
        rows = _decimal_comma(rows)
    path = _write_table(
        tmp_path,
        header,
        rows,
        delimiter=delimiter,
        quoting=quoting,
        line_end=line_end,
        final_newline=final_newline,
    )

    loaded = read_questionnaire_csv(path)

    _assert_same_as_reference(loaded)
    assert loaded.delimiter == delimiter
    assert loaded.decimal_mark == ("," if decimal_comma else ".")


def test_read_bom_semicolon_quoted_same_values(tmp_path):
    header, rows = _reference_table()
    path = _write_table(tmp_path, header, _decimal_comma(rows), delimiter=";", encoding="utf-8-sig")

    loaded = read_questionnaire_csv(path)

    _assert_same_as_reference(loaded)
    assert loaded.ignored_columns == []


def test_read_integers_written_as_floats_same_values(tmp_path):
    header, rows = _reference_table()
    integer_columns = [header.index(name) for name in ["gender", "Age", "Lifetime", "Churn"]]
    rows = [
        [f"{cell}.0" if i in integer_columns else cell for i, cell in enumerate(row)]
        for row in rows
    ]
    path = _write_table(tmp_path, header, rows)

    _assert_same_as_reference(read_questionnaire_csv(path))


def test_read_padded_and_float_integers(tmp_path):
    header, rows = _reference_table()
    age = header.index("Age")
    rows = _with_cell(_with_cell(rows, 1, age, " 31"), 2, age, "28.0")
    path = _write_table(tmp_path, header, rows)

    loaded = read_questionnaire_csv(path)

    assert loaded.questionnaires["age"][:3].to_list() == [29, 31, 28]
    assert loaded.faults.empty


@pytest.mark.parametrize(
    ("column", "cell", "fault"),
    [
        ("Age", "33.5", "not_an_integer"),
        ("Age", "-", "missing"),
        ("Age", "n/a", "missing"),
        ("Age", "#N/A", "missing"),
        ("Age", "abc", "not_a_number"),
        ("Age", "", "missing"),
        ("Age", "NaN", "missing"),
        ("Avg_additional_charges_total", "abc", "not_a_number"),
        ("Avg_additional_charges_total", "-", "missing"),
        ("Avg_additional_charges_total", "-inf", "not_a_number"),
        ("Contract_period", "6.5", "not_an_integer"),
        ("Phone", "99999", "too_large"),
    ],
)
def test_read_bad_cell_is_row_fault(tmp_path, column, cell, fault):
    header, rows = _reference_table()
    path = _write_table(tmp_path, header, _with_cell(rows, 4, header.index(column), cell))
    reference = read_questionnaire_csv(REFERENCE).questionnaires
    name = column.lower()

    loaded = read_questionnaire_csv(path)

    assert _fault_records(loaded) == [(5, 6, name, cell, fault)]
    assert loaded.questionnaires[name].isna().to_list() == [i == 4 for i in range(20)]
    others = loaded.questionnaires.drop(index=4)
    pd.testing.assert_frame_equal(others, reference.drop(index=4))


def test_read_decimal_comma_faults(tmp_path):
    header, rows = _reference_table()
    age, lifetime = header.index("Age"), header.index("Lifetime")
    rows = _with_cell(_with_cell(_decimal_comma(rows), 0, age, "33,5"), 3, lifetime, "n/a")
    path = _write_table(tmp_path, header, rows, delimiter=";")

    loaded = read_questionnaire_csv(path)

    assert _fault_records(loaded) == [
        (1, 2, "age", "33,5", "not_an_integer"),
        (4, 5, "lifetime", "n/a", "missing"),
    ]
    assert loaded.questionnaires["avg_additional_charges_total"][0] == 14.22747042


@pytest.mark.parametrize(
    ("column", "cell"),
    [
        ("Avg_additional_charges_total", "11.320.293.765"),
        ("Avg_additional_charges_total", "1.234,5"),
        ("Avg_additional_charges_total", "1,234.5"),
        ("Avg_additional_charges_total", "1 234"),
        ("Lifetime", "1.234.567"),
    ],
)
def test_read_digit_grouping_rejected(tmp_path, column, cell):
    header, rows = _reference_table()
    path = _write_table(tmp_path, header, _with_cell(rows, 1, header.index(column), cell))

    with pytest.raises(CsvFormatError) as raised:
        read_questionnaire_csv(path)

    message = str(raised.value)
    assert f"line 3, column {column}: {cell!r} has digit grouping" in message
    assert "export the file again with plain numbers" in message


def test_read_digit_grouping_semicolon_rejected(tmp_path):
    header, rows = _reference_table()
    rows = _with_cell(
        _decimal_comma(rows), 0, header.index("Avg_class_frequency_total"), "1.234.567"
    )
    path = _write_table(tmp_path, header, rows, delimiter=";")

    with pytest.raises(CsvFormatError, match="line 2, column Avg_class_frequency_total"):
        read_questionnaire_csv(path)


def test_read_mixed_decimal_marks_rejected(tmp_path):
    header, rows = _reference_table()
    charges = header.index("Avg_additional_charges_total")
    rows = _with_cell(_decimal_comma(rows), 5, charges, "450.7439599")
    path = _write_table(tmp_path, header, rows, delimiter=";")

    with pytest.raises(CsvFormatError) as raised:
        read_questionnaire_csv(path)

    message = str(raised.value)
    assert "numbers use both '.' and ',' as decimal mark" in message
    assert "line 7, column Avg_additional_charges_total: '450.7439599'" in message


def test_read_no_header_semicolon_rejected(tmp_path):
    _, rows = _reference_table()
    rows = _decimal_comma(rows)
    path = _write_table(tmp_path, rows[0], rows[1:], delimiter=";")

    with pytest.raises(CsvFormatError, match="line 1 contains numbers.*header missing"):
        read_questionnaire_csv(path)


def test_read_short_row_rejected(tmp_path):
    header, rows = _reference_table()
    rows = [*rows[:2], rows[2][:-2], *rows[3:]]
    path = _write_table(tmp_path, header, rows)

    with pytest.raises(CsvFormatError, match="line 4: 12 fields but the header has 14"):
        read_questionnaire_csv(path)


def test_read_duplicate_column_rejected(tmp_path):
    header, rows = _reference_table()
    path = _write_table(tmp_path, [*header, "Возраст"], [[*row, "40"] for row in rows])

    with pytest.raises(CsvFormatError, match="columns 'Age' and 'Возраст' both name age"):
        read_questionnaire_csv(path)


def test_read_total_frequency_not_a_feature(tmp_path):
    # Total_Frequency looks like Avg_class_frequency_total but is not that column.
    header, rows = _reference_table()
    header = ["Total_Frequency" if name == "Avg_class_frequency_total" else name for name in header]
    path = _write_table(tmp_path, header, rows)

    with pytest.raises(CsvFormatError, match=r"missing column\(s\) Avg_class_frequency_total;"):
        read_questionnaire_csv(path)


def test_read_russian_missing_column_rejected(tmp_path):
    _, rows = _reference_table()
    header = [name for name in OTHER_RUSSIAN_HEADER if name != "возраст"]
    rows = [row[:7] + row[8:] for row in rows]
    path = _write_table(tmp_path, header, rows)

    with pytest.raises(CsvFormatError, match=r"line 1: missing column\(s\) Age;"):
        read_questionnaire_csv(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (bytes(range(0x80, 0x100)) * 16, "not Windows-1251 text either"),
        (b"PK\x03\x04" + bytes(2044), "Excel .xlsx workbook"),
        (b"gender,Age\n1,\x0229\n", "binary bytes, the first on line 2"),
    ],
    ids=["high-bytes", "xlsx", "control-byte"],
)
def test_read_binary_variants_rejected(tmp_path, content, expected):
    path = tmp_path / "export.csv"
    path.write_bytes(content)

    with pytest.raises(CsvFormatError) as raised:
        read_questionnaire_csv(path)

    message = str(raised.value)
    assert f"{path}: not a UTF-8/CSV text file" in message
    assert expected in message


def test_binary_contact_file_rejected(tmp_path):
    from gymchurn.contacts import read_contact_csv

    path = tmp_path / "contacts.csv"
    path.write_bytes(b"PK\x03\x04\x00\x00binary")

    with pytest.raises(CsvFormatError) as raised:
        read_contact_csv(path)

    message = str(raised.value)
    assert f"{path}: not a UTF-8/CSV text file" in message
    assert "export it again as UTF-8 CSV" in message
    assert "questionnaires" not in message


@pytest.mark.parametrize("content", [b"\n\n  \r\n", b"\xef\xbb\xbf"], ids=["blank", "bom-only"])
def test_read_blank_file_is_empty(tmp_path, content):
    path = tmp_path / "blank.csv"
    path.write_bytes(content)

    with pytest.raises(CsvFormatError, match="blank.csv: empty file"):
        read_questionnaire_csv(path)


def test_read_member_id_is_client_key(tmp_path):
    header, rows = _reference_table()
    rows = [[*row, str(100 + i)] for i, row in enumerate(rows)]
    path = _write_table(tmp_path, [*header, "Member ID"], rows)

    loaded = read_questionnaire_csv(path)

    assert loaded.ids_assigned is False
    assert loaded.questionnaires[CLIENT_ID].to_list() == list(range(100, 120))
    assert loaded.outcomes[CLIENT_ID].to_list() == list(range(100, 120))
    assert loaded.ignored_columns == []


def test_read_client_id_preferred_over_member_id(tmp_path):
    header, rows = _reference_table()
    rows = [[str(500 + i), *row, str(100 + i)] for i, row in enumerate(rows)]
    path = _write_table(tmp_path, ["client_id", *header, "member_id"], rows)

    loaded = read_questionnaire_csv(path)

    assert loaded.questionnaires[CLIENT_ID].to_list() == list(range(500, 520))
    assert loaded.ignored_columns == ["member_id"]


@pytest.mark.parametrize(
    ("churned", "retained"), [("Yes", "No"), ("TRUE", "false"), ("1.0", "0.0"), ("Да", "нет")]
)
def test_read_label_spellings(tmp_path, churned, retained):
    header, rows = _reference_table()
    rows = [[*row[:-1], churned if row[-1] == "1" else retained] for row in rows]
    path = _write_table(tmp_path, header, rows)

    _assert_same_as_reference(read_questionnaire_csv(path))


@pytest.mark.parametrize(
    ("one", "zero", "delimiter"),
    [("Yes", "no", ","), ("TRUE", "False", ";"), ("да", "НЕТ", ",")],
)
def test_read_flag_words(tmp_path, one, zero, delimiter):
    header, rows = _reference_table()
    for name in ("Partner", "Phone", "Group_visits"):
        position = header.index(name)
        for row in rows:
            row[position] = one if row[position] == "1" else zero
    if delimiter == ";":
        rows = _decimal_comma(rows)
    path = _write_table(tmp_path, header, rows, delimiter=delimiter)

    _assert_same_as_reference(read_questionnaire_csv(path))


def test_read_gender_word_is_a_fault(tmp_path):
    header, rows = _reference_table()
    path = _write_table(tmp_path, header, _with_cell(rows, 2, header.index("gender"), "yes"))

    loaded = read_questionnaire_csv(path)

    assert _fault_records(loaded) == [(3, 4, "gender", "yes", "not_a_number")]


def test_column_without_a_readable_cell_rejected(database, tmp_path):
    header, rows = _reference_table()
    gender = header.index("gender")
    for row in rows:
        row[gender] = "Male" if row[gender] == "1" else "Female"
    path = _write_table(tmp_path, header, rows)

    with pytest.raises(CsvFormatError) as raised:
        load_csv(database, open_questionnaire_csv(path), OCTOBER)
    with pytest.raises(CsvFormatError):
        read_questionnaire_csv(path)

    assert str(raised.value) == (
        f"{path}: column gender: none of its 20 cell(s) can be read as a number "
        "(line 2: 'Male'); write the column as numbers, flags as 1 and 0, and load the "
        "file again"
    )
    assert _count(database, "crm.questionnaires") == 0


def test_load_extra_columns_member_id_keys(database):
    loaded = read_questionnaire_csv(CASES / "09_extra_unknown_columns.csv")

    summary = load_questionnaire_file(database, loaded, OCTOBER)

    assert summary.questionnaires_inserted == 20
    assert summary.faults == 0
    with database.connect() as conn:
        ids = conn.execute(sa.text("SELECT client_id FROM crm.questionnaires ORDER BY 1"))
        assert ids.scalars().all() == list(range(1, 21))


def test_load_corrected_file_clears_faults(database, tmp_path):
    faulty = _with_client_ids(CASES / "10_nan_in_lifetime.csv", tmp_path, "faulty.csv")
    corrected = _with_client_ids(REFERENCE, tmp_path, "corrected.csv")
    first = load_questionnaire_file(database, read_questionnaire_csv(faulty), OCTOBER)
    again = load_questionnaire_file(database, read_questionnaire_csv(faulty), OCTOBER)

    summary = load_questionnaire_file(database, read_questionnaire_csv(corrected), OCTOBER)

    assert (first.faults, again.faults, summary.faults) == (4, 4, 0)
    assert summary.questionnaires_updated == 4
    assert _count(database, "crm.questionnaire_faults") == 0
    with database.connect() as conn:
        nulls = conn.execute(
            sa.text("SELECT count(*) FROM crm.questionnaires WHERE lifetime IS NULL")
        ).scalar_one()
    assert nulls == 0


def test_load_partial_file_keeps_other_faults(database, tmp_path):
    # Clients 1-5 come again without faults; the faults of clients 6, 13 and 17 stay.
    faulty = _with_client_ids(CASES / "10_nan_in_lifetime.csv", tmp_path, "faulty.csv")
    corrected = _with_client_ids(REFERENCE, tmp_path, "corrected.csv")
    first_clients = _write(
        tmp_path, "\n".join(corrected.read_text().splitlines()[:6]) + "\n", "first.csv"
    )
    load_questionnaire_file(database, read_questionnaire_csv(faulty), OCTOBER)

    summary = load_questionnaire_file(database, read_questionnaire_csv(first_clients), OCTOBER)

    assert summary.faults == 0
    assert summary.questionnaires_updated == 1
    with database.connect() as conn:
        faults = read_month_faults(conn, OCTOBER)
    assert faults[CLIENT_ID].to_list() == [6, 13, 17]


def test_load_replace_deletes_month_faults(database, tmp_path):
    faulty = _with_client_ids(CASES / "10_nan_in_lifetime.csv", tmp_path, "faulty.csv")
    load_questionnaire_file(database, read_questionnaire_csv(faulty), OCTOBER)
    load_questionnaire_file(database, read_questionnaire_csv(faulty), NOVEMBER)
    lines = REFERENCE.read_text().splitlines()
    shorter = _write(tmp_path, "\n".join(lines[:3]) + "\n", "shorter.csv")

    summary = load_questionnaire_file(
        database, read_questionnaire_csv(shorter), OCTOBER, replace=True
    )

    assert summary.faults == 0
    assert summary.questionnaires_removed == 20
    with database.connect() as conn:
        assert read_month_faults(conn, OCTOBER).empty
        assert len(read_month_faults(conn, NOVEMBER)) == 4


def test_load_bad_cells_stored_as_null(database, tmp_path):
    header, rows = _reference_table()
    rows = _with_cell(rows, 0, header.index("Age"), "33.5")
    rows = _with_cell(rows, 1, header.index("Avg_additional_charges_total"), "-")
    rows = _with_cell(rows, 2, header.index("Lifetime"), "n/a")
    path = _write_table(tmp_path, header, rows)

    summary = load_questionnaire_file(database, read_questionnaire_csv(path), OCTOBER)

    assert summary.faults == 3
    with database.connect() as conn:
        stored = conn.execute(
            sa.text(
                "SELECT age, avg_additional_charges_total, lifetime FROM crm.questionnaires"
                " WHERE client_id <= 3 ORDER BY client_id"
            )
        ).all()
        faults = read_month_faults(conn, OCTOBER)
    assert [tuple(row) for row in stored] == [
        (None, 14.22747042, 3),
        (31, None, 7),
        (28, 129.4484793, None),
    ]
    assert list(faults.itertuples(index=False, name=None)) == [
        (1, "age", 2, "33.5", "not_an_integer"),
        (2, "avg_additional_charges_total", 3, "-", "missing"),
        (3, "lifetime", 4, "n/a", "missing"),
    ]


def test_upgrade_twice_keeps_faults(database):
    load_questionnaire_file(
        database, read_questionnaire_csv(CASES / "10_nan_in_lifetime.csv"), OCTOBER
    )

    db.upgrade(database)

    assert _count(database, "crm.questionnaire_faults") == 4


def test_repeated_header_line_rejected(tmp_path):
    lines = (CASES / "00_clean_reference.csv").read_text().splitlines()
    joined = tmp_path / "joined.csv"
    joined.write_text("\n".join([*lines[:11], lines[0], *lines[11:]]) + "\n")

    with pytest.raises(CsvFormatError, match="line 12 repeats the header line"):
        read_questionnaire_csv(joined)


# Cells a damaged export may hold: huge and tiny numbers, markers, text. No
# separators, quotes or line breaks, so the damage stays inside one cell.
_DAMAGED_CELLS = st.one_of(
    st.sampled_from(["", "NaN", "-", "inf", "-inf", "1e308", "1e400", "-1e400", "9" * 40]),
    st.sampled_from(["-0", "0x1F", "1_000", "٣", "１２", "1e-400", "29.0", "29.5"]),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(
        alphabet=st.characters(
            blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters=',;|"'
        ),
        max_size=8,
    ),
)
_REFERENCE_LINES = (CASES / "00_clean_reference.csv").read_text(encoding="utf-8").splitlines()
_N_COLUMNS = len(_REFERENCE_LINES[0].split(","))


@st.composite
def _damaged_text(draw) -> str:
    """The reference file with cells replaced, blank lines added, and maybe cut short."""
    rows = [line.split(",") for line in _REFERENCE_LINES[1:]]
    for _ in range(draw(st.integers(0, 12))):
        row = draw(st.integers(0, len(rows) - 1))
        rows[row][draw(st.integers(0, _N_COLUMNS - 1))] = draw(_DAMAGED_CELLS)
    lines = [_REFERENCE_LINES[0], *(",".join(row) for row in rows)]
    for _ in range(draw(st.integers(0, 3))):
        lines.insert(draw(st.integers(1, len(lines))), draw(st.sampled_from(["", " ", "\t"])))
    text = "\n".join(lines) + "\n"
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]
    return text


def _read_or_reject(data: bytes):
    """Read ``data`` as a file; return the result, or None when it was rejected with the path."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "damaged.csv"
        path.write_bytes(data)
        try:
            return read_questionnaire_csv(path)
        except CsvFormatError as err:
            assert str(path) in str(err)
            return None


def _assert_every_row_accounted_for(loaded) -> None:
    """Every missing feature is a reported fault, and validation keeps or quarantines each row."""
    questionnaires = loaded.questionnaires
    faults = set(zip(loaded.faults[CLIENT_ID], loaded.faults["column"], strict=True))
    for column in FEATURES:
        missing = questionnaires.loc[questionnaires[column].isna(), CLIENT_ID]
        assert {(client, column) for client in missing} <= faults
    assert {client for client, _ in faults} <= set(questionnaires[CLIENT_ID])
    if loaded.outcomes is not None:
        assert set(loaded.outcomes[CLIENT_ID]) <= set(questionnaires[CLIENT_ID])
    frame = questionnaires.assign(month=dt.date(2026, 10, 1), churned=np.nan)
    frame[ROW_NUMBER] = np.arange(1, len(frame) + 1, dtype="int64")
    try:
        report = validate_questionnaires(
            frame, dataset="damaged", max_invalid_share=1.0, faults=loaded.faults
        )
    except DataValidationError:
        # A batch-level stop (every row bad, say) names its cause; nothing is lost.
        return
    assert report.n_valid + report.n_quarantined == len(frame)
    kept = set(report.valid[CLIENT_ID])
    quarantined = set(report.quarantined[CLIENT_ID])
    assert kept.isdisjoint(quarantined)
    assert kept | quarantined == set(frame[CLIENT_ID])
    assert {client for client, _ in faults} <= quarantined


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_damaged_text())
def test_damaged_file_loaded_or_rejected(text):
    loaded = _read_or_reject(text.encode("utf-8"))

    if loaded is None:
        return
    data_lines = [line for line in text.splitlines()[1:] if line.strip()]
    assert len(loaded.questionnaires) == len(data_lines)
    _assert_every_row_accounted_for(loaded)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=st.booleans(), data=st.binary(max_size=600))
def test_random_bytes_loaded_or_rejected(header, data):
    prefix = (_REFERENCE_LINES[0] + "\n").encode() if header else b""

    loaded = _read_or_reject(prefix + data)

    if loaded is not None:
        _assert_every_row_accounted_for(loaded)


def _read_in_chunks(monkeypatch, path, records: int):
    monkeypatch.setattr("gymchurn.loader.READ_CHUNK_RECORDS", records)
    return read_questionnaire_csv(path)


def _assert_same_file(left, right) -> None:
    pd.testing.assert_frame_equal(left.questionnaires, right.questionnaires)
    if right.outcomes is None:
        assert left.outcomes is None
    else:
        pd.testing.assert_frame_equal(left.outcomes, right.outcomes)
    pd.testing.assert_frame_equal(left.faults, right.faults)
    assert (left.ids_assigned, left.decimal_mark, left.encoding, left.delimiter) == (
        right.ids_assigned,
        right.decimal_mark,
        right.encoding,
        right.delimiter,
    )


@pytest.mark.parametrize(
    "name",
    [
        "00_clean_reference.csv",
        "01_bom_semicolon_decimal_comma.csv",
        "02_churn_yes_no.csv",
        "09_extra_unknown_columns.csv",
        "10_nan_in_lifetime.csv",
        "12_cp1251_russian_headers.csv",
        "17_columns_reordered.csv",
    ],
)
def test_read_in_chunks_same_as_whole(monkeypatch, name):
    whole = read_questionnaire_csv(CASES / name)

    chunked = _read_in_chunks(monkeypatch, CASES / name, 3)

    _assert_same_file(chunked, whole)


def test_read_real_file_in_chunks_same_as_whole(monkeypatch, real_data):
    whole = read_questionnaire_csv(real_data)

    chunked = _read_in_chunks(monkeypatch, real_data, 999)

    assert len(chunked.questionnaires) == 4000
    assert chunked.questionnaires[CLIENT_ID].to_list() == list(range(1, 4001))
    _assert_same_file(chunked, whole)


def test_read_chunks_comma_after_integers(monkeypatch, tmp_path):
    # The first chunk has no fraction, so its decimal mark is known only later.
    header, rows = _reference_table()
    rows = _decimal_comma(rows)
    integer_row = [cell.split(",")[0] for cell in rows[0]]
    lifetime = header.index("Lifetime")
    rows = [integer_row, integer_row, *_with_cell(rows, 4, lifetime, "n/a")]
    path = _write_table(tmp_path, header, rows, delimiter=";")

    chunked = _read_in_chunks(monkeypatch, path, 2)

    assert chunked.decimal_mark == ","
    assert _fault_records(chunked) == [(7, 8, "lifetime", "n/a", "missing")]
    assert chunked.questionnaires["avg_additional_charges_total"][2] == 14.22747042
    _assert_same_file(chunked, _read_in_chunks(monkeypatch, path, 100_000))


def test_read_in_chunks_repeated_ids_across_chunks_rejected(monkeypatch, tmp_path):
    path = _with_client_ids(REFERENCE, tmp_path, "ids.csv")
    lines = path.read_text(encoding="utf-8").splitlines()
    # The client of line 2 again on line 9, in another chunk of three rows.
    lines[8] = "1," + lines[8].split(",", 1)[1]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    with pytest.raises(CsvFormatError, match="client ids repeat on lines 2, 9;"):
        _read_in_chunks(monkeypatch, path, 3)


def test_read_in_chunks_grouping_in_later_chunk_rejected(monkeypatch, tmp_path):
    header, rows = _reference_table()
    column = header.index("Avg_additional_charges_total")
    path = _write_table(tmp_path, header, _with_cell(rows, 7, column, "1.234,5"))

    with pytest.raises(CsvFormatError) as raised:
        _read_in_chunks(monkeypatch, path, 3)

    message = str(raised.value)
    assert "line 9, column Avg_additional_charges_total: '1.234,5' has digit grouping" in message
    assert "the first such cell of the file" in message


def test_load_in_chunks_stores_every_row(database, monkeypatch, real_data):
    monkeypatch.setattr("gymchurn.loader.READ_CHUNK_RECORDS", 999)
    loaded = read_questionnaire_csv(real_data)

    summary = load_questionnaire_file(database, loaded, OCTOBER)

    assert (summary.questionnaires_inserted, summary.outcomes_inserted) == (4000, 4000)
    with database.connect() as conn:
        stored = pd.read_sql(
            sa.text(
                "SELECT q.client_id, q.age, q.avg_additional_charges_total, o.churned"
                " FROM crm.questionnaires AS q"
                " JOIN crm.churn_outcomes AS o USING (client_id, month)"
                " ORDER BY q.client_id"
            ),
            conn,
        )
    assert stored["client_id"].to_list() == list(range(1, 4001))
    assert stored["age"].to_list() == loaded.questionnaires["age"].to_list()
    np.testing.assert_array_equal(
        stored["avg_additional_charges_total"].to_numpy(),
        loaded.questionnaires["avg_additional_charges_total"].to_numpy(),
    )
    assert int(stored["churned"].sum()) == 1061


def _waiting_advisory_locks(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        ).scalar_one()


def test_loads_of_one_month_wait_for_each_other(database, monkeypatch):
    # Two files without ids and with different values, loaded at once: the
    # second must see the first's rows and be rejected, not overwrite them.
    first = read_questionnaire_csv(REFERENCE)
    second = read_questionnaire_csv(CASES / "04_month_to_end_gt_contract.csv")
    paused, resume = threading.Event(), threading.Event()
    replace_faults = loader_module._replace_faults

    def pausing_replace_faults(conn, faults, month, replace):
        if faults is first.faults:
            paused.set()
            assert resume.wait(60)
        return replace_faults(conn, faults, month, replace)

    monkeypatch.setattr(loader_module, "_replace_faults", pausing_replace_faults)
    outcomes = {}

    def load(name, loaded):
        try:
            outcomes[name] = load_questionnaire_file(database, loaded, OCTOBER)
        except LoadConflictError as error:
            outcomes[name] = error

    first_load = threading.Thread(target=load, args=("first", first))
    first_load.start()
    assert paused.wait(60)
    second_load = threading.Thread(target=load, args=("second", second))
    second_load.start()
    deadline = time.monotonic() + 30
    while _waiting_advisory_locks(database) != 1:
        assert time.monotonic() < deadline, "the second load did not wait for the month's lock"
        time.sleep(0.05)
    resume.set()
    first_load.join(60)
    second_load.join(60)

    assert outcomes["first"].questionnaires_inserted == 20
    assert isinstance(outcomes["second"], LoadConflictError)
    assert "would change 3 questionnaire(s)" in str(outcomes["second"])
    with database.connect() as conn:
        stored = conn.execute(
            sa.text(
                "SELECT month_to_end_contract FROM crm.questionnaires"
                " WHERE month = '2026-10-01' ORDER BY client_id"
            )
        ).scalars()
        assert list(stored) == first.questionnaires["month_to_end_contract"].to_list()


def _stored_month(
    engine, month: dt.date = OCTOBER
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return the month's questionnaires, outcomes and faults as stored, by client."""
    params = {"month": month}
    with engine.connect() as conn:
        questionnaires = pd.read_sql(
            sa.text("SELECT * FROM crm.questionnaires WHERE month = :month ORDER BY client_id"),
            conn,
            params=params,
        )
        outcomes = pd.read_sql(
            sa.text("SELECT * FROM crm.churn_outcomes WHERE month = :month ORDER BY client_id"),
            conn,
            params=params,
        )
        faults = read_month_faults(conn, month)
    return questionnaires.drop(columns="loaded_at", errors="ignore"), outcomes, faults


@pytest.mark.parametrize(
    ("name", "chunk_records"),
    [
        ("00_clean_reference.csv", 3),
        ("01_bom_semicolon_decimal_comma.csv", 3),
        ("02_churn_yes_no.csv", 2),
        ("10_nan_in_lifetime.csv", 3),
        ("12_cp1251_russian_headers.csv", 4),
    ],
)
def test_load_csv_stores_what_a_whole_read_stores(
    database, monkeypatch, tmp_path, name, chunk_records
):
    whole = read_questionnaire_csv(CASES / name)
    expected = load_questionnaire_file(database, whole, OCTOBER)
    stored = _stored_month(database)
    with database.begin() as conn:
        conn.execute(sa.text("DELETE FROM crm.questionnaire_faults"))
        conn.execute(sa.text("DELETE FROM crm.churn_outcomes"))
        conn.execute(sa.text("DELETE FROM crm.questionnaires"))
    monkeypatch.setattr("gymchurn.loader.READ_CHUNK_RECORDS", chunk_records)

    loaded = load_csv(database, open_questionnaire_csv(CASES / name), OCTOBER)

    assert loaded.summary == expected
    assert loaded.summary.rows_read == len(whole.questionnaires)
    pd.testing.assert_frame_equal(loaded.faults, whole.faults)
    for streamed, read_whole in zip(_stored_month(database), stored, strict=True):
        pd.testing.assert_frame_equal(streamed, read_whole)


def test_load_csv_real_file_in_chunks(database, monkeypatch, real_data):
    monkeypatch.setattr("gymchurn.loader.READ_CHUNK_RECORDS", 999)

    loaded = load_csv(database, open_questionnaire_csv(real_data), OCTOBER)
    again = load_csv(database, open_questionnaire_csv(real_data), OCTOBER)

    assert (loaded.summary.questionnaires_inserted, loaded.summary.outcomes_inserted) == (
        4000,
        4000,
    )
    assert (again.summary.questionnaires_inserted, again.summary.questionnaires_updated) == (0, 0)
    questionnaires, outcomes, _ = _stored_month(database)
    whole = read_questionnaire_csv(real_data)
    assert questionnaires["client_id"].to_list() == list(range(1, 4001))
    assert questionnaires["age"].to_list() == whole.questionnaires["age"].to_list()
    assert int(outcomes["churned"].sum()) == int(whole.outcomes[CHURNED].sum()) == 1061


def test_load_csv_repeated_ids_across_chunks_writes_nothing(database, monkeypatch, tmp_path):
    path = _with_client_ids(REFERENCE, tmp_path, "ids.csv")
    lines = path.read_text(encoding="utf-8").splitlines()
    # The client of line 2 again on lines 9 and 15, each in another chunk.
    for index in (8, 14):
        lines[index] = "1," + lines[index].split(",", 1)[1]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr("gymchurn.loader.READ_CHUNK_RECORDS", 3)

    with pytest.raises(CsvFormatError, match="client ids repeat on lines 2, 9, 15;"):
        load_csv(database, open_questionnaire_csv(path), OCTOBER)

    assert _count(database, "crm.questionnaires") == 0


def test_load_csv_last_chunk_fault_writes_nothing(database, monkeypatch, tmp_path):
    load_csv(database, open_questionnaire_csv(REFERENCE), OCTOBER)
    before = _stored_month(database)
    header, rows = _reference_table()
    changed = _with_cell(rows, 0, header.index("Age"), "45")
    path = _write_table(tmp_path, header, changed)
    # A short record on the file's last line, five chunks after the changed age.
    path.write_text(path.read_text(encoding="utf-8") + "1,0,1\n", encoding="utf-8")
    monkeypatch.setattr("gymchurn.loader.READ_CHUNK_RECORDS", 4)

    with pytest.raises(CsvFormatError, match=f"line {len(rows) + 2}: 3 fields"):
        load_csv(database, open_questionnaire_csv(path), OCTOBER, replace=True)

    for after, stored in zip(_stored_month(database), before, strict=True):
        pd.testing.assert_frame_equal(after, stored)


def test_load_csv_later_unknown_label_removes_outcome(database, monkeypatch, tmp_path):
    path = _with_client_ids(REFERENCE, tmp_path, "ids.csv")
    load_csv(database, open_questionnaire_csv(path), OCTOBER)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[12] = lines[12].rsplit(",", 1)[0] + ",maybe"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr("gymchurn.loader.READ_CHUNK_RECORDS", 5)

    loaded = load_csv(database, open_questionnaire_csv(path), OCTOBER)

    assert loaded.summary.outcomes_removed == 1
    _, outcomes, _ = _stored_month(database)
    assert len(outcomes) == 19
    assert 12 not in outcomes["client_id"].to_list()


def test_unknown_labels_warning_counts_unlisted_lines(tmp_path, caplog):
    header, rows = _reference_table()
    churn = header.index("Churn")
    path = _write_table(tmp_path, header, [[*row[:churn], "maybe"] for row in rows])

    with caplog.at_level(logging.WARNING, logger="gymchurn.loader"):
        read_questionnaire_csv(path)

    lines = ", ".join(str(line) for line in range(2, 12))
    assert f"20 row(s) without a known label (line {lines} and 10 more)" in caplog.text


def test_load_csv_unknown_labels_into_new_month(database, tmp_path):
    # The month's outcomes are written in the load's own transaction, before
    # the outcomes of the unknown labels are looked for among them.
    path = _with_client_ids(REFERENCE, tmp_path, "ids.csv")
    load_csv(database, open_questionnaire_csv(path), NOVEMBER)
    lines = path.read_text(encoding="utf-8").splitlines()
    for index in (3, 12, 17):
        lines[index] = lines[index].rsplit(",", 1)[0] + ",maybe"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    new_month = load_csv(database, open_questionnaire_csv(path), OCTOBER)
    loaded_month = load_csv(database, open_questionnaire_csv(path), NOVEMBER)

    assert (new_month.summary.outcomes_inserted, new_month.summary.outcomes_removed) == (17, 0)
    assert loaded_month.summary.outcomes_removed == 3
    _, outcomes, _ = _stored_month(database, NOVEMBER)
    assert sorted(set(range(1, 21)) - set(outcomes["client_id"])) == [3, 12, 17]


def test_binary_byte_deep_in_file_named_by_line(monkeypatch, tmp_path):
    header, rows = _reference_table()
    path = _write_table(tmp_path, header, rows)
    lines = path.read_bytes().split(b"\n")
    lines[17] = lines[17].replace(b",", b",\x00", 1)
    path.write_bytes(b"\n".join(lines))
    # Blocks of 64 bytes: the byte is found many blocks into the file.
    monkeypatch.setattr("gymchurn.loader._SCAN_BLOCK_BYTES", 64)

    with pytest.raises(CsvFormatError, match="binary bytes, the first on line 18"):
        open_questionnaire_csv(path)


def test_invalid_utf8_named_by_byte_across_blocks(monkeypatch, tmp_path):
    header = ",".join(f"{name}Ё" for name in HEADER.split(","))
    body = f"{header}\n{ROW}\n".encode()
    # Blocks of 7 bytes split the header's two-byte letters, and the
    # Windows-1251 byte ends a block, so the decoder holds it until the next.
    body += b"\n" * (6 - len(body) % 7)
    content = body + b"\xd0\n"
    path = tmp_path / "mixed.csv"
    path.write_bytes(content)
    monkeypatch.setattr("gymchurn.loader._SCAN_BLOCK_BYTES", 7)

    with pytest.raises(CsvFormatError) as raised:
        open_questionnaire_csv(path)

    line = body.count(b"\n") + 1
    assert f"line {line}: invalid UTF-8 at byte {len(body)} on line {line}" in str(raised.value)
    assert "although the file has UTF-8 text before it," in str(raised.value)


def test_bom_file_with_invalid_byte_rejected(database, tmp_path):
    # Read as Windows-1251, the byte order mark would hide the client_id header.
    path = _with_client_ids(REFERENCE, tmp_path, "ids.csv")
    content = codecs.BOM_UTF8 + path.read_bytes().replace(b",29,", b",2\xff9,", 1)
    path.write_bytes(content)

    with pytest.raises(CsvFormatError) as raised:
        load_csv(database, open_questionnaire_csv(path), OCTOBER)

    message = str(raised.value)
    assert f"{path}: line 2: invalid UTF-8 at byte" in message
    assert "although the file starts with a UTF-8 byte order mark, so" in message
    assert _count(database, "crm.questionnaires") == 0


def test_invalid_byte_before_utf8_labels_rejected(database, tmp_path):
    header, rows = _reference_table()
    churn = header.index("Churn")
    labels = {"1": "да", "0": "нет"}
    rows = [[*row[:churn], labels[row[churn]]] for row in rows]
    path = _write_table(tmp_path, header, rows)
    lines = path.read_bytes().split(b"\n")
    # The damaged byte comes before any of the Russian labels' UTF-8 bytes.
    lines[1] = b"\xff" + lines[1]
    path.write_bytes(b"\n".join(lines))

    with pytest.raises(CsvFormatError) as raised:
        load_csv(database, open_questionnaire_csv(path), OCTOBER)

    message = str(raised.value)
    assert "line 2: invalid UTF-8 at byte" in message
    assert "although the file is UTF-8 text elsewhere" in message
    assert _count(database, "crm.churn_outcomes") == 0


def test_ascii_with_invalid_byte_read_as_cp1251(database, tmp_path, caplog):
    header, rows = _reference_table()
    path = _write_table(tmp_path, header, rows)
    lines = path.read_bytes().split(b"\n")
    age = header.index("Age")
    cells = lines[15].split(b",")
    cells[age] = b"2\xff9"
    lines[15] = b",".join(cells)
    path.write_bytes(b"\n".join(lines))

    with caplog.at_level(logging.WARNING, logger="gymchurn.loader"):
        loaded = load_csv(database, open_questionnaire_csv(path), OCTOBER)

    assert loaded.source.decoded.encoding == "cp1251"
    assert loaded.summary.questionnaires_inserted == len(rows)
    assert "not UTF-8 from line 16" in caplog.text
    faults = loaded.faults[["line", "column", "raw_value"]].to_numpy().tolist()
    assert faults == [[16, "age", "2я9"]]
