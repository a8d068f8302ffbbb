"""Rows in PostgreSQL's binary COPY format, built a block of rows at a time with numpy.

psycopg's ``Copy.write_row`` formats one row per Python call: on a million
score rows it took twice as long as the server took to store them. Here a
column is either a number array (:class:`Numbers`) or codes into a list of
distinct values (:class:`Coded`). A structured numpy array writes the number
fields of a block of rows at once, and each combination of coded values is
framed once, so a block is then one ``bytes.join``.

The format (PostgreSQL's documentation of COPY, "Binary Format"): a header,
then per row a 16-bit field count and per field a 32-bit length (-1 for NULL)
followed by that many bytes, then a 16-bit -1. Numbers are big-endian, text is
in the connection's encoding, and a one-dimensional ``text[]`` is its number
of dimensions, a has-null flag, the element type, the length and lower bound,
then each element as a field.
"""

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
"""Signature, flags and header extension length."""
TRAILER = b"\xff\xff"

_TEXT_OID = 25
_NULL = b"\xff\xff\xff\xff"
_LENGTH = struct.Struct(">i")
_ARRAY_HEAD = struct.Struct(">5i")
_EMPTY_ARRAY = struct.pack(">3i", 0, 0, _TEXT_OID)


@dataclass(frozen=True)
class Numbers:
    """A column of numbers without NULLs, sent as ``dtype`` (``">i8"``, ``">f8"``, ``"?"``...)."""

    values: np.ndarray
    dtype: np.dtype | str


@dataclass(frozen=True)
class Coded:
    """A column whose row ``i`` is ``payloads[codes[i]]``: a field's bytes, or None for NULL."""

    codes: np.ndarray
    payloads: Sequence[bytes | None]


Column = Numbers | Coded


def text_payloads(values: Sequence[str | None], encoding: str) -> list[bytes | None]:
    """Encode each text, keeping None as NULL."""
    return [None if value is None else value.encode(encoding) for value in values]


def text_array_payload(items: Sequence[str], encoding: str) -> bytes:
    """Encode ``items`` as a one-dimensional ``text[]`` value; ``[]`` is the empty array."""
    if not items:
        return _EMPTY_ARRAY
    parts = [_ARRAY_HEAD.pack(1, 0, _TEXT_OID, len(items), 1)]
    for item in items:
        encoded = item.encode(encoding)
        parts.append(_LENGTH.pack(len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


# Largest key of a combination of codes before the keys are renumbered.
_KEY_LIMIT = 2**62


def blocks(columns: Sequence[Column], order: np.ndarray, rows: int = 100_000) -> Iterator[bytes]:
    """Yield the rows at positions ``order`` of ``columns``, ``rows`` at a time, framed.

    The first block is :data:`HEADER` and the last :data:`TRAILER`, so the
    blocks written in turn are a whole COPY input.
    """
    yield HEADER
    segments = _segments(columns)
    for start in range(0, len(order), rows):
        positions = order[start : start + rows]
        pieces = [segment.rows(positions) for segment in segments]
        parts: list = [None] * (len(positions) * len(pieces))
        for index, piece in enumerate(pieces):
            parts[index :: len(pieces)] = piece
        yield b"".join(parts)
    yield TRAILER


def _segments(columns: Sequence[Column]) -> list:
    """Split a row into runs of number columns and runs of coded columns.

    A row starts with its field count, so the first run is a run of numbers,
    empty when the first column is coded.
    """
    segments: list = [_NumberRun(len(columns))]
    for column in columns:
        kind = _NumberRun if isinstance(column, Numbers) else _CodedRun
        if not isinstance(segments[-1], kind):
            segments.append(kind())
        segments[-1].columns.append(column)
    return segments


class _NumberRun:
    """Number columns side by side: each row's fields are one record of a structured array."""

    def __init__(self, field_count: int | None = None):
        self.field_count = field_count
        self.columns: list[Numbers] = []

    def rows(self, positions: np.ndarray) -> list[bytes]:
        layout = [] if self.field_count is None else [("count", ">i2")]
        for index, column in enumerate(self.columns):
            layout += [(f"length{index}", ">i4"), (f"value{index}", column.dtype)]
        records = np.empty(len(positions), dtype=np.dtype(layout))
        if self.field_count is not None:
            records["count"] = self.field_count
        for index, column in enumerate(self.columns):
            records[f"length{index}"] = np.dtype(column.dtype).itemsize
            records[f"value{index}"] = column.values[positions]
        data = records.tobytes()
        width = records.dtype.itemsize
        return [data[start : start + width] for start in range(0, len(data), width)]


class _CodedRun:
    """Coded columns side by side: each distinct combination of their values is framed once."""

    def __init__(self):
        self.columns: list[Coded] = []
        self._combined: np.ndarray | None = None
        self._fields: np.ndarray | None = None

    def rows(self, positions: np.ndarray) -> list[bytes]:
        if self._combined is None:
            self._combine()
        return self._fields[self._combined[positions]].tolist()

    def _combine(self) -> None:
        for column in self.columns:
            if len(column.codes) and column.codes.min() < 0:
                raise ValueError(
                    "invalid code -1 in a coded column: every code must index its payloads, "
                    "with None as the payload of NULL"
                )
        key = np.zeros(len(self.columns[0].codes), dtype="int64")
        span = 1
        for column in self.columns:
            if span * len(column.payloads) >= _KEY_LIMIT:
                # Renumbered, so that the key stays below the row count.
                key = pd.factorize(key)[0]
                span = int(key.max(initial=0)) + 1
            # Updated in place, so that only one array of keys exists.
            np.multiply(key, len(column.payloads), out=key)
            np.add(key, column.codes, out=key)
            span *= len(column.payloads)
        combined = pd.factorize(key)[0]
        del key
        # One row of each combination, to read its codes from.
        example = np.empty(combined.max(initial=-1) + 1, dtype="int64")
        example[combined] = np.arange(len(combined))
        framed = [[_field(payload) for payload in column.payloads] for column in self.columns]
        fields = np.empty(len(example), dtype="object")
        fields[:] = [
            b"".join(framed[c][column.codes[row]] for c, column in enumerate(self.columns))
            for row in example.tolist()
        ]
        self._combined, self._fields = combined, fields


def _field(payload: bytes | None) -> bytes:
    if payload is None:
        return _NULL
    return _LENGTH.pack(len(payload)) + payload
