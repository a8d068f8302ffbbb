"""COPY helpers of gymchurn.db: array columns through CSV, reading COPY output as it streams."""

import io

import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from gymchurn import db


def test_array_literal_round_trips_through_copy(database):
    reasons = [
        ["1-month contract ends in 1 month", "spends 1,234 on extras"],
        [],
        ['says "hello"', "back\\slash", "{braces}", "semi;colon"],
        ["NULL", "", "trailing space "],
    ]
    frame = pd.DataFrame(
        {"id": range(len(reasons)), "reasons": [db.array_literal(r) for r in reasons]}
    )
    with database.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE public.arrays (id int, reasons text[])")
        written = db.copy_frame(conn, "public.arrays", frame)
    with database.connect() as conn:
        stored = conn.execute(sa.text("SELECT reasons FROM public.arrays ORDER BY id")).all()
    assert written == 4
    assert [list(row.reasons) for row in stored] == reasons


def test_copy_stream_reads_blocks_split_anywhere():
    text = b"client_id,age\n" + b"".join(f"{i},{20 + i % 30}\n".encode() for i in range(5000))
    # Blocks of 7 bytes split lines, numbers and the header.
    blocks = [text[start : start + 7] for start in range(0, len(text), 7)]
    frame = pd.read_csv(io.BufferedReader(db._CopyStream(blocks), buffer_size=64))
    assert len(frame) == 5000
    assert frame["client_id"].to_list() == list(range(5000))
    assert frame["age"].iloc[4999] == 20 + 4999 % 30


def test_copy_stream_of_no_blocks_is_empty():
    stream = io.BufferedReader(db._CopyStream([]))
    assert stream.read() == b""


def test_copy_to_file_writes_rows(database, tmp_path):
    statement = sql.SQL(
        "COPY (SELECT g AS n, 'a,b' AS text FROM generate_series(1, %(last)s) AS g)"
        " TO STDOUT (FORMAT CSV, HEADER)"
    )
    path = tmp_path / "out" / "rows.csv"

    with database.connect() as conn:
        written = db.copy_to_file(conn, statement, {"last": 3}, path)

    assert written == 3
    assert path.read_text() == 'n,text\n1,"a,b"\n2,"a,b"\n3,"a,b"\n'
    assert [p.name for p in path.parent.iterdir()] == ["rows.csv"]


def test_copy_to_file_failure_leaves_no_file(database, tmp_path):
    statement = sql.SQL(
        "COPY (SELECT 1 / (2 - g) FROM generate_series(1, 3) AS g) TO STDOUT (FORMAT CSV)"
    )
    path = tmp_path / "rows.csv"

    with database.connect() as conn, pytest.raises(psycopg.errors.DivisionByZero):
        db.copy_to_file(conn, statement, None, path)

    assert list(tmp_path.iterdir()) == []
