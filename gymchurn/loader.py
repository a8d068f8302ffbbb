"""Read questionnaire CSV files and load them into ``crm``.

A file is checked whole before anything is written to ``crm``: ``load_csv``
reads it a chunk at a time into temporary tables and writes the month from
them once the last chunk has passed. A file whose structure cannot be read
safely is rejected with a CsvFormatError naming the file, line and column, and
the database is left as it was. A feature cell that
is not a valid number does not reject the file: its value becomes missing, and
the cell is kept as a row fault in ``QuestionnaireFile.faults`` and
``crm.questionnaire_faults``.

File rules:

- Encoding: a file that starts with a UTF-16 byte order mark is read as UTF-16.
  Any other file is read as UTF-8, without its BOM if it has one. A file that is
  not valid UTF-8 is read as Windows-1251 only when its header then names every
  feature through ``gymchurn.aliases``. Otherwise it is rejected, and the error
  names the encoding and the unknown headers. A file with a UTF-8 BOM, with
  UTF-8 text before its first invalid byte, or with more valid UTF-8 characters
  than invalid bytes is UTF-8 with a damaged byte, and is rejected naming that
  byte's line. Control characters other than tab and line
  breaks mean binary data.
- Separator: whichever of ``,``, ``;``, tab and ``|`` splits the header into the
  most known column names. When the first line names none, csv.Sniffer decides.
- Decimal mark: ``,`` when some number cells contain a comma and none contains
  a point, otherwise ``.``. A file that uses both marks is rejected.
- Digit grouping: a number cell with two or more separators (``11.320.293.765``,
  ``1.234,5``) or with space or apostrophe grouping (``1 234``) rejects the
  file. Such cells come from a spreadsheet that applied a locale to the
  numbers, and the intended values cannot be recovered. A single separator is
  always read as the decimal mark.
- Flags: the flag columns other than gender also read ``yes``/``no``,
  ``true``/``false`` and ``да``/``нет`` (any case) as 1 and 0.
- Columns: a feature column none of whose cells can be read (``Male`` and
  ``Female`` for gender, or every cell empty) rejects a file of two rows or more.
- Rows: a row with fewer fields than the header, or with non-empty fields
  beyond it, rejects the file, because its values would land in the wrong
  columns.

Row faults, at most one a feature cell:

- ``missing``: an empty cell or a missing-value marker (NaN, NA, N/A, #N/A,
  null, none, ``-``, ``?``; any case).
- ``not_a_number``: other text that is not a finite number (``abc``, ``inf``).
- ``not_an_integer``: a fraction in an integer column (``33.5``). ``28.0`` is 28.
- ``too_large``: an integer beyond the range of its database column.

Implausible values such as an age of 240 are not faults here, because
validation quarantines them.
"""

import codecs
import contextlib
import csv
import datetime as dt
import gc
import io
import itertools
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy.engine import Connection, Engine

from gymchurn import binary_copy, db, runtime
from gymchurn.aliases import CLIENT_KEY_ALIASES, HEADER_ALIASES, normalize_header
from gymchurn.schema import (
    BINARY_FEATURES,
    CHURNED,
    CLIENT_ID,
    CSV_HEADERS,
    FEATURES,
    INTEGER_FEATURES,
    MONTH,
    format_month,
)

logger = logging.getLogger(__name__)

_KNOWN_HEADERS = set(HEADER_ALIASES).union(*CLIENT_KEY_ALIASES)

# Separators tried on the header, in order of preference when two fit equally.
_DELIMITERS = [",", ";", "\t", "|"]

# Cells read as a missing value, compared lowercased and without surrounding blanks.
_MISSING_MARKERS = {"", "nan", "na", "n/a", "#n/a", "null", "none", "-", "?"}

# Largest magnitude of each integer column, as the database column types allow:
# smallint for flags and contract length, integer for the others. Client ids
# stay below 2**53, the largest integer a float64 represents exactly.
_INTEGER_LIMITS = {
    **{name: 32_767 for name in [*BINARY_FEATURES, "contract_period"]},
    **{name: 2_147_483_647 for name in ["age", "month_to_end_contract", "lifetime"]},
    CLIENT_ID: 2**53,
}

# Label spellings, compared lowercased, and the outcome each one means. Any
# other label leaves the row without an outcome.
_CHURN_LABELS = {
    "1": True,
    "0": False,
    "1.0": True,
    "0.0": False,
    "yes": True,
    "no": False,
    "true": True,
    "false": False,
    "да": True,
    "нет": False,
}

# The words of the Churn label's spellings, read as 1 and 0 in the flag
# columns other than gender, because a CRM export may write the flags as words.
_FLAG_WORDS = {text: float(flag) for text, flag in _CHURN_LABELS.items() if not text[0].isdigit()}
_WORD_FLAGS = [name for name in BINARY_FEATURES if name != "gender"]

# Leading bytes of file types that are sometimes saved under a .csv name.
_FILE_SIGNATURES = {
    b"PK\x03\x04": "a ZIP archive, such as an Excel .xlsx workbook",
    b"\xd0\xcf\x11\xe0": "an Excel .xls workbook",
    b"\x1f\x8b": "a gzip archive",
    b"%PDF": "a PDF document",
}

# C0 control characters other than tab, line feed and carriage return, and
# DEL. UTF-8 and Windows-1251 encode them as the same single bytes.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# NOTE: a number grouped with one separator ("1.234" for 1234) looks like a
# decimal and is read as one.
_GROUPED_NUMBER = re.compile(
    r"[+-]?\d+(?:[.,]\d+){2,}|[+-]?\d{1,3}(?:[ \u00a0\u202f']\d{3})+(?:[.,]\d+)?"
)
_DECIMAL_POINT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DECIMAL_COMMA = re.compile(r"[+-]?(?:\d+,\d*|,\d+)(?:[eE][+-]?\d+)?")
_HEADER_NUMBER = re.compile(r"[+-]?\d+(?:[.,]\d+)*(?:[eE][+-]?\d+)?")

_FAULT_DTYPES = {
    CLIENT_ID: "int64",
    "line": "int64",
    "column": "str",
    "raw_value": "str",
    "fault": "str",
}
_FAULT_TABLE_COLUMNS = [CLIENT_ID, MONTH, "column_name", "line", "raw_value", "fault"]


class CsvFormatError(ValueError):
    """A questionnaire file that cannot be loaded; nothing was written."""


def _empty_faults() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in _FAULT_DTYPES.items()})


@dataclass(frozen=True)
class QuestionnaireFile:
    """A questionnaire file read into memory, one row a client."""

    path: Path
    questionnaires: pd.DataFrame
    """``client_id`` and the 13 features; integer answers as ``Int64``, missing ones as NA."""
    outcomes: pd.DataFrame | None
    """``client_id`` and ``churned`` for the rows with a label; None without a Churn column."""
    ids_assigned: bool
    """True when the file had no client_id or member_id column and ids were numbered by row."""
    ignored_columns: list[str] = field(default_factory=list)
    """Headers of the columns that were not read, as the file spells them."""
    faults: pd.DataFrame = field(default_factory=_empty_faults)
    """Feature cells read as missing: ``client_id``, ``line`` (in the file), ``column``
    (database name), ``raw_value`` (the cell's text) and ``fault``; empty when there are none."""
    encoding: str = "utf-8"
    """Encoding the file was decoded with: ``utf-8``, ``utf-16`` or ``cp1251``."""
    delimiter: str = ","
    decimal_mark: str = "."
    lines: np.ndarray | None = None
    """The file line of each row of ``questionnaires``."""


@dataclass(frozen=True)
class _DecodedText:
    head: str
    """The first lines of the file's text, which decide its separator."""
    encoding: str
    utf8_error: str | None
    """Reason the bytes are not UTF-8, set when they were decoded as Windows-1251."""
    utf8_error_line: int = 0
    """Line of the first byte that is not UTF-8, when they were decoded as Windows-1251."""


@dataclass(frozen=True)
class _Header:
    line: int
    names: list[str]
    positions: dict[str, int]
    """Database column to the position of the field that fills it."""
    ignored: list[str]


# Bytes read at a time while the file's encoding is checked: the check holds
# one block and its text, not the whole file.
_SCAN_BLOCK_BYTES = 1 << 20

# Lines of the file's start kept for choosing the separator.
_HEAD_LINES = 100


def _not_text_error(path: Path, reason: str) -> CsvFormatError:
    return CsvFormatError(
        f"{path}: not a UTF-8/CSV text file ({reason}); "
        "export it again as UTF-8 CSV and load that file"
    )


def _blocks(path: Path, start: int = 0) -> Iterator[bytes]:
    with path.open("rb") as file:
        file.seek(start)
        while block := file.read(_SCAN_BLOCK_BYTES):
            yield block


class _Undecodable(Exception):
    """A byte sequence the codec of a :class:`_TextScan` cannot decode."""

    def __init__(self, byte: int, line: int, after_text: bool):
        super().__init__(byte, line)
        self.byte = byte
        """Offset of the sequence's first byte from the start of the file."""
        self.line = line
        self.after_text = after_text
        """True when characters other than ASCII were decoded before the sequence."""


class _TextScan:
    """The file from byte ``start`` decoded with ``codec`` a block at a time.

    Keeps the first :data:`_HEAD_LINES` lines of text in ``head`` and sets
    ``blank`` when every character is blank.

    Raises:
        CsvFormatError: the file contains a control character other than tab
            and line breaks; the error names its line.
        _Undecodable: ``codec`` cannot decode the bytes.
    """

    def __init__(self, path: Path, codec: str, start: int = 0):
        decoder = codecs.getincrementaldecoder(codec)()
        # UTF-8 and Windows-1251 encode the control characters as the same
        # single bytes, so these are found before the decoding can fail.
        single_bytes = codec != "utf-16"
        self.head = ""
        self.blank = True
        n_lines, offset, ascii_only = 0, start, True
        for block in _blocks(path, start):
            if single_bytes and (control := _CONTROL_BYTES.search(block)):
                self._binary(path, n_lines + block.count(b"\n", 0, control.start()))
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(block)
            except UnicodeDecodeError as err:
                # The error counts from the bytes held over from the last block.
                before = block[: max(err.start - pending, 0)]
                raise _Undecodable(
                    offset - pending + err.start,
                    n_lines + before.count(b"\n") + 1,
                    not (ascii_only and before.isascii()),
                ) from None
            offset += len(block)
            if not single_bytes and (control := _CONTROL_CHARACTERS.search(text)):
                self._binary(path, n_lines + text.count("\n", 0, control.start()))
            if n_lines < _HEAD_LINES:
                self.head += _head(text, _HEAD_LINES - n_lines)
            n_lines += text.count("\n")
            ascii_only = ascii_only and text.isascii()
            # isspace, not strip: strip would copy the block's text.
            self.blank = self.blank and text.isspace()
        pending = len(decoder.getstate()[0])
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise _Undecodable(offset - pending, n_lines + 1, not ascii_only) from None

    @staticmethod
    def _binary(path: Path, lines_before: int):
        raise _not_text_error(
            path, f"it contains binary bytes, the first on line {lines_before + 1}"
        )


def _mostly_utf8(path: Path) -> bool:
    """Return whether the file has more characters other than ASCII that decode as UTF-8
    than byte sequences that do not.

    Windows-1251 text seldom forms valid UTF-8, and a UTF-8 file with a damaged
    byte has few invalid sequences among many valid ones.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    valid = invalid = 0
    for block in _blocks(path):
        text = decoder.decode(block)
        if text.isascii():
            continue
        n_replaced = text.count("\ufffd")
        invalid += n_replaced
        valid += len(text) - len(text.encode("ascii", errors="ignore")) - n_replaced
    return valid > invalid


def _scan_file(path: Path) -> _DecodedText:
    """Check that the file is CSV text and find its encoding, reading a block at a time.

    Raises:
        CsvFormatError: the file is missing, empty, binary, or not text in
            one of the encodings of the module docstring.
    """
    if not path.exists():
        raise CsvFormatError(f"{path}: file not found")
    if not path.is_file():
        raise CsvFormatError(f"{path}: not a regular file; give the path of a CSV file")
    first = next(_blocks(path), b"")
    if not first:
        raise CsvFormatError(f"{path}: empty file (0 bytes); expected a CSV header and data rows")
    for signature, kind in _FILE_SIGNATURES.items():
        if first.startswith(signature):
            raise _not_text_error(path, f"its first bytes are those of {kind}")
    utf8_error, utf8_error_line = None, 0
    if first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
        try:
            scan = _TextScan(path, encoding)
        except _Undecodable as err:
            raise _not_text_error(
                path, f"invalid UTF-16 at byte {err.byte} on line {err.line}"
            ) from None
    else:
        encoding = "utf-8"
        bom = len(codecs.BOM_UTF8) if first.startswith(codecs.BOM_UTF8) else 0
        try:
            scan = _TextScan(path, encoding, bom)
        except _Undecodable as err:
            utf8_error = f"invalid UTF-8 at byte {err.byte} on line {err.line}"
            utf8_error_line = err.line
            # A byte order mark, or UTF-8 text, shows the file is UTF-8: read
            # as Windows-1251 its text, such as Russian labels, would change.
            marker = None
            if bom:
                marker = "starts with a UTF-8 byte order mark"
            elif err.after_text:
                marker = "has UTF-8 text before it"
            elif _mostly_utf8(path):
                marker = "is UTF-8 text elsewhere"
            if marker:
                raise CsvFormatError(
                    f"{path}: line {err.line}: {utf8_error}, although the file {marker}, "
                    "so that byte is damaged; correct that line or export the file again "
                    "as UTF-8 CSV"
                ) from None
            encoding = "cp1251"
            try:
                # Whether Windows-1251 was the right guess is decided by the header.
                scan = _TextScan(path, encoding)
            except _Undecodable:
                raise _not_text_error(
                    path, f"{utf8_error}, and not Windows-1251 text either"
                ) from None
    if scan.blank:
        raise CsvFormatError(
            f"{path}: empty file (blank lines only); expected a CSV header and data rows"
        )
    return _DecodedText(scan.head, encoding, utf8_error, utf8_error_line)


def _count_known_headers(line: str, delimiter: str) -> int:
    cells = next(csv.reader([line], delimiter=delimiter, skipinitialspace=True), [])
    return sum(normalize_header(cell) in _KNOWN_HEADERS for cell in cells)


def _head(text: str, n_lines: int) -> str:
    """Return the start of ``text`` up to its ``n_lines``-th line feed, or all of it."""
    end = 0
    for _ in range(n_lines):
        end = text.find("\n", end) + 1
        if not end:
            return text
    return text[:end]


def _detect_delimiter(head: str) -> str:
    """Return the separator that splits the first line into the most known column names.

    ``head`` is the start of the file's text, :data:`_HEAD_LINES` lines at most.
    """
    first_lines = io.StringIO(head, newline="")
    lines = [line.rstrip("\r\n") for line in first_lines if line.strip()][:20]
    counts = {delimiter: _count_known_headers(lines[0], delimiter) for delimiter in _DELIMITERS}
    best = max(_DELIMITERS, key=counts.__getitem__)
    if counts[best]:
        return best
    # Without a known header the file is rejected later, and that error reads
    # best when the data lines are split as intended.
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters="".join(_DELIMITERS)).delimiter
    except csv.Error:
        return ","


# Codec that reads each encoding of _DecodedText as its text was decoded.
_CODECS = {"utf-8": "utf-8-sig", "utf-16": "utf-16", "cp1251": "cp1251"}


def _open_text(path: Path, decoded: _DecodedText):
    """Open the file as text in the encoding it was decoded with, for the csv module."""
    return path.open(encoding=_CODECS[decoded.encoding], newline="")


def _split_records(path: Path, choose_delimiter) -> list[tuple[int, list[str]]]:
    """Check that the file is CSV text and split it into records, each with its line.

    ``choose_delimiter`` picks the separator from the first lines of the text.
    Blank lines are skipped. A quoted field may span lines, so a record's line
    is counted by the reader, not by the record's position. For small files:
    every record is returned at once.
    """
    decoded = _scan_file(path)
    delimiter = choose_delimiter(decoded.head)
    with _open_text(path, decoded) as lines:
        return list(_records(path, lines, delimiter))


def _records(path: Path, lines: Iterable[str], delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Yield the CSV records of the file's ``lines``, each with the line it starts on.

    Blank lines are skipped. A quoted field may span lines, so a record's line
    is counted by the reader, not by the record's position.
    """
    reader = csv.reader(lines, delimiter=delimiter, skipinitialspace=True, strict=True)
    n_blank, last_line = 0, 0
    try:
        for fields in reader:
            # The first cell decides for almost every record.
            if (fields and fields[0].strip()) or any(cell.strip() for cell in fields):
                yield last_line + 1, fields
            else:
                n_blank += 1
            last_line = reader.line_num
    except csv.Error as err:
        raise CsvFormatError(
            f"{path}: line {reader.line_num}: not valid CSV ({err}); "
            "check the quotes on that line and load the file again"
        ) from None
    if n_blank:
        logger.warning("%s: skipped %d empty line(s)", path, n_blank)


def _client_key_rank(key: str) -> int | None:
    for rank, spellings in enumerate(CLIENT_KEY_ALIASES):
        if key in spellings:
            return rank
    return None


def _column_label(names: list[str], position: int) -> str:
    return names[position] if names[position].strip() else f"(column {position + 1}, no name)"


def _map_header(path: Path, line: int, names: list[str], decoded: _DecodedText) -> _Header:
    """Match the header cells to database columns.

    Raises:
        CsvFormatError: a feature column is missing, or two columns name the same one.
    """
    names = list(names)
    while names and not names[-1].strip():
        names.pop()  # a separator at the end of the header line
    positions: dict[str, int] = {}
    key_columns: list[tuple[int, int]] = []
    for position, name in enumerate(names):
        key = normalize_header(name)
        target = HEADER_ALIASES.get(key)
        rank = _client_key_rank(key)
        if target is not None:
            if target in positions:
                raise CsvFormatError(
                    f"{path}: line {line}: columns {names[positions[target]]!r} and {name!r} "
                    f"both name {target}; delete one of them and load the file again"
                )
            positions[target] = position
        elif rank is not None:
            key_columns.append((rank, position))
    if key_columns:
        rank, position = min(key_columns)
        same_rank = [other for other_rank, other in key_columns if other_rank == rank]
        if len(same_rank) > 1:
            first, second = names[same_rank[0]], names[same_rank[1]]
            raise CsvFormatError(
                f"{path}: line {line}: columns {first!r} and {second!r} "
                "both name the client key; delete one of them and load the file again"
            )
        positions[CLIENT_ID] = position
    used = set(positions.values())
    ignored = [_column_label(names, p) for p in range(len(names)) if p not in used]
    missing = [name for name in FEATURES if name not in positions]
    if missing:
        raise _header_error(path, line, names, positions, missing, ignored, decoded)
    return _Header(line, names, positions, ignored)


def _header_error(
    path: Path,
    line: int,
    names: list[str],
    positions: dict[str, int],
    missing: list[str],
    unknown: list[str],
    decoded: _DecodedText,
) -> CsvFormatError:
    """Build the error for a header that lacks feature columns.

    The missing columns are named as the chain's export spells them (``Age``), so
    the user can add them under that name.
    """
    missing_headers = ", ".join(CSV_HEADERS[name] for name in missing)
    cells = [name.strip() for name in names if name.strip()]
    n_numbers = sum(bool(_HEADER_NUMBER.fullmatch(cell)) for cell in cells)
    if not positions and 2 * n_numbers >= len(cells):
        return CsvFormatError(
            f"{path}: line {line} contains numbers, not column names: header missing / unknown "
            "columns; add the header row of the export (gender, Near_Location, ...) and load "
            "the file again"
        )
    if decoded.encoding == "cp1251":
        return CsvFormatError(
            f"{path}: not a UTF-8 file ({decoded.utf8_error}), and read as Windows-1251 its "
            f"line {line} has unknown column(s) {', '.join(unknown) or 'none'} and is missing "
            f"column(s) {missing_headers}; save the file as UTF-8 CSV and load it again"
        )
    return CsvFormatError(
        f"{path}: line {line}: missing column(s) {missing_headers}; found "
        f"{', '.join(names)}.{_mojibake_hint(unknown)} Add the missing column(s) and load "
        "the file again"
    )


# Wrong conversions that turn Russian headers into mojibake, as (codec the text
# was decoded with, codec it was written in).
_MOJIBAKE_CODECS = [("cp1252", "cp1251"), ("latin-1", "cp1251"), ("cp1251", "utf-8")]


def _mojibake_hint(names: list[str]) -> str:
    """Describe the first header that is a known name decoded with the wrong codec."""
    for name in names:
        for wrong, right in _MOJIBAKE_CODECS:
            try:
                repaired = name.encode(wrong).decode(right)
            except UnicodeError:
                continue
            if repaired != name and normalize_header(repaired) in _KNOWN_HEADERS:
                return (
                    f" Header {name!r} is {repaired!r} decoded as {wrong} instead of {right}, "
                    "so the file was converted from the wrong encoding; export it again."
                )
    return ""


def _check_row_widths(path: Path, records: list[tuple[int, list[str]]], n_columns: int) -> None:
    for line, fields in records:
        short = len(fields) < n_columns
        if short or any(cell.strip() for cell in fields[n_columns:]):
            raise CsvFormatError(
                f"{path}: line {line}: {len(fields)} fields but the header has {n_columns}, so "
                "the values would shift columns; check the separators and quoting of that line"
            )


def _check_repeated_header(path: Path, header_fields: list[str], records) -> None:
    """Reject a data line that repeats the header, as two joined exports have."""
    expected = [cell.strip().lower() for cell in header_fields]
    first = expected[0]
    for line, fields in records:
        # The first cell rules out almost every record before the whole is compared.
        if (
            fields[0].strip().lower() == first
            and [cell.strip().lower() for cell in fields] == expected
        ):
            raise CsvFormatError(
                f"{path}: line {line} repeats the header line, so the file looks like two "
                "exports joined together; delete that line, or load the parts as separate files"
            )


def _build_table(records: list[tuple[int, list[str]]], n_columns: int) -> pd.DataFrame:
    """Return the data records as text cells, columns by position, indexed by file line.

    Every record has at least ``n_columns`` fields (:func:`_check_row_widths`),
    so transposing them with ``zip`` and keeping the first ``n_columns`` drops
    only empty fields.
    """
    lines, rows = zip(*records, strict=True)
    columns = itertools.islice(zip(*rows, strict=False), n_columns)
    return pd.DataFrame(
        {position: np.array(cells, dtype=object) for position, cells in enumerate(columns)},
        index=pd.Index(lines, name="line"),
    )


def _number_columns(header: _Header) -> list[str]:
    return [name for name in [CLIENT_ID, *FEATURES] if name in header.positions]


@dataclass(frozen=True)
class _NumberCells:
    """One number column of a chunk: its cells without surrounding blanks, read with a point."""

    texts: list[str]
    """Plain Python strings: at a million rows, pandas' string methods took
    about 0.5 s a column for each pass, a loop over a list about a tenth of that."""
    values: np.ndarray
    """float64, NaN where the text is not a number with ``.`` as decimal mark."""
    unread: np.ndarray
    """Positions of the NaN values: the only cells that can be missing-value
    markers, digit grouping or decimal commas, none of which reads as a number."""

    @classmethod
    def of(cls, texts: list[str]) -> "_NumberCells":
        values = pd.to_numeric(np.array(texts, dtype=object), errors="coerce")
        values = np.asarray(values, dtype="float64")
        return cls(texts, values, np.flatnonzero(np.isnan(values)))

    def with_flag_words(self) -> "_NumberCells":
        """Return the cells with the words of :data:`_FLAG_WORDS` read as 1 and 0."""
        if not len(self.unread):
            return self
        values = self.values.copy()
        for position in self.unread.tolist():
            values[position] = _FLAG_WORDS.get(self.texts[position].lower(), np.nan)
        return _NumberCells(self.texts, values, np.flatnonzero(np.isnan(values)))


def _stripped_cells(table: pd.DataFrame, header: _Header) -> dict[str, _NumberCells]:
    """Return each number column's cells (:class:`_NumberCells`)."""
    return {
        name: _NumberCells.of(
            [cell.strip() for cell in table[header.positions[name]].to_numpy(dtype=object)]
        )
        for name in _number_columns(header)
    }


class _DecimalMarks:
    """The file's decimal mark, from the number cells of its chunks in file order.

    Raises on the first cell with digit grouping, and as soon as both marks
    have been seen.
    """

    def __init__(self, path: Path, header: _Header):
        self.path = path
        self.header = header
        self.examples: dict[str, tuple[int, str, str]] = {}

    @property
    def mark(self) -> str:
        """``,`` once a cell has used it; ``.`` until then and for ever after a point."""
        return "," if "," in self.examples else "."

    def add(self, table: pd.DataFrame, cells: dict[str, _NumberCells]) -> None:
        """Check one chunk's number cells (:func:`_stripped_cells`)."""
        grouped = [
            (i, name)
            for name, column_cells in cells.items()
            for i in column_cells.unread.tolist()
            if _GROUPED_NUMBER.fullmatch(column_cells.texts[i])
        ]
        if grouped:
            i, name = min(grouped)
            raise CsvFormatError(
                f"{self.path}: line {table.index[i]}, column "
                f"{self.header.names[self.header.positions[name]]}: {cells[name].texts[i]!r} "
                "has digit grouping, the first such cell of the file, so a spreadsheet locale "
                "has rewritten the numbers and their values are unknown; export the file "
                "again with plain numbers such as 11.320293765"
            )
        for name, column_cells in cells.items():
            column = self.header.names[self.header.positions[name]]
            texts, unread = column_cells.texts, column_cells.unread.tolist()
            # A decimal point may read as a number, a decimal comma never does.
            candidates = {".": range(len(texts)), ",": unread}
            for mark, pattern in [(".", _DECIMAL_POINT), (",", _DECIMAL_COMMA)]:
                if mark in self.examples:
                    continue
                found = next(
                    (
                        i
                        for i in candidates[mark]
                        if mark in texts[i] and pattern.fullmatch(texts[i])
                    ),
                    None,
                )
                if found is not None:
                    self.examples[mark] = (table.index[found], column, texts[found])
        # NOTE: quoted "1,234" in a file with no decimal point anywhere is read as
        # 1.234, although an export with comma thousands separators meant 1234.
        if len(self.examples) == 2:
            described = " and ".join(
                f"line {line}, column {column}: {value!r}"
                for line, column, value in self.examples.values()
            )
            raise CsvFormatError(
                f"{self.path}: numbers use both '.' and ',' as decimal mark ({described}); "
                "export the file again with one decimal mark"
            )


def _parse_numbers(
    cells: _NumberCells,
    index: pd.Index,
    decimal_mark: str,
    limit: int | None,
    flag_words: bool = False,
) -> tuple[pd.Series, pd.Series]:
    """Parse a column's number cells into float64, integers when ``limit`` is given.

    With ``flag_words`` the words of :data:`_FLAG_WORDS` read as 1 and 0.

    Returns:
        The values, NaN where a cell is unreadable, and the fault name of each
        cell (see the module docstring), "" where the cell is valid; both on ``index``.
    """
    if decimal_mark == ",":
        cells = _NumberCells.of([text.replace(",", ".") for text in cells.texts])
    if flag_words:
        cells = cells.with_flag_words()
    # A missing-value marker never reads as a number, so only unread cells are tested.
    missing = np.zeros(len(cells.texts), dtype=bool)
    missing[cells.unread] = [
        cells.texts[i].lower() in _MISSING_MARKERS for i in cells.unread.tolist()
    ]
    values = pd.Series(cells.values, index=index)
    finite = np.isfinite(values)
    conditions = [missing, ~finite]
    names = ["missing", "not_a_number"]
    if limit is not None:
        conditions += [values != np.floor(values), values.abs() > limit]
        names += ["not_an_integer", "too_large"]
    faults = pd.Series(np.select(conditions, names, default=""), index=index)
    return values.where(faults == ""), faults


def _client_ids(
    path: Path, header: _Header, table: pd.DataFrame, cells: _NumberCells, decimal_mark: str
) -> pd.Series:
    """Parse one chunk's client ids, or raise on the first empty or invalid one."""
    position = header.positions[CLIENT_ID]
    source = header.names[position]
    ids, faults = _parse_numbers(cells, table.index, decimal_mark, _INTEGER_LIMITS[CLIENT_ID])
    if (faults == "missing").any():
        line = (faults == "missing").idxmax()
        raise CsvFormatError(
            f"{path}: line {line}, column {source}: client id is empty; "
            "give every row its client id and load the file again"
        )
    invalid = (faults != "") | (ids < 1)
    if invalid.any():
        line = invalid.idxmax()
        raise CsvFormatError(
            f"{path}: line {line}, column {source}: client id {table[position][line].strip()!r} "
            f"is not a positive integer below {_INTEGER_LIMITS[CLIENT_ID]}; correct it and "
            "load the file again"
        )
    return ids.astype("int64")


def _check_unique_ids(path: Path, source: str, ids: pd.Series) -> None:
    duplicated = ids.duplicated(keep=False)
    if duplicated.any():
        raise _repeated_ids_error(path, source, ids.index[duplicated][:10].tolist())


def _repeated_ids_error(path: Path, source: str, lines: list[int]) -> CsvFormatError:
    return CsvFormatError(
        f"{path}: column {source}: client ids repeat on lines {', '.join(map(str, lines))}; "
        "each client must appear once a month: keep one row of each client and load the "
        "file again"
    )


def _parse_labels(cells: pd.Series, decimal_mark: str) -> pd.Series:
    text = cells.str.strip().str.lower()
    if decimal_mark == ",":
        text = text.str.replace(",", ".", regex=False)
    return text.map(_CHURN_LABELS)


class _UnknownLabels:
    """Rows whose Churn label matches none of the known spellings, counted chunk by chunk."""

    def __init__(self):
        self.count = 0
        self.lines: list[int] = []

    def add(self, labels: pd.Series) -> None:
        """Count the missing labels of one chunk's parsed labels, indexed by file line."""
        unknown = labels.isna().to_numpy()
        self.count += int(unknown.sum())
        self.lines += labels.index[unknown][: 10 - len(self.lines)].tolist()

    def log(self, source: "CsvSource") -> None:
        if self.count:
            lines = ", ".join(map(str, self.lines))
            if self.count > len(self.lines):
                lines += f" and {self.count - len(self.lines)} more"
            logger.warning(
                "%s: column %s: %d row(s) without a known label (line %s); "
                "they are scored but not used for training",
                source.path,
                source.column(CHURNED),
                self.count,
                lines,
            )


def _collect_faults(
    ids: pd.Series, header: _Header, table: pd.DataFrame, faults: dict[str, pd.Series]
) -> pd.DataFrame:
    """Return one row a faulty feature cell, in file order."""
    parts = []
    for name, column_faults in faults.items():
        faulty = column_faults != ""
        if not faulty.any():
            continue
        part = pd.DataFrame(
            {
                CLIENT_ID: ids[faulty],
                "line": column_faults.index[faulty],
                "column": name,
                "raw_value": table[header.positions[name]][faulty],
                "fault": column_faults[faulty],
            }
        )
        parts.append(part)
    if not parts:
        return _empty_faults()
    collected = pd.concat(parts, ignore_index=True).sort_values("line", kind="stable")
    return collected.reset_index(drop=True).astype(_FAULT_DTYPES)


def _log_faults(path: Path, faults: pd.DataFrame) -> None:
    if faults.empty:
        return
    columns = []
    for name, group in faults.groupby("column", sort=False):
        lines = ", ".join(str(line) for line in group["line"].head(10))
        columns.append(f"{name} {len(group)} (line {lines})")
    logger.warning(
        "%s: %d cell(s) are not valid numbers and are read as missing values: %s",
        path,
        len(faults),
        "; ".join(columns),
    )


# Records checked and parsed at a time. A chunk's text cells are freed before
# the next chunk is split, so a file takes the memory of its numbers, not of
# its strings. Holding every record as strings, a million rows took 1.2 GiB.
READ_CHUNK_RECORDS = 100_000


@dataclass(frozen=True)
class _ReadChunk:
    lines: np.ndarray
    numbers: dict[str, np.ndarray]
    """``client_id`` (int64) and each feature (float64, NaN where missing or faulty),
    joined by :func:`_join_numbers`."""
    faults: pd.DataFrame
    labels: pd.Series | None


def _read_chunk(
    path: Path,
    header: _Header,
    table: pd.DataFrame,
    cells: dict[str, _NumberCells],
    decimal_mark: str,
    first_id: int,
) -> _ReadChunk:
    """Parse one chunk of records; clients without an id column are numbered from ``first_id``."""
    if CLIENT_ID in cells:
        ids = _client_ids(path, header, table, cells.pop(CLIENT_ID), decimal_mark)
    else:
        ids = pd.Series(
            np.arange(first_id, first_id + len(table), dtype="int64"), index=table.index
        )
    numbers = {CLIENT_ID: ids.to_numpy()}
    faults = {}
    for name in FEATURES:
        values, faults[name] = _parse_numbers(
            cells.pop(name),
            table.index,
            decimal_mark,
            _INTEGER_LIMITS.get(name),
            flag_words=name in _WORD_FLAGS,
        )
        numbers[name] = values.to_numpy()
    labels = None
    if CHURNED in header.positions:
        labels = _parse_labels(table[header.positions[CHURNED]], decimal_mark)
    faults = _collect_faults(ids, header, table, faults)
    return _ReadChunk(table.index.to_numpy(), numbers, faults, labels)


def _join_numbers(chunks: list[_ReadChunk]) -> pd.DataFrame:
    """Return the chunks' numbers as one frame indexed by file line, integer features as Int64.

    Each column's chunks are freed once the column is joined, and their memory
    given back to the system: the C heap kept the chunks' blocks, so at ten
    million rows the joined columns came on top of 1.4 GiB of freed ones.
    """
    columns = {}
    for name in [CLIENT_ID, *FEATURES]:
        values = np.concatenate([chunk.numbers.pop(name) for chunk in chunks])
        columns[name] = pd.array(values, dtype="Int64") if name in INTEGER_FEATURES else values
        del values
        runtime.release_free_memory()
    lines = np.concatenate([chunk.lines for chunk in chunks])
    return pd.DataFrame(columns, index=pd.Index(lines, name="line"), copy=False)


def _concat_faults(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [part for part in parts if not part.empty]
    if not parts:
        return _empty_faults()
    return pd.concat(parts, ignore_index=True).astype(_FAULT_DTYPES)


def _check_readable_columns(source: "CsvSource", faults: pd.DataFrame, n_rows: int) -> None:
    """Reject a file of two rows or more when a feature column has no readable cell.

    Such a column is another coding of the feature (``Male``/``Female``, say),
    and each row would be quarantined by the run. In a file of one row, a
    cell that cannot be read is a row fault like any other.
    """
    if n_rows < 2 or faults.empty:
        return
    counts = faults["column"].value_counts()
    unreadable = [name for name in FEATURES if counts.get(name, 0) >= n_rows]
    if unreadable:
        name = unreadable[0]
        first = faults.loc[faults["column"] == name].iloc[0]
        raise CsvFormatError(
            f"{source.path}: column {source.column(name)}: none of its {n_rows} cell(s) can be "
            f"read as a number (line {first['line']}: {first['raw_value']!r}); write the "
            "column as numbers, flags as 1 and 0, and load the file again"
        )


@contextlib.contextmanager
def _cycle_collector_paused():
    """Pause Python's cycle collector while a file is read.

    A chunk's records are hundreds of thousands of new lists, none in a cycle,
    and the collections they set off took a third of the read at a million rows.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class CsvSource:
    """A questionnaire file whose encoding, separator and header are checked.

    Made by :func:`open_questionnaire_csv`; its rows are read by
    :func:`read_questionnaire_csv` or :func:`load_csv`.
    """

    path: Path
    decoded: _DecodedText
    delimiter: str
    header: _Header

    @property
    def ids_assigned(self) -> bool:
        """True when the file has no client_id or member_id column, so clients are numbered."""
        return CLIENT_ID not in self.header.positions

    @property
    def has_outcomes(self) -> bool:
        """True when the file has a Churn column."""
        return CHURNED in self.header.positions

    def column(self, name: str) -> str:
        """Return the header that fills database column ``name``, as the file spells it."""
        return self.header.names[self.header.positions[name]]


def open_questionnaire_csv(path: Path) -> CsvSource:
    """Check a questionnaire file's encoding and header, reading it a block at a time.

    Raises:
        CsvFormatError: the file is not CSV text, or its header lacks a feature
            column; see the module docstring.
    """
    path = Path(path)
    decoded = _scan_file(path)
    delimiter = _detect_delimiter(decoded.head)
    with _open_text(path, decoded) as lines:
        first = next(_records(path, lines, delimiter), None)
    if first is None:
        raise CsvFormatError(f"{path}: empty file (no fields); expected a CSV header and data rows")
    return CsvSource(path, decoded, delimiter, _map_header(path, *first, decoded))


def _read_chunks(source: CsvSource, marks: _DecimalMarks) -> Iterator[_ReadChunk]:
    """Yield the file's data records parsed, :data:`READ_CHUNK_RECORDS` at a time.

    Raises:
        CsvFormatError: a record breaks a rule of the module docstring, or the
            file has no data record.
    """
    path, header = source.path, source.header
    n_rows = 0
    with _open_text(path, source.decoded) as lines:
        records = _records(path, lines, source.delimiter)
        header_fields = next(records)[1]
        while chunk := list(itertools.islice(records, READ_CHUNK_RECORDS)):
            _check_row_widths(path, chunk, len(header.names))
            _check_repeated_header(path, header_fields, chunk)
            table = _build_table(chunk, len(header.names))
            del chunk
            cells = _stripped_cells(table, header)
            marks.add(table, cells)
            yield _read_chunk(path, header, table, cells, marks.mark, n_rows + 1)
            n_rows += len(table)
    if not n_rows:
        raise CsvFormatError(f"{path}: no data rows, only a header; nothing to load")


def _log_read(source: CsvSource, faults: pd.DataFrame, decimal_mark: str) -> None:
    _log_faults(source.path, faults)
    decoded = source.decoded
    if decoded.utf8_error_line > source.header.line:
        # An ASCII header with one byte of another encoding in the data reads
        # as Windows-1251 too, and that byte's cell may now be a wrong value.
        logger.warning(
            "%s: not UTF-8 from line %d (%s), so the file was read as Windows-1251; "
            "check the values on that line",
            source.path,
            decoded.utf8_error_line,
            decoded.utf8_error,
        )
    described = (decoded.encoding, source.delimiter, decimal_mark)
    if described != ("utf-8", ",", "."):
        logger.info("%s: read as %s with separator %r and decimal mark %r", source.path, *described)


def read_questionnaire_csv(path: Path) -> QuestionnaireFile:
    """Read a questionnaire CSV, with or without a ``Churn`` column, into memory.

    Headers are matched by name through ``gymchurn.aliases``, ignoring case,
    spaces, hyphens and column order, and other columns are ignored. The client
    key is the ``client_id`` column, or else ``member_id``. Without either the
    clients are numbered 1..N in file order, so the same file always gives the
    same ids. Churn labels 1/0 (also 1.0/0.0), yes/no, true/false and да/нет
    are read in any case, and any other label leaves the row without an
    outcome. The module docstring lists the encoding, separator and number
    rules and the row faults. :func:`load_csv` loads a file without holding
    its rows.

    Raises:
        CsvFormatError: the file is not a readable questionnaire table.
    """
    with _cycle_collector_paused():
        source = open_questionnaire_csv(path)
        marks = _DecimalMarks(source.path, source.header)
        chunks = list(_read_chunks(source, marks))
        questionnaires = _join_numbers(chunks)
    if not source.ids_assigned:
        _check_unique_ids(source.path, source.column(CLIENT_ID), questionnaires[CLIENT_ID])
    fault_table = _concat_faults([part.faults for part in chunks])
    _check_readable_columns(source, fault_table, len(questionnaires))
    outcomes = None
    if source.has_outcomes:
        labels = pd.concat([part.labels for part in chunks])
        unknown = _UnknownLabels()
        unknown.add(labels)
        unknown.log(source)
        known = labels.notna()
        outcomes = pd.DataFrame(
            {
                CLIENT_ID: questionnaires[CLIENT_ID][known],
                CHURNED: labels[known].astype(bool),
            }
        )
        outcomes = outcomes.reset_index(drop=True)
    _log_read(source, fault_table, marks.mark)
    return QuestionnaireFile(
        source.path,
        questionnaires.reset_index(drop=True),
        outcomes,
        source.ids_assigned,
        source.header.ignored,
        fault_table,
        source.decoded.encoding,
        source.delimiter,
        marks.mark,
        questionnaires.index.to_numpy(),
    )


class LoadConflictError(ValueError):
    """A load that would attach answers to the wrong clients; nothing was written."""


@dataclass(frozen=True)
class LoadSummary:
    """Counts of the rows a load inserted, updated and removed in ``crm``."""

    month: dt.date
    rows_read: int
    questionnaires_inserted: int
    questionnaires_updated: int
    questionnaires_removed: int
    outcomes_inserted: int
    outcomes_updated: int
    outcomes_removed: int
    faults: int
    """Row faults stored for the file's clients in ``crm.questionnaire_faults``."""


class _Staging:
    """Temporary tables that take a file's rows with binary COPY, dropped at the commit.

    The upserts read them, so a file's rows reach ``crm`` in one statement a
    table however many chunks they came in.
    """

    def __init__(self, conn, with_outcomes: bool):
        self.conn = conn
        self.with_outcomes = with_outcomes
        db.execute(conn, "create_questionnaires_staging")
        if with_outcomes:
            db.execute(conn, "create_outcomes_staging")

    def add_questionnaires(self, lines: np.ndarray, numbers: dict[str, np.ndarray]) -> None:
        """COPY one chunk's file lines with its ``client_id`` and feature arrays."""
        self._copy("questionnaires_staging", _QUESTIONNAIRE_WIRE, {"line": lines, **numbers})

    def add_outcomes(self, client_ids: np.ndarray, churned: np.ndarray) -> None:
        """COPY the outcomes of one chunk's clients with a known label."""
        self._copy("outcomes_staging", _OUTCOME_WIRE, {CLIENT_ID: client_ids, CHURNED: churned})

    def _copy(self, table: str, wires: dict, columns: dict) -> None:
        numbers = [
            binary_copy.Numbers(np.asarray(columns[name], dtype=wire.newbyteorder("=")), wire)
            for name, wire in wires.items()
        ]
        blocks = binary_copy.blocks(numbers, np.arange(len(numbers[0].values)))
        db.copy_binary(self.conn, table, list(wires), blocks)

    def upsert(self, query: str, month: dt.date, **params) -> tuple[int, int, int | None]:
        """Run an upsert of the staged rows, with ``month`` and ``params`` as its parameters.

        Returns:
            The rows inserted, the rows updated, and the lowest client id
            updated (None when none was).
        """
        row = db.execute(self.conn, query, {"month": month, **params}).one()
        return row.inserted, row.updated, row.first_updated


# Staging columns as sent: the features as float8, NaN for a missing value.
_QUESTIONNAIRE_WIRE = {
    "line": np.dtype(">i8"),
    CLIENT_ID: np.dtype(">i8"),
    **dict.fromkeys(FEATURES, np.dtype(">f8")),
}
_OUTCOME_WIRE = {CLIENT_ID: np.dtype(">i8"), CHURNED: np.dtype("?")}


def _replace_faults(conn, faults: pd.DataFrame, month: dt.date, replace: bool) -> int:
    """Replace the stored faults of the file's clients with the file's; return how many."""
    if replace:
        db.execute(conn, "delete_month_faults", {"month": month})
    else:
        # The file's clients are those of the staging table.
        db.execute(conn, "delete_client_faults", {"month": month})
    faults = faults.rename(columns={"column": "column_name"}).assign(**{MONTH: month})
    rows = db.frame_rows(faults, _FAULT_TABLE_COLUMNS)
    return db.copy_rows(conn, "crm.questionnaire_faults", _FAULT_TABLE_COLUMNS, rows)


def read_month_faults(conn: Connection, month: dt.date) -> pd.DataFrame:
    """Read the row faults stored for ``month``, in file order.

    Returns:
        One row a fault, with ``client_id``, ``column_name``, ``line``,
        ``raw_value`` and ``fault``.
    """
    result = db.execute(conn, "faults_for_month", {"month": month})
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _check_numbered_ids(conn, path: Path, n_rows: int, month: dt.date) -> int:
    """Reject numbered ids against a month of another size; return the month's size."""
    # A numbered id is only a row position in its file. Against a month with
    # another number of clients, row N is most likely another client.
    existing = db.execute(conn, "count_month_questionnaires", {"month": month}).scalar_one()
    if existing and existing != n_rows:
        raise LoadConflictError(
            f"{path}: has no client_id column and {n_rows} rows, "
            f"but {month:%Y-%m} already has {existing} questionnaires, so numbering the rows "
            "would give their ids to other clients; add a client_id column, or load with "
            f"--replace{_replace_deletes(conn, path, month)}"
        )
    return existing


def _replace_deletes(conn, path: Path, month: dt.date) -> str:
    """Say what ``--replace`` would delete: the month's rows, and the other files they came from."""
    rows = db.execute(
        conn, "other_files_of_month", {"month": month, "source_file": str(path.resolve())}
    ).all()
    text = ", which first deletes every questionnaire and outcome of the month"
    if rows:
        files = ", ".join(f"{row.questionnaires} from {row.source_file}" for row in rows)
        text += f" ({files})"
    return text


def _reject_numbered_changes(
    conn,
    path: Path,
    month: dt.date,
    changes: tuple[int, int],
    first_client: int | None,
    replace_note: str,
) -> None:
    """Reject a load without ids that changes rows of the month.

    Args:
        changes: the questionnaires changed, and the outcomes changed or removed.
        replace_note: what ``--replace`` would delete, from :func:`_replace_deletes`
            before the load changed the month.
    """
    # With numbered ids a changed row may be a correction or another client in
    # that position (one client left, another joined): the two look the same.
    if any(changes):
        where = ""
        if first_client is not None:
            line = db.execute(conn, "staged_line_of_client", {"client_id": first_client})
            where = f", the first on line {line.scalar_one()} (client {first_client})"
        raise LoadConflictError(
            f"{path}: has no client_id column and would change {changes[0]} "
            f"questionnaire(s) and {changes[1]} outcome(s) already loaded for "
            f"{month:%Y-%m}{where}; without ids a changed row may be another client; add a "
            f"client_id column, or load with --replace{replace_note}"
        )


@dataclass(frozen=True)
class _StagedFile:
    """Facts of a staged file that the checks and upserts use."""

    path: Path
    rows: int
    ids_assigned: bool
    faults: pd.DataFrame
    unknown_labels: int
    """Rows of a file with a Churn column whose label is unknown."""


def _delete_unlabelled_outcomes(conn, month: dt.date) -> int:
    """Delete the month's outcomes of the staged clients whose label is unknown; return how many."""
    db.execute(conn, "create_unlabelled_staging")
    db.execute(conn, "stage_unlabelled_clients")
    return db.execute(conn, "delete_unlabelled_outcomes", {"month": month}).rowcount


def _apply_staged(
    conn, staging: _Staging, staged: _StagedFile, month: dt.date, replace: bool
) -> LoadSummary:
    """Write the staged rows into the month, as :func:`load_questionnaire_file` describes."""
    keys = {"month": month}
    db.execute(conn, "index_questionnaires_staging")
    # Loads of a month wait here for each other; each then reads the month as
    # the one before it left it.
    db.lock_month_for_load(conn, month)
    q_removed = o_removed = existing = 0
    if replace:
        q_removed = db.execute(conn, "delete_month_questionnaires", keys).rowcount
        o_removed = db.execute(conn, "delete_month_outcomes", keys).rowcount
    elif staged.ids_assigned:
        existing = _check_numbered_ids(conn, staged.path, staged.rows, month)
    # Computed before the upsert, which gives the month's rows this file's load.
    replace_note = _replace_deletes(conn, staged.path, month) if existing else ""

    load = db.execute(
        conn,
        "record_questionnaire_load",
        {"month": month, "source_file": str(staged.path.resolve())},
    ).one()
    lines = {"month": month, "load_id": load.load_id}
    q_new, q_changed, q_first = staging.upsert("upsert_questionnaires", month, load_id=load.load_id)
    if q_new + q_changed < staged.rows:
        # The upsert left rows with unchanged answers alone, with any older load and line.
        db.execute(conn, "move_questionnaire_lines", lines)
    if not load.created:
        n_gone = db.execute(conn, "forget_lines_not_in_file", lines).rowcount
        if n_gone:
            logger.warning(
                "%s: %d client(s) of %s loaded from this file before are not in it now; "
                "they stay in the month and are scored. Load the file with --replace to "
                "keep only its clients",
                staged.path,
                n_gone,
                format_month(month),
            )
    o_new = o_changed = 0
    o_first = None
    if staging.with_outcomes:
        o_new, o_changed, o_first = staging.upsert("upsert_outcomes", month)
        if staged.unknown_labels and not replace:
            o_removed = _delete_unlabelled_outcomes(conn, month)
    n_faults = _replace_faults(conn, staged.faults, month, replace)

    if existing:
        # Raising here rolls the whole load back.
        first = min((c for c in (q_first, o_first) if c is not None), default=None)
        changes = (q_changed, o_changed + o_removed)
        _reject_numbered_changes(conn, staged.path, month, changes, first, replace_note)
    db.execute(conn, "analyze_crm")
    return LoadSummary(
        month,
        staged.rows,
        q_new,
        q_changed,
        q_removed,
        o_new,
        o_changed,
        o_removed,
        n_faults,
    )


def load_questionnaire_file(
    engine: Engine, loaded: QuestionnaireFile, month: dt.date, *, replace: bool = False
) -> LoadSummary:
    """Insert or update the file's rows for ``month`` in one transaction.

    Rows already loaded with the same values are left alone, so loading the
    same file twice changes nothing. Clients missing from the file are kept,
    unless ``replace`` deletes the month's rows first. A client whose label in
    the file's Churn column is unknown loses the outcome loaded before. The
    row faults stored for the file's clients are replaced by the file's, so a
    corrected file clears them, and ``replace`` deletes all of the month's.
    Loads of the same month wait for each other, so each reads what the one
    before it wrote. Every questionnaire of the file records the file's
    resolved path (as a row of ``crm.questionnaire_loads``) and its line, which
    the run copies into ``churn.quarantine`` when the row is quarantined.

    Raises:
        LoadConflictError: the file numbers its clients by row, and the month
            already contains another number of clients or rows it would change.
    """
    frame = loaded.questionnaires
    lines = loaded.lines if loaded.lines is not None else np.arange(1, len(frame) + 1)
    unknown = 0
    with engine.begin() as conn:
        staging = _Staging(conn, loaded.outcomes is not None)
        # One COPY a chunk: the columns' arrays as sent exist for one chunk at a time.
        for start in range(0, len(frame), READ_CHUNK_RECORDS):
            part = frame.iloc[start : start + READ_CHUNK_RECORDS]
            numbers = {CLIENT_ID: part[CLIENT_ID].to_numpy()}
            for name in FEATURES:
                numbers[name] = part[name].to_numpy(dtype="float64", na_value=np.nan)
            staging.add_questionnaires(lines[start : start + len(part)], numbers)
        if loaded.outcomes is not None:
            outcomes = loaded.outcomes
            for start in range(0, len(outcomes), READ_CHUNK_RECORDS):
                part = outcomes.iloc[start : start + READ_CHUNK_RECORDS]
                staging.add_outcomes(part[CLIENT_ID].to_numpy(), part[CHURNED].to_numpy())
            unknown = int((~frame[CLIENT_ID].isin(outcomes[CLIENT_ID])).sum())
        staged = _StagedFile(loaded.path, len(frame), loaded.ids_assigned, loaded.faults, unknown)
        return _apply_staged(conn, staging, staged, month, replace)


@dataclass(frozen=True)
class LoadedCsv:
    """A file loaded by :func:`load_csv`: what was read, and what the load changed."""

    source: CsvSource
    faults: pd.DataFrame
    """Feature cells read as missing, as :attr:`QuestionnaireFile.faults`."""
    summary: LoadSummary


def load_csv(
    engine: Engine, source: CsvSource, month: dt.date, *, replace: bool = False
) -> LoadedCsv:
    """Read a questionnaire file chunk by chunk into ``month``, in one transaction.

    Reads the file as :func:`read_questionnaire_csv` and writes its rows as
    :func:`load_questionnaire_file`, but keeps one chunk of
    :data:`READ_CHUNK_RECORDS` records at a time: each chunk goes with COPY
    into a temporary table as it is read, and the month's tables change only
    once the whole file has passed.

    Raises:
        CsvFormatError: the file breaks a rule of the module docstring; nothing
            was written.
        LoadConflictError: see :func:`load_questionnaire_file`.
    """
    marks = _DecimalMarks(source.path, source.header)
    unknown = _UnknownLabels()
    faults = []
    n_rows = 0
    with _cycle_collector_paused(), engine.begin() as conn:
        staging = _Staging(conn, source.has_outcomes)
        for chunk in _read_chunks(source, marks):
            staging.add_questionnaires(chunk.lines, chunk.numbers)
            if chunk.labels is not None:
                known = chunk.labels.notna().to_numpy()
                churned = chunk.labels.to_numpy()[known].astype(bool)
                staging.add_outcomes(chunk.numbers[CLIENT_ID][known], churned)
                unknown.add(chunk.labels)
            faults.append(chunk.faults)
            n_rows += len(chunk.lines)
            del chunk
        if not source.ids_assigned:
            _check_staged_ids(conn, source)
        fault_table = _concat_faults(faults)
        _check_readable_columns(source, fault_table, n_rows)
        unknown.log(source)
        _log_read(source, fault_table, marks.mark)
        staged = _StagedFile(source.path, n_rows, source.ids_assigned, fault_table, unknown.count)
        summary = _apply_staged(conn, staging, staged, month, replace)
    return LoadedCsv(source, fault_table, summary)


def _check_staged_ids(conn, source: CsvSource) -> None:
    lines = db.execute(conn, "staged_repeated_ids").scalars().all()
    if lines:
        raise _repeated_ids_error(source.path, source.column(CLIENT_ID), lines)
