"""Read the contacts marketers made with a month's at-risk list and load them into ``crm``.

A contact file has a header and one row a contact, with the columns
``client_id``, ``date``, ``channel`` and ``outcome``, matched by name in any
order and case; :data:`CONTACT_HEADERS` lists the other accepted names,
Russian ones among them (``клиент``, ``дата``, ``канал``, ``результат``). It
is decoded and split as questionnaire files are (see :mod:`gymchurn.loader`):
a UTF-8 or UTF-16 or Windows-1251 file with ``,``, ``;``, tab or ``|``
separators. A file that cannot be read safely is rejected whole.

Dates are ``2026-11-05``, ``05.11.2026`` (day first) or a date with slashes;
a time after the date (``2026-11-05 10:30``, ``2026-11-15T10:00:00``) is
ignored. Slashes are read in one order for the whole file: day first
(``16/11/2026``) or month first (``11/16/2026``), whichever reads every
slash date of the file as a real date. When both orders do (no number above
12), the order that puts the dates in the month the contacts were made
decides; when neither order decides, or the file mixes the two, the file is
rejected.

A load is keyed by the file's resolved path: loading the same path for the
same month again replaces that load, and files of the same name in other
folders add to the month. Rows loaded before paths were stored carry only
the base name, and a load of a file with that name replaces them.

Each row is checked against the month it is loaded for. A row that breaks a
rule is kept out of ``crm.contacts`` and written to ``crm.contact_quarantine``
with every reason it broke:

- ``invalid_client_id``: not a positive integer;
- ``unknown_client``: no published score of that client in the month;
- ``invalid_date``: not a date in one of the formats above;
- ``date_outside_month``: a date outside the month after the scored month,
  when the list was called;
- ``empty_channel``: no channel;
- ``duplicate``: the same client, date and channel as an earlier line of the
  file, or as a contact loaded from another file for the month; the
  quarantine's ``duplicate_of`` names that file and line.

A contact with a held-out client is loaded all the same and counted, with a
warning: it contaminates the control group.
"""

import datetime as dt
import io
import itertools
import logging
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy.engine import Engine

from gymchurn import db
from gymchurn.aliases import normalize_header
from gymchurn.holdout import HOLDOUT, HOLDOUT_TIERS
from gymchurn.loader import (
    _DELIMITERS,
    _MISSING_MARKERS,
    CsvFormatError,
    _check_row_widths,
    _split_records,
)
from gymchurn.schema import CLIENT_ID, format_month
from gymchurn.simulation.simulator import add_months

logger = logging.getLogger(__name__)

# Database column to the header spellings it is read from, the name shown to
# users first. The Russian names are those of Russian-language CRM exports.
_HEADER_SPELLINGS = {
    CLIENT_ID: [
        "client_id",
        "client",
        "clientid",
        "member_id",
        "memberid",
        "клиент",
        "id_клиента",
        "код_клиента",
    ],
    "contact_date": ["date", "contact_date", "contacted_on", "дата", "дата_контакта"],
    "channel": ["channel", "канал", "канал_связи"],
    "outcome": ["outcome", "result", "результат", "итог"],
}
CONTACT_HEADERS = {
    column: [normalize_header(name) for name in names]
    for column, names in _HEADER_SPELLINGS.items()
}
"""Database column to the normalised header names it is read from; the first is the usual one."""
REASONS = (
    "invalid_client_id",
    "unknown_client",
    "invalid_date",
    "date_outside_month",
    "empty_channel",
    "duplicate",
)
_CELLS = list(CONTACT_HEADERS)
_KNOWN = set().union(*CONTACT_HEADERS.values())
_CLIENT_ID = re.compile(r"\+?0*[1-9]\d{0,15}(?:\.0*)?")
_DATE_PATTERNS = {
    "iso": (re.compile(r"\d{4}-\d{1,2}-\d{1,2}"), "%Y-%m-%d"),
    "dots": (re.compile(r"\d{1,2}\.\d{1,2}\.\d{4}"), "%d.%m.%Y"),
}
_SLASHES = re.compile(r"\d{1,2}/\d{1,2}/\d{4}")
_DAY_FIRST, _MONTH_FIRST = "%d/%m/%Y", "%m/%d/%Y"
# A time of day after the date, which a contact's day does not need.
_TIME = re.compile(r"(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")
ACCEPTED_DATES = (
    "2026-11-05, 05.11.2026 (day first), 16/11/2026 (day first) or 11/16/2026 (month first), "
    "each optionally followed by a time such as 10:30"
)
CONTACT_COLUMNS = [
    "month",
    CLIENT_ID,
    "contact_date",
    "channel",
    "outcome",
    "source_file",
    "line",
    "load_id",
]
QUARANTINE_COLUMNS = [
    "month",
    "source_file",
    "line",
    "load_id",
    CLIENT_ID,
    "contact_date",
    "channel",
    "outcome",
    "reasons",
    "duplicate_of",
]


class NoPublishedScoresError(LookupError):
    """The month has no published scores, so no list that contacts could belong to."""


def _detect_delimiter(text: str) -> str:
    first = next((line for line in io.StringIO(text, newline="") if line.strip()), "")
    counts = {
        delimiter: sum(normalize_header(cell) in _KNOWN for cell in first.split(delimiter))
        for delimiter in _DELIMITERS
    }
    return max(_DELIMITERS, key=counts.__getitem__)


def read_contact_csv(path: Path) -> pd.DataFrame:
    """Read a contact file into text cells.

    Returns:
        One row a data line, indexed by the file's line number, with the text
        of ``client_id``, ``contact_date``, ``channel`` and ``outcome``
        stripped of surrounding blanks.

    Raises:
        CsvFormatError: the file is not a readable contact table; the message
            names the file, the line and the missing columns.
    """
    path = Path(path)
    records = _split_records(path, _detect_delimiter)
    if not records:
        raise CsvFormatError(f"{path}: empty file (no fields); expected a header and contacts")
    header_line, names = records[0]
    positions = {}
    for position, name in enumerate(names):
        for column, spellings in CONTACT_HEADERS.items():
            if normalize_header(name) in spellings and column not in positions:
                positions[column] = position
    missing = [column for column in _CELLS if column not in positions]
    if missing:
        accepted = "; ".join(
            f"{_HEADER_SPELLINGS[column][0]} (accepted names: "
            f"{', '.join(_HEADER_SPELLINGS[column])})"
            for column in missing
        )
        raise CsvFormatError(
            f"{path}: line {header_line}: missing column(s) "
            f"{', '.join(_HEADER_SPELLINGS[column][0] for column in missing)}; the header "
            f"has {', '.join(repr(name) for name in names)}. Expected client_id, date, "
            f"channel and outcome (outcome may be empty), in any order and case: {accepted}"
        )
    _check_row_widths(path, records[1:], len(names))
    if len(records) == 1:
        raise CsvFormatError(f"{path}: no data rows, only a header; nothing to load")
    return pd.DataFrame(
        [[fields[positions[column]].strip() for column in _CELLS] for _, fields in records[1:]],
        index=pd.Index([line for line, _ in records[1:]], name="line"),
        columns=_CELLS,
        dtype="str",
    )


def _parse_client_id(text: str) -> int | None:
    return int(float(text)) if _CLIENT_ID.fullmatch(text) else None


def _date_part(text: str) -> str | None:
    """Return the date of a cell without a trailing time of day, or None when it has none."""
    for pattern in [*(regex for regex, _ in _DATE_PATTERNS.values()), _SLASHES]:
        match = re.fullmatch(f"({pattern.pattern}){_TIME.pattern}", text)
        if match:
            return match.group(1)
    return None


def _strptime(text: str, pattern: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(text, pattern).date()
    except ValueError:
        return None


def slash_order(cells: pd.Series, first: dt.date, after: dt.date, source: str = "the file") -> str:
    """Choose how a file's slash dates are read: day first or month first.

    The order is the one that reads every slash date as a real date. When both
    do, it is the one that puts more dates in [first, after), the month the
    contacts were made.

    Args:
        cells: the file's date cells.
        source: the file, for messages.

    Returns:
        The strptime format of the slash dates, ``%d/%m/%Y`` or ``%m/%d/%Y``.

    Raises:
        CsvFormatError: the file mixes the two orders, or neither order decides.
    """
    parts = [_date_part(text) for text in cells]
    dates = [part for part in parts if part is not None and _SLASHES.fullmatch(part)]
    day_first = {text: _strptime(text, _DAY_FIRST) for text in dates}
    month_first = {text: _strptime(text, _MONTH_FIRST) for text in dates}
    only_day = [text for text in dates if day_first[text] and not month_first[text]]
    only_month = [text for text in dates if month_first[text] and not day_first[text]]
    if only_day and only_month:
        raise CsvFormatError(
            f"{source}: the dates mix day first ({only_day[0]}) and month first "
            f"({only_month[0]}); write every date one way. Accepted dates: {ACCEPTED_DATES}"
        )
    if only_month:
        return _MONTH_FIRST
    both = [text for text in dates if day_first[text] and month_first[text]]
    if only_day or all(day_first[text] == month_first[text] for text in both):
        return _DAY_FIRST
    in_day = sum(first <= day_first[text] < after for text in both)
    in_month = sum(first <= month_first[text] < after for text in both)
    if in_day != in_month:
        return _DAY_FIRST if in_day > in_month else _MONTH_FIRST
    raise CsvFormatError(
        f"{source}: the dates with slashes ({both[0]}, ...) can be read day first or month "
        f"first, and neither order puts more of them in the month from {first} on; write "
        f"them as {first.year}-MM-DD or DD.MM.YYYY. Accepted dates: {ACCEPTED_DATES}"
    )


def _parse_date(text: str, slashes: str = _DAY_FIRST) -> dt.date | None:
    part = _date_part(text)
    if part is None:
        return None
    for regex, pattern in _DATE_PATTERNS.values():
        if regex.fullmatch(part):
            return _strptime(part, pattern)
    return _strptime(part, slashes)


@dataclass(frozen=True)
class CheckedContacts:
    """A contact file's rows after the checks."""

    contacts: pd.DataFrame
    """Rows to load: ``line``, ``client_id``, ``contact_date``, ``channel``, ``outcome``."""
    quarantine: pd.DataFrame
    """Rows kept out: ``line``, the four cells as written, ``reasons`` (a list) and
    ``duplicate_of`` (the file and line a duplicate repeats, else None)."""
    held_out_contacted: int
    """Held-out clients among the loaded contacts."""
    off_list: int
    """Clients among the loaded contacts that were scored but not in the high or medium tier."""


def check_contacts(
    cells: pd.DataFrame,
    month: dt.date,
    scored: pd.DataFrame,
    loaded_elsewhere: pd.DataFrame | None = None,
    source: str = "the file",
) -> CheckedContacts:
    """Check a contact file's cells against the month's published scores.

    Args:
        cells: the text cells of :func:`read_contact_csv`, indexed by line.
        month: the scored month whose list the contacts belong to.
        scored: ``client_id``, ``risk_tier`` and ``holdout`` of the month's scores.
        loaded_elsewhere: ``client_id``, ``contact_date``, ``channel``,
            ``source_file`` and ``line`` of the month's contacts loaded from
            other files.
        source: the file the cells come from, as it is stored and named in messages.

    Raises:
        CsvFormatError: the file's slash dates are in no clear order; see
            :func:`slash_order`.
    """
    first, after = add_months(month, 1), add_months(month, 2)
    slashes = slash_order(cells["contact_date"], first, after, source)
    ids = cells[CLIENT_ID].map(_parse_client_id)
    dates = cells["contact_date"].map(lambda text: _parse_date(text, slashes))
    channels = cells["channel"].str.lower()
    reasons = {line: [] for line in cells.index}

    def flag(mask: pd.Series, reason: str) -> None:
        for line in cells.index[mask.to_numpy(dtype=bool)]:
            reasons[line].append(reason)

    known = set(scored[CLIENT_ID])
    flag(ids.isna(), "invalid_client_id")
    flag(ids.notna() & ~ids.isin(known), "unknown_client")
    flag(dates.isna(), "invalid_date")
    flag(dates.map(lambda day: day is not None and not first <= day < after), "date_outside_month")
    flag(channels.isin(_MISSING_MARKERS), "empty_channel")
    clean = pd.Series([not reasons[line] for line in cells.index], index=cells.index)
    duplicate_of = _duplicates(
        pd.DataFrame({CLIENT_ID: ids, "contact_date": dates, "channel": channels})[clean],
        loaded_elsewhere,
        source,
    )
    flag(pd.Series(cells.index.isin(list(duplicate_of)), index=cells.index), "duplicate")

    bad = pd.Series([bool(reasons[line]) for line in cells.index], index=cells.index)
    contacts = pd.DataFrame(
        {
            "line": cells.index[~bad],
            CLIENT_ID: ids[~bad].astype("int64").to_numpy(),
            "contact_date": dates[~bad].to_numpy(),
            "channel": channels[~bad].to_numpy(),
            "outcome": cells["outcome"][~bad].replace("", None).to_numpy(),
        }
    )
    quarantine = (
        cells[bad]
        .reset_index()
        .assign(
            reasons=[reasons[line] for line in cells.index[bad]],
            duplicate_of=pd.Series(
                [duplicate_of.get(line) for line in cells.index[bad]], dtype=object
            ),
        )
    )
    contacted = scored[scored[CLIENT_ID].isin(contacts[CLIENT_ID])]
    return CheckedContacts(
        contacts,
        quarantine,
        int(contacted[HOLDOUT].sum()),
        int((~contacted["risk_tier"].isin(HOLDOUT_TIERS)).sum()),
    )


def _duplicates(keys: pd.DataFrame, loaded_elsewhere: pd.DataFrame | None, source: str) -> dict:
    """Map the line of each repeated contact to the file and line it repeats.

    Args:
        keys: ``client_id``, ``contact_date`` and ``channel`` of the rows that
            passed the other checks, indexed by line.
    """
    seen = {}
    if loaded_elsewhere is not None:
        for row in loaded_elsewhere.itertuples(index=False):
            key = (row.client_id, row.contact_date, row.channel)
            seen.setdefault(key, f"{row.source_file} line {row.line}")
    duplicate_of = {}
    for line, *key in keys.itertuples(name=None):
        key = tuple(key)
        if key in seen:
            duplicate_of[line] = seen[key]
        else:
            seen[key] = f"{source} line {line}"
    return duplicate_of


@dataclass(frozen=True)
class ContactLoad:
    """Counts and paths that loading a contact file wrote."""

    path: Path
    month: dt.date
    load_id: uuid.UUID
    rows_read: int
    loaded: int
    quarantined: int
    replaced: int
    """Rows of an earlier load of the same file for the month, deleted first."""
    source_file: str
    """The key the load is stored by: the resolved path, see :func:`source_key`."""
    clients: int
    """Distinct clients among the loaded contacts."""
    held_out_contacted: int
    off_list: int
    reason_counts: dict
    quarantine: pd.DataFrame


def source_key(path: Path) -> str:
    """Return the key a load of ``path`` is stored and replaced by: its resolved path."""
    return str(Path(path).resolve())


def _read_frame_rows(conn, name: str, params: dict) -> pd.DataFrame:
    result = db.execute(conn, name, params)
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def load_contacts(engine: Engine, path: Path, month: dt.date) -> ContactLoad:
    """Check a contact file and load it for ``month``, in one transaction.

    Loading the file from the same resolved path for the same month again
    replaces the rows of the earlier load, contacts and quarantine alike, so a
    corrected file can be loaded over the first one. Other files add to the
    month's contacts, also files of the same name in other folders. Rows stored
    before loads were keyed by path carry only the base name, and a load of a
    file with that base name replaces them too.

    Raises:
        CsvFormatError: the file cannot be read; nothing was written.
        NoPublishedScoresError: the month has no published scores; nothing was written.
    """
    path = Path(path)
    cells = read_contact_csv(path)
    label = format_month(month)
    load_id = uuid.uuid4()
    source = source_key(path)
    keys = {"month": month, "source_file": source, "legacy_name": path.name}
    with engine.begin() as conn:
        scored = _read_frame_rows(conn, "scores_for_contacts", {"month": month})
        if scored.empty:
            raise NoPublishedScoresError(
                f"no published scores for {label}, so no at-risk list the contacts of {path} "
                f"could belong to; score the month first with: gymchurn run --month {label}"
            )
        elsewhere = _read_frame_rows(conn, "contacts_of_other_files", keys)
        checked = check_contacts(cells, month, scored, elsewhere, source)
        replaced = db.execute(conn, "delete_file_contacts", keys).rowcount
        db.execute(conn, "delete_file_contact_quarantine", keys)
        contacts = checked.contacts.assign(month=month, source_file=source, load_id=load_id)
        db.copy_rows(
            conn, "crm.contacts", CONTACT_COLUMNS, db.frame_rows(contacts, CONTACT_COLUMNS)
        )
        quarantine = checked.quarantine.assign(month=month, source_file=source, load_id=load_id)
        db.copy_rows(
            conn,
            "crm.contact_quarantine",
            QUARANTINE_COLUMNS,
            db.frame_rows(quarantine, QUARANTINE_COLUMNS),
        )
    counts = {
        reason: sum(reason in row for row in checked.quarantine["reasons"]) for reason in REASONS
    }
    load = ContactLoad(
        path,
        month,
        load_id,
        len(cells),
        len(checked.contacts),
        len(checked.quarantine),
        replaced,
        source,
        checked.contacts[CLIENT_ID].nunique(),
        checked.held_out_contacted,
        checked.off_list,
        {reason: count for reason, count in counts.items() if count},
        checked.quarantine,
    )
    _log_load(load)
    return load


def _log_load(load: ContactLoad) -> None:
    label = format_month(load.month)
    logger.info(
        "contacts: %s for %s: %d rows read, %d loaded (%d clients), %d quarantined, "
        "%d replaced from an earlier load of %s",
        load.path,
        label,
        load.rows_read,
        load.loaded,
        load.clients,
        load.quarantined,
        load.replaced,
        load.source_file,
    )
    for row in itertools.islice(load.quarantine.itertuples(index=False), 10):
        duplicate = f" of {row.duplicate_of}" if isinstance(row.duplicate_of, str) else ""
        logger.warning(
            "%s: line %d (client_id %r, date %r, channel %r): %s%s",
            load.path,
            row.line,
            row.client_id,
            row.contact_date,
            row.channel,
            ", ".join(row.reasons),
            duplicate,
        )
    if load.quarantined > 10:
        logger.warning("%s: %d more quarantined rows", load.path, load.quarantined - 10)
    if load.held_out_contacted:
        logger.warning(
            "%s: %d held-out client(s) of %s were contacted; they stay in the control group "
            "and make the measured effect smaller than the true one. Take the contact lists "
            "from churn.at_risk or gymchurn at-risk, which leave them out",
            load.path,
            load.held_out_contacted,
            label,
        )
    if load.off_list:
        logger.warning(
            "%s: %d contacted client(s) were in the low tier of %s, off the at-risk list; "
            "their contacts are loaded but not measured",
            load.path,
            load.off_list,
            label,
        )
