"""Read questionnaire CSV files and load them into ``crm``.

A file is read whole and checked before anything is written: a file that
cannot be read safely is refused with an error naming the file, line and
column, and the database is left as it was.
"""

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from gymchurn import db
from gymchurn.schema import CHURNED, CLIENT_ID, FEATURES, INTEGER_FEATURES, MONTH

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


def _read_text_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise CsvFormatError(f"{path}: file not found")
    raw = path.read_bytes()
    if not raw.strip():
        raise CsvFormatError(f"{path}: empty file; expected a CSV header and data rows")
    if b"\x00" in raw[:4096]:
        raise CsvFormatError(
            f"{path}: not a UTF-8/CSV text file (it contains binary bytes); "
            "export the questionnaires as CSV and load that file"
        )
    try:
        raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CsvFormatError(
            f"{path}: not a UTF-8/CSV text file (invalid UTF-8 at byte {err.start}); "
            "save the file as UTF-8 CSV and load it again"
        ) from None
    return pd.read_csv(
        path, dtype=str, keep_default_na=False, encoding="utf-8-sig", skip_blank_lines=True
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
    if missing:
        hint = ""
        if len(table.columns) == 1 and ";" in str(table.columns[0]):
            hint = (
                " The header is separated by ';': separator/decimal format not supported;"
                " export with ',' separators and '.' decimals."
            )
        elif all(_is_number(str(name)) for name in table.columns):
            hint = (
                " The first line holds numbers: header missing / unknown columns;"
                " add the header row."
            )
        raise CsvFormatError(
            f"{path}: line 1: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, table.columns))}.{hint}"
        )
    return mapping, ignored


def _is_number(text: str) -> bool:
    try:
        float(text.split(".")[0] if text.count(".") > 1 else text)
    except ValueError:
        return False
    return True


def _parse_numbers(path: Path, column: pd.Series, name: str) -> pd.Series:
    text = column.str.strip()
    missing = text.str.lower().isin(_MISSING_TOKENS)
    values = pd.to_numeric(text.where(~missing), errors="coerce")
    bad = values.isna() & ~missing
    if name in INTEGER_FEATURES or name == CLIENT_ID:
        bad |= values.notna() & (values != np.floor(values))
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        kind = "an integer" if name in INTEGER_FEATURES or name == CLIENT_ID else "a number"
        raise CsvFormatError(
            f"{path}: line {position + 2}, column {column.name}: {column.iloc[position]!r} "
            f"is not {kind} ({int(bad.sum())} such cell(s) in this column); "
            "correct the file and load it again"
        )
    return values.astype("float64")


def _parse_labels(path: Path, column: pd.Series) -> pd.Series:
    text = column.str.strip().str.lower()
    labels = text.map(_CHURN_LABELS)
    unknown = labels.isna()
    if unknown.any():
        lines = [str(i + 2) for i in np.flatnonzero(unknown.to_numpy())[:10]]
        logger.warning(
            "%s: column %s: %d row(s) without a known label (line %s); "
            "they are scored but not used for training",
            path,
            column.name,
            int(unknown.sum()),
            ", ".join(lines),
        )
    return labels


def _client_ids(path: Path, table: pd.DataFrame, source: str | None) -> tuple[pd.Series, bool]:
    if source is None:
        return pd.Series(np.arange(1, len(table) + 1, dtype="int64"), index=table.index), True
    ids = _parse_numbers(path, table[source], CLIENT_ID)
    if ids.isna().any():
        line = int(np.flatnonzero(ids.isna().to_numpy())[0]) + 2
        raise CsvFormatError(f"{path}: line {line}, column {source}: client id is empty")
    duplicated = ids.duplicated(keep=False)
    if duplicated.any():
        lines = ", ".join(str(i + 2) for i in np.flatnonzero(duplicated.to_numpy())[:10])
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
    return QuestionnaireFile(path, questionnaires, outcomes, ids_assigned, ignored)


@dataclass(frozen=True)
class LoadSummary:
    """What a load changed in ``crm``."""

    month: dt.date
    rows_read: int
    questionnaires_inserted: int
    questionnaires_updated: int
    outcomes_inserted: int
    outcomes_updated: int


def _upsert(
    conn, staging_query: str, upsert_query: str, table: str, frame, columns
) -> tuple[int, int]:
    db.execute(conn, staging_query)
    db.copy_rows(conn, table, columns, db.frame_rows(frame, columns))
    changed = db.execute(conn, upsert_query).fetchall()
    inserted = sum(1 for row in changed if row.inserted)
    return inserted, len(changed) - inserted


def load_questionnaire_file(
    engine: Engine, loaded: QuestionnaireFile, month: dt.date
) -> LoadSummary:
    """Insert or update the file's rows for ``month`` in one transaction.

    Rows already loaded with the same values are left alone, so loading the
    same file twice changes nothing. Clients missing from the file are kept.
    """
    questionnaires = loaded.questionnaires.assign(**{MONTH: month})
    columns = [CLIENT_ID, MONTH, *FEATURES]
    with engine.begin() as conn:
        q_new, q_changed = _upsert(
            conn,
            "create_questionnaires_staging",
            "upsert_questionnaires",
            "questionnaires_staging",
            questionnaires,
            columns,
        )
        o_new = o_changed = 0
        if loaded.outcomes is not None:
            outcomes = loaded.outcomes.assign(**{MONTH: month})
            o_new, o_changed = _upsert(
                conn,
                "create_outcomes_staging",
                "upsert_outcomes",
                "outcomes_staging",
                outcomes,
                [CLIENT_ID, MONTH, CHURNED],
            )
    return LoadSummary(month, len(questionnaires), q_new, q_changed, o_new, o_changed)
