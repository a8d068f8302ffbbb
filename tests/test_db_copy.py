"""COPY helpers: binary COPY input, and reading COPY output as it streams."""

import io

import numpy as np
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from gymchurn import binary_copy, db


def test_binary_blocks_round_trip_through_copy(database):
    """Each kind of column the score writer sends, in blocks that split the rows."""
    arrays = [["fell from 2.0 to 1.0", "ü ß"], [], ['say "x"', "{a,b}", "back\\slash", "NULL", ""]]
    columns = [
        binary_copy.Numbers(np.array([3, -1, 2**40]), ">i8"),
        binary_copy.Numbers(np.array([0.1, 2.5e-7, 1 / 3]), ">f8"),
        binary_copy.Numbers(np.array([-2, 7, 0]), ">i2"),
        binary_copy.Numbers(np.array([True, False, True]), "?"),
        binary_copy.Coded(np.array([1, 0, 1]), [b"high", None]),
        binary_copy.Coded(
            np.array([0, 1, 2]), [binary_copy.text_array_payload(a, "utf-8") for a in arrays]
        ),
    ]
    names = ["id", "share", "small", "flag", "tier", "reasons"]
    with database.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE public.fields (id bigint, share float8, small smallint, flag boolean,"
            " tier text, reasons text[])"
        )
        blocks = list(binary_copy.blocks(columns, np.array([2, 0, 1]), rows=2))
        db.copy_binary(conn, "public.fields", names, blocks)
    with database.connect() as conn:
        stored = conn.execute(sa.text("SELECT * FROM public.fields")).all()

    # A header, two blocks (two rows and one) and the trailer.
    assert len(blocks) == 4
    assert [tuple(row) for row in stored] == [
        (2**40, 1 / 3, 0, True, None, arrays[2]),
        (3, 0.1, -2, True, None, arrays[0]),
        (-1, 2.5e-7, 7, False, "high", []),
    ]


def test_binary_blocks_without_rows(database):
    with database.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE public.fields (id bigint)")
        columns = [binary_copy.Numbers(np.array([], dtype="int64"), ">i8")]
        db.copy_binary(conn, "public.fields", ["id"], binary_copy.blocks(columns, np.array([])))
    with database.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM public.fields")).scalar() == 0


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


def test_binary_blocks_reject_code_without_payload():
    columns = [binary_copy.Coded(np.array([0, -1]), [b"high"])]

    with pytest.raises(ValueError, match="invalid code -1"):
        list(binary_copy.blocks(columns, np.array([0, 1])))


def test_coded_keys_renumbered_past_limit(monkeypatch):
    """Keys of many coded columns are renumbered before they would overflow."""
    codes = [
        np.array([0, 1, 2, 0, 1, 2]),
        np.array([1, 1, 0, 0, 1, 1]),
        np.array([2, 2, 2, 0, 0, 2]),
    ]
    columns = [
        binary_copy.Coded(c, [f"{i}{v}".encode() for v in range(3)]) for i, c in enumerate(codes)
    ]

    def framed(limit):
        monkeypatch.setattr(binary_copy, "_KEY_LIMIT", limit)
        return list(binary_copy.blocks(columns, np.arange(6), rows=6))

    assert framed(4) == framed(2**62)
    # Each row's fields, in order: the first column's value 0 twice, the third's 2 four times.
    body = framed(4)[1]
    assert body.count(b"00") == 2
    assert body.count(b"22") == 4
