"""Read questionnaire CSV files and load them into ``crm``.

A file is read whole and checked before anything is written: a file that
cannot be read safely is refused with an error naming the file, line and
column, and the database is left as it was.
"""

import csv
import datetime as dt
import io
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from gymchurn import db
from gymchurn.schema import (
    BINARY_FEATURES,
    CHURNED,
    CLIENT_ID,
    FEATURES,
    INTEGER_FEATURES,
    MONTH,
)

logger = logging.getLogger(__name__)

# Header names seen in exports, normalised (lowercase, "_" for spaces and
# hyphens), mapped to the database column they fill.
HEADER_ALIASES = {
    **{name: name for name in FEATURES},
    "client_id": CLIENT_ID,
    "churn": CHURNED,
}

# Cells read as a missing value. Anything else that is not a number is an error.
_MISSING_TOKENS = {"", "nan", "na", "n/a", "null", "none"}

# Largest magnitude of each integer column, as the database column types allow:
# smallint for flags and contract length, integer for the others. Client ids
# stay below 2**53, the largest integer a float64 represents exactly.
_INTEGER_LIMITS = {
    **{name: 32_767 for name in [*BINARY_FEATURES, "contract_period"]},
    **{name: 2_147_483_647 for name in ["age", "month_to_end_contract", "lifetime"]},
    CLIENT_ID: 2**53,
}

# Label spellings and the outcome each one means.
_CHURN_LABELS = {
    "1": True,
    "0": False,
    "1.0": True,
    "0.0": False,
    "yes": True,
    "no": False,
    "true": True,
    "false": False,
}


class CsvFormatError(ValueError):
    """A questionnaire file that cannot be loaded; nothing was written."""


@dataclass(frozen=True)
class QuestionnaireFile:
    """A questionnaire file read into memory, one row a client."""

    path: Path
    questionnaires: pd.DataFrame
    """``client_id`` and the 13 features; integer answers as ``Int64``, missing ones as NA."""
    outcomes: pd.DataFrame | None
    """``client_id`` and ``churned`` for the rows with a label; None without a Churn column."""
    ids_assigned: bool
    """True when the file had no ``client_id`` column and ids were numbered by row."""
    ignored_columns: list[str] = field(default_factory=list)


def _normalise_header(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _decode_text(path: Path) -> str:
    """Return the file's text, or raise when it is not UTF-8 CSV text."""
    if not path.exists():
        raise CsvFormatError(f"{path}: file not found")
    if not path.is_file():
        raise CsvFormatError(f"{path}: not a regular file; give the path of a CSV file")
    raw = path.read_bytes()
    if not raw.strip():
        raise CsvFormatError(f"{path}: empty file; expected a CSV header and data rows")
    if b"\x00" in raw[:4096]:
        raise CsvFormatError(
            f"{path}: not a UTF-8/CSV text file (it contains binary bytes); "
            "export the questionnaires as CSV and load that file"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CsvFormatError(
            f"{path}: not a UTF-8/CSV text file (invalid UTF-8 at byte {err.start}); "
            "save the file as UTF-8 CSV and load it again"
        ) from None
    header = text.lstrip().splitlines()[0]
    if ";" in header and "," not in header:
        raise CsvFormatError(
            f"{path}: line 1: the columns are separated by ';': separator/decimal format "
            "not supported; export with ',' separators and '.' decimals"
        )
    return text


def _read_text_table(path: Path) -> pd.DataFrame:
    """Read every cell as text, indexed by the file line each row came from."""
    text = _decode_text(path)
    try:
        with warnings.catch_warnings(record=True) as parser_warnings:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            # index_col=False: a trailing comma on every row must not turn the
            # first column into the index and shift the others.
            table = pd.read_csv(
                io.StringIO(text),
                dtype=str,
                keep_default_na=False,
                skip_blank_lines=False,
                index_col=False,
            )
    except pd.errors.ParserError as err:
        raise CsvFormatError(
            f"{path}: not a readable CSV table ({str(err).strip()}); "
            "check the separators and quoting"
        ) from None
    if parser_warnings:
        # pandas dropped fields beyond the header's: harmless when they are
        # empty (trailing commas), data loss when they are not.
        _check_extra_fields(path, text, len(table.columns))
    table.index = pd.RangeIndex(2, len(table) + 2, name="line")
    blank = table.fillna("").apply(lambda column: column.str.strip()).eq("").all(axis=1)
    if blank.any():
        logger.warning("%s: skipped %d empty line(s)", path, int(blank.sum()))
    return table[~blank]


def _check_extra_fields(path: Path, text: str, n_columns: int) -> None:
    reader = csv.reader(io.StringIO(text))
    next(reader, None)
    for row in reader:
        if len(row) > n_columns and any(cell.strip() for cell in row[n_columns:]):
            raise CsvFormatError(
                f"{path}: line {reader.line_num}: {len(row)} fields but the header has "
                f"{n_columns}; check the separators and quoting of that line"
            )


def _map_headers(path: Path, table: pd.DataFrame) -> tuple[dict[str, str], list[str]]:
    mapping, ignored = {}, []
    for name in table.columns:
        target = HEADER_ALIASES.get(_normalise_header(str(name)))
        if target is None or target in mapping.values():
            ignored.append(str(name))
        else:
            mapping[name] = target
    missing = [name for name in FEATURES if name not in mapping.values()]
    if missing and all(_is_number(str(name)) for name in table.columns):
        raise CsvFormatError(
            f"{path}: line 1 contains numbers, not column names: header missing / unknown "
            "columns; add the header row of the export (gender, Near_Location, ...) and "
            "load the file again"
        )
    if missing:
        raise CsvFormatError(
            f"{path}: line 1: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, table.columns))}"
        )
    return mapping, ignored


def _is_number(text: str) -> bool:
    # pandas renames a repeated header cell "1" to "1.1", "1.2", ...
    try:
        float(text.split(".")[0] if text.count(".") > 1 else text)
    except ValueError:
        return False
    return True


def _parse_numbers(path: Path, column: pd.Series, name: str) -> pd.Series:
    text = column.fillna("").str.strip()
    missing = text.str.lower().isin(_MISSING_TOKENS)
    values = pd.to_numeric(text.where(~missing), errors="coerce").astype("float64")
    bad = (values.isna() | ~np.isfinite(values)) & ~missing
    kind = "a number"
    if name in _INTEGER_LIMITS:
        limit = _INTEGER_LIMITS[name]
        kind = f"an integer from {-limit} to {limit}"
        if name == CLIENT_ID:
            kind = f"a positive integer below {limit}"
        bad |= values.notna() & ((values != np.floor(values)) | (values.abs() > limit))
    if bad.any():
        line = bad.idxmax()
        raise CsvFormatError(
            f"{path}: line {line}, column {column.name}: {column[line]!r} is not {kind} "
            f"({int(bad.sum())} such cell(s) in this column); correct the file and load it again"
        )
    return values


def _parse_labels(path: Path, column: pd.Series) -> pd.Series:
    labels = column.fillna("").str.strip().str.lower().map(_CHURN_LABELS)
    unknown = labels.isna()
    if unknown.any():
        lines = ", ".join(str(line) for line in labels.index[unknown][:10])
        logger.warning(
            "%s: column %s: %d row(s) without a known label (line %s); "
            "they are scored but not used for training",
            path,
            column.name,
            int(unknown.sum()),
            lines,
        )
    return labels


def _client_ids(path: Path, table: pd.DataFrame, source: str | None) -> tuple[pd.Series, bool]:
    if source is None:
        return pd.Series(np.arange(1, len(table) + 1, dtype="int64"), index=table.index), True
    ids = _parse_numbers(path, table[source], CLIENT_ID)
    if ids.isna().any():
        line = ids.isna().idxmax()
        raise CsvFormatError(f"{path}: line {line}, column {source}: client id is empty")
    if (ids < 1).any():
        line = (ids < 1).idxmax()
        raise CsvFormatError(
            f"{path}: line {line}, column {source}: client id {table[source][line]!r} "
            "is not a positive integer"
        )
    duplicated = ids.duplicated(keep=False)
    if duplicated.any():
        lines = ", ".join(str(line) for line in ids.index[duplicated][:10])
        raise CsvFormatError(
            f"{path}: column {source}: client ids repeat on lines {lines}; "
            "each client must appear once a month"
        )
    return ids.astype("int64"), False


def read_questionnaire_csv(path: Path) -> QuestionnaireFile:
    """Read a questionnaire CSV, with or without a ``Churn`` column.

    Headers are matched by name, ignoring case, spaces and column order.
    Without a ``client_id`` column the clients are numbered 1..N in file order,
    so the same file always gives the same ids.

    Raises:
        CsvFormatError: the file is not a readable questionnaire table.
    """
    path = Path(path)
    table = _read_text_table(path)
    mapping, ignored = _map_headers(path, table)
    if table.empty:
        raise CsvFormatError(f"{path}: no data rows, only a header; nothing to load")
    by_target = {target: source for source, target in mapping.items()}

    ids, ids_assigned = _client_ids(path, table, by_target.get(CLIENT_ID))
    questionnaires = pd.DataFrame({CLIENT_ID: ids})
    for name in FEATURES:
        values = _parse_numbers(path, table[by_target[name]], name)
        questionnaires[name] = values.astype("Int64") if name in INTEGER_FEATURES else values

    outcomes = None
    if CHURNED in by_target:
        labels = _parse_labels(path, table[by_target[CHURNED]])
        known = labels.notna()
        outcomes = pd.DataFrame({CLIENT_ID: ids[known], CHURNED: labels[known].astype(bool)})
        outcomes = outcomes.reset_index(drop=True)
    return QuestionnaireFile(
        path, questionnaires.reset_index(drop=True), outcomes, ids_assigned, ignored
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


def _upsert(
    conn, staging_query: str, upsert_query: str, table: str, frame, columns
) -> tuple[int, int]:
    db.execute(conn, staging_query)
    db.copy_rows(conn, table, columns, db.frame_rows(frame, columns))
    changed = db.execute(conn, upsert_query).fetchall()
    inserted = sum(1 for row in changed if row.inserted)
    return inserted, len(changed) - inserted


def _check_numbered_ids(conn, loaded: QuestionnaireFile, month: dt.date) -> int:
    """Reject numbered ids against a month of another size; return the month's size."""
    # A numbered id is only a row position in its file. Against a month with
    # another number of clients, row N is most likely another client.
    existing = db.execute(conn, "count_month_questionnaires", {"month": month}).scalar_one()
    if existing and existing != len(loaded.questionnaires):
        raise LoadConflictError(
            f"{loaded.path}: has no client_id column and {len(loaded.questionnaires)} rows, "
            f"but {month:%Y-%m} already has {existing} questionnaires, so numbering the rows "
            "would give their ids to other clients; add a client_id column, or load with "
            "--replace to replace the month's questionnaires and outcomes"
        )
    return existing


def _reject_numbered_changes(loaded: QuestionnaireFile, month: dt.date, n_changed: int) -> None:
    # With numbered ids a changed row may be a correction or another client in
    # that position (one client left, another joined): the two look the same.
    if n_changed:
        raise LoadConflictError(
            f"{loaded.path}: has no client_id column and would change {n_changed} "
            f"questionnaire(s) or outcome(s) already loaded for {month:%Y-%m}; without ids a "
            "changed row may be another client; add a client_id column, or load with "
            "--replace to replace the month's questionnaires and outcomes"
        )


def load_questionnaire_file(
    engine: Engine, loaded: QuestionnaireFile, month: dt.date, *, replace: bool = False
) -> LoadSummary:
    """Insert or update the file's rows for ``month`` in one transaction.

    Rows already loaded with the same values are left alone, so loading the
    same file twice changes nothing. Clients missing from the file are kept,
    unless ``replace`` deletes the month's rows first. A client whose label in
    the file's Churn column is unknown loses the outcome loaded before.

    Raises:
        LoadConflictError: the file numbers its clients by row, and the month
            already contains another number of clients or rows it would change.
    """
    questionnaires = loaded.questionnaires.assign(**{MONTH: month})
    keys = {"month": month}
    with engine.begin() as conn:
        q_removed = o_removed = existing = 0
        if replace:
            q_removed = db.execute(conn, "delete_month_questionnaires", keys).rowcount
            o_removed = db.execute(conn, "delete_month_outcomes", keys).rowcount
        elif loaded.ids_assigned:
            existing = _check_numbered_ids(conn, loaded, month)
        q_new, q_changed = _upsert(
            conn,
            "create_questionnaires_staging",
            "upsert_questionnaires",
            "questionnaires_staging",
            questionnaires,
            [CLIENT_ID, MONTH, *FEATURES],
        )
        o_new = o_changed = 0
        if loaded.outcomes is not None:
            o_new, o_changed = _upsert(
                conn,
                "create_outcomes_staging",
                "upsert_outcomes",
                "outcomes_staging",
                loaded.outcomes.assign(**{MONTH: month}),
                [CLIENT_ID, MONTH, CHURNED],
            )
            unlabelled = ~loaded.questionnaires[CLIENT_ID].isin(loaded.outcomes[CLIENT_ID])
            client_ids = loaded.questionnaires.loc[unlabelled, CLIENT_ID].tolist()
            if client_ids and not replace:
                params = {**keys, "client_ids": client_ids}
                o_removed = db.execute(conn, "delete_unlabelled_outcomes", params).rowcount
        if existing:
            # Raising here rolls the whole load back.
            _reject_numbered_changes(loaded, month, q_changed + o_changed + o_removed)
    return LoadSummary(
        month, len(questionnaires), q_new, q_changed, q_removed, o_new, o_changed, o_removed
    )
