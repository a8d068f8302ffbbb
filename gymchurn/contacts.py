"""Read the contacts marketers made with a month's at-risk list and load them into ``crm``.

A contact file has a header and one row a contact, with the columns
``client_id`` (or ``member_id``), ``date`` (or ``contact_date``), ``channel``
and ``outcome`` (or ``result``), matched by name in any order and case. It is
decoded and split as questionnaire files are (see :mod:`gymchurn.loader`): a
UTF-8 or UTF-16 or Windows-1251 file with ``,``, ``;``, tab or ``|``
separators. A file that cannot be read safely is rejected whole.

Each row is checked against the month it is loaded for. A row that breaks a
rule is kept out of ``crm.contacts`` and written to ``crm.contact_quarantine``
with every reason it broke:

- ``invalid_client_id``: not a positive integer;
- ``unknown_client``: no published score of that client in the month;
- ``invalid_date``: not a date (``2026-11-05``, ``05.11.2026`` or ``05/11/2026``);
- ``date_outside_month``: a date outside the month after the scored month,
  when the list was called;
- ``empty_channel``: no channel;
- ``duplicate``: the same client, date and channel as an earlier line of the
  file, or as a contact loaded from another file for the month.

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
    _decode_file,
    _split_records,
)
from gymchurn.schema import CLIENT_ID, format_month
from gymchurn.simulation.simulator import add_months

logger = logging.getLogger(__name__)

# Database column to the header spellings it is read from, normalised.
CONTACT_HEADERS = {
    CLIENT_ID: {"client_id", "clientid", "member_id", "memberid"},
    "contact_date": {"contact_date", "date", "contacted_on"},
    "channel": {"channel"},
    "outcome": {"outcome", "result"},
}
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
_DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y")
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
    decoded = _decode_file(path)
    records = _split_records(path, decoded.text, _detect_delimiter(decoded.text))
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
        raise CsvFormatError(
            f"{path}: line {header_line}: missing column(s) {', '.join(missing)}; the header "
            f"has {', '.join(repr(name) for name in names)}. Expected client_id, date, "
            "channel and outcome (outcome may be empty)"
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


def _parse_date(text: str) -> dt.date | None:
    for pattern in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class CheckedContacts:
    """A contact file's rows after the checks."""

    contacts: pd.DataFrame
    """Rows to load: ``line``, ``client_id``, ``contact_date``, ``channel``, ``outcome``."""
    quarantine: pd.DataFrame
    """Rows kept out: ``line``, the four cells as written, and ``reasons`` (a list)."""
    held_out_contacted: int
    """Held-out clients among the loaded contacts."""
    off_list: int
    """Clients among the loaded contacts that were scored but not in the high or medium tier."""


def check_contacts(
    cells: pd.DataFrame,
    month: dt.date,
    scored: pd.DataFrame,
    loaded_elsewhere: pd.DataFrame | None = None,
) -> CheckedContacts:
    """Check a contact file's cells against the month's published scores.

    Args:
        cells: the text cells of :func:`read_contact_csv`, indexed by line.
        month: the scored month whose list the contacts belong to.
        scored: ``client_id``, ``risk_tier`` and ``holdout`` of the month's scores.
        loaded_elsewhere: ``client_id``, ``contact_date`` and ``channel`` of the
            month's contacts loaded from other files.
    """
    ids = cells[CLIENT_ID].map(_parse_client_id)
    dates = cells["contact_date"].map(_parse_date)
    channels = cells["channel"].str.lower()
    first, after = add_months(month, 1), add_months(month, 2)
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
    keys = pd.DataFrame({CLIENT_ID: ids, "contact_date": dates, "channel": channels})
    repeated = clean & keys.where(clean).duplicated(keep="first")
    if loaded_elsewhere is not None and not loaded_elsewhere.empty:
        elsewhere = set(
            loaded_elsewhere[[CLIENT_ID, "contact_date", "channel"]].itertuples(
                index=False, name=None
            )
        )
        repeated |= clean & pd.Series(
            [tuple(row) in elsewhere for row in keys.itertuples(index=False, name=None)],
            index=cells.index,
        )
    flag(repeated, "duplicate")

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
        cells[bad].reset_index().assign(reasons=[reasons[line] for line in cells.index[bad]])
    )
    contacted = scored[scored[CLIENT_ID].isin(contacts[CLIENT_ID])]
    return CheckedContacts(
        contacts,
        quarantine,
        int(contacted[HOLDOUT].sum()),
        int((~contacted["risk_tier"].isin(HOLDOUT_TIERS)).sum()),
    )


@dataclass(frozen=True)
class ContactLoad:
    """What loading a contact file wrote."""

    path: Path
    month: dt.date
    load_id: uuid.UUID
    rows_read: int
    loaded: int
    quarantined: int
    replaced: int
    """Rows of an earlier load of a file of the same name for the month, deleted first."""
    clients: int
    """Distinct clients among the loaded contacts."""
    held_out_contacted: int
    off_list: int
    reason_counts: dict
    quarantine: pd.DataFrame


def _read_frame_rows(conn, name: str, params: dict) -> pd.DataFrame:
    result = db.execute(conn, name, params)
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def load_contacts(engine: Engine, path: Path, month: dt.date) -> ContactLoad:
    """Check a contact file and load it for ``month``, in one transaction.

    Loading a file of the same name for the same month again replaces the
    rows of the earlier load, contacts and quarantine alike, so a corrected
    file can be loaded over the first one. Files of other names add to the
    month's contacts.

    Raises:
        CsvFormatError: the file cannot be read; nothing was written.
        NoPublishedScoresError: the month has no published scores; nothing was written.
    """
    path = Path(path)
    cells = read_contact_csv(path)
    label = format_month(month)
    load_id = uuid.uuid4()
    keys = {"month": month, "source_file": path.name}
    with engine.begin() as conn:
        scored = _read_frame_rows(conn, "scores_for_contacts", {"month": month})
        if scored.empty:
            raise NoPublishedScoresError(
                f"no published scores for {label}, so no at-risk list the contacts of {path} "
                f"could belong to; score the month first with: gymchurn run --month {label}"
            )
        elsewhere = _read_frame_rows(conn, "contacts_of_other_files", keys)
        checked = check_contacts(cells, month, scored, elsewhere)
        replaced = db.execute(conn, "delete_file_contacts", keys).rowcount
        db.execute(conn, "delete_file_contact_quarantine", keys)
        contacts = checked.contacts.assign(month=month, source_file=path.name, load_id=load_id)
        db.copy_rows(
            conn, "crm.contacts", CONTACT_COLUMNS, db.frame_rows(contacts, CONTACT_COLUMNS)
        )
        quarantine = checked.quarantine.assign(month=month, source_file=path.name, load_id=load_id)
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
        "%d replaced from an earlier load of the file",
        load.path,
        label,
        load.rows_read,
        load.loaded,
        load.clients,
        load.quarantined,
        load.replaced,
    )
    for row in itertools.islice(load.quarantine.itertuples(index=False), 10):
        logger.warning(
            "%s: line %d (client_id %r, date %r, channel %r): %s",
            load.path,
            row.line,
            row.client_id,
            row.contact_date,
            row.channel,
            ", ".join(row.reasons),
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
