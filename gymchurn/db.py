"""Database access: the engine, the embedded server, the SQL files, COPY.

Every SQL statement the job runs lives in a file under ``sql/``; this module is
the only one that reads them. Values always travel as bound parameters.
"""

import csv
import hashlib
import io
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from pathlib import Path

import pandas as pd
import psutil
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import NullPool

from gymchurn.settings import Settings

logger = logging.getLogger(__name__)

# An advisory lock key for schema upgrades, so that two processes starting at
# once do not race on CREATE statements.
_UPGRADE_LOCK_KEY = 7_412_001

# The first key of a run's month lock; the second is the month's number
# (year * 12 + month - 1), so runs of different months never share a lock.
_MONTH_LOCK_CLASS = 7_412_002

# The first key of the lock a load holds on its month until it commits.
_LOAD_LOCK_CLASS = 7_412_003


def sql_dir() -> Path:
    """Return the folder of the SQL files.

    A wheel carries them inside the package; a source checkout (and an editable
    install) has them at the top of the repository.
    """
    packaged = Path(__file__).resolve().parent / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


@cache
def read_sql(name: str) -> str:
    """Return the text of ``sql/queries/NAME.sql``."""
    return (sql_dir() / "queries" / f"{name}.sql").read_text(encoding="utf-8")


def migration_files() -> list[Path]:
    """Return the schema files ``sql/NNN_*.sql`` in the order they apply."""
    return sorted(sql_dir().glob("[0-9][0-9][0-9]_*.sql"))


def _prune_dead_handles(pgdata: Path) -> None:
    # pgserver keeps the pids of the processes using the server in this file
    # and stops the server when the last one exits. A process killed with
    # SIGKILL never removes its pid, and then the server would never be stopped.
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    pids = json.loads(handles.read_text() or "[]")
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def embedded_database_url(home: Path) -> str:
    """Start (or join) the embedded PostgreSQL under ``home`` and return its URL.

    The server listens on a Unix socket only and stops when the last process
    that uses it exits.
    """
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    home.mkdir(parents=True, exist_ok=True)
    pgdata = home.resolve() / "pgdata"
    if pgdata.exists():
        _prune_dead_handles(pgdata)
    with warnings.catch_warnings():
        # pgserver keeps its lock file in the XDG runtime folder and warns when
        # XDG_RUNTIME_DIR is unset (cron, containers); its /tmp fallback works.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        import pgserver

        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    return server.get_uri()


class DatabaseUrlError(ValueError):
    """A DATABASE_URL the job cannot use."""


def database_url(settings: Settings) -> URL:
    """Return the URL of the job's database, with the psycopg driver.

    Raises:
        DatabaseUrlError: DATABASE_URL is not a PostgreSQL URL.
    """
    if settings.database_url is None:
        return make_url(embedded_database_url(settings.home)).set(drivername="postgresql+psycopg")
    try:
        url = make_url(settings.database_url.get_secret_value())
    except sa.exc.ArgumentError:
        url = None
    if url is None or url.get_backend_name() not in ("postgresql", "postgres"):
        masked_url = "unreadable" if url is None else url.render_as_string(hide_password=True)
        raise DatabaseUrlError(
            f"DATABASE_URL ({masked_url}) is not a PostgreSQL URL; expected "
            "postgresql://user:password@host:5432/dbname, or unset it for the embedded database"
        )
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


@cache
def _engine_for(url: URL) -> Engine:
    return sa.create_engine(url, pool_pre_ping=True)


def get_engine(settings: Settings) -> Engine:
    """Return the engine of the job's database, shared within the process."""
    return _engine_for(database_url(settings))


# Connection errors where the server answered and rejected the login or the
# database: a retry fails the same way. psycopg sets no SQLSTATE on errors
# raised while connecting, so the server's English message is matched. A
# server with lc_messages in another language is not recognised, and its
# rejections are retried as unreachable.
_REJECTED_CONNECTIONS = (
    (
        re.compile(r'database ".*" does not exist'),
        "create the database (for example with createdb) or correct its name in DATABASE_URL",
    ),
    (
        re.compile(r"password authentication failed"),
        "check the user name and password in DATABASE_URL",
    ),
    (
        re.compile(r'role ".*" does not exist'),
        "check the user name in DATABASE_URL, or create that role on the server",
    ),
    (
        re.compile(r"no pg_hba\.conf entry"),
        "check the host, user and database in DATABASE_URL; the server's pg_hba.conf "
        "does not let them connect",
    ),
)


def rejected_connection_advice(error: BaseException) -> str | None:
    """Return what to do about a connection the server rejected, or None for other errors."""
    text = str(getattr(error, "orig", None) or error)
    for pattern, advice in _REJECTED_CONNECTIONS:
        if pattern.search(text):
            return advice
    return None


def is_transient(error: BaseException) -> bool:
    """Tell whether ``error`` is a lost or refused connection, worth a retry.

    A connection the server rejected (a missing database or role, a wrong
    password) is not transient.
    """
    import psycopg

    transient = (sa.exc.OperationalError, sa.exc.InterfaceError, psycopg.OperationalError)
    return isinstance(error, transient) and rejected_connection_advice(error) is None


def lock_month_for_load(conn: Connection, month) -> None:
    """Wait for any other load of ``month`` to end, then hold its load lock until this commit.

    A load first reads what the month holds, then writes: two loads at once
    would both find the month as it was before either.
    """
    params = {"lock_class": _LOAD_LOCK_CLASS, "month_key": month.year * 12 + month.month - 1}
    execute(conn, "lock_month_for_load", params)


class MonthBusyError(RuntimeError):
    """Another run of the same month holds the month's lock."""


class MonthLock:
    """A session-level advisory lock on one month, on a connection of its own.

    The connection bypasses the engine's pool, so closing it always ends the
    session and releases the lock: also when the process is killed, because
    the server then sees the connection close.

    NOTE: when only the lock's connection is lost, the run goes on without the
    lock. A second run's publish then fails on the primary key of
    ``churn.scores`` or on the one-succeeded-run-per-month index rather than
    mixing rows, but it is not rejected up front.
    """

    def __init__(self, engine: Engine, month) -> None:
        self._engine = sa.create_engine(engine.url, poolclass=NullPool)
        self._params = {
            "lock_class": _MONTH_LOCK_CLASS,
            "month_key": month.year * 12 + month.month - 1,
        }
        self._conn: Connection | None = None

    def try_acquire(self) -> bool:
        """Take the lock without waiting; return False when another session holds it."""
        conn = self._engine.connect()
        try:
            acquired = bool(execute(conn, "try_month_lock", self._params).scalar_one())
            # End the implicit transaction; the lock belongs to the session.
            conn.commit()
        except BaseException:
            conn.close()
            raise
        if acquired:
            self._conn = conn
        else:
            conn.close()
        return acquired

    def release(self) -> None:
        """Release the lock by closing its connection; a lost connection needs nothing more."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception as error:
                logger.debug("month lock connection already gone: %s", error)
            self._conn = None
        self._engine.dispose()


def connection_error_reason(error: BaseException) -> str:
    """Return the first line of a connection error's message, for logs and run records."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def retry_unreachable(action, delays: Sequence[float], what: str):
    """Call ``action`` until it returns, waiting ``delays[i]`` seconds after failure i.

    Only a lost or refused connection (:func:`is_transient`) is retried; any
    other error, and the last failure, is raised.
    """
    attempts = len(delays) + 1
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as error:
            if attempt == attempts or not is_transient(error):
                raise
            delay = delays[attempt - 1]
            logger.warning(
                "%s: database unreachable (attempt %d of %d): %s; retrying in %g s",
                what,
                attempt,
                attempts,
                connection_error_reason(error),
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def describe(engine: Engine) -> str:
    """Describe the database for logs, without the password."""
    return engine.url.render_as_string(hide_password=True)


def _log_server_warning(diagnostic) -> None:
    # psycopg drops the server's notices unless a handler takes them. A schema
    # file raises WARNING when it must skip a step (roles it may not create), so
    # those are logged. NOTICE lines ("already exists, skipping") are noise.
    if diagnostic.severity_nonlocalized == "WARNING":
        hint = f" {diagnostic.message_hint}" if diagnostic.message_hint else ""
        logger.warning("database: %s.%s", diagnostic.message_primary, hint)


class NewerSchemaError(RuntimeError):
    """The database was upgraded by a later version of gymchurn than this one."""


def _applied_files(conn: Connection) -> dict[str, str]:
    """Return the schema files the database records as applied, name to sha256."""
    if conn.execute(sa.text("SELECT to_regclass('churn.schema_migrations')")).scalar() is None:
        return {}
    return dict(execute(conn, "applied_schema_files").all())


def _check_not_newer(engine: Engine, applied: dict[str, str], files: list[Path]) -> None:
    """Raise :class:`NewerSchemaError` when the database has schema files this version lacks.

    An earlier version would apply its own older files over the later ones,
    which fails or undoes their changes.
    """
    unknown = sorted(set(applied) - {path.name for path in files})
    if unknown:
        raise NewerSchemaError(
            f"the database {describe(engine)} was upgraded by a later version of gymchurn: "
            f"this one does not have its schema file(s) {', '.join(unknown)}. Run the later "
            "version; going back to an earlier one on an upgraded database is not supported"
        )


def upgrade(engine: Engine) -> list[str]:
    """Apply every schema file in order, and record each with its sha256.

    Each file is idempotent, so repeating the upgrade is safe.

    Returns:
        The names of the files applied.

    Raises:
        NewerSchemaError: a later version of gymchurn upgraded the database.
    """
    files = migration_files()
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        raw.add_notice_handler(_log_server_warning)
        try:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY})
            _check_not_newer(engine, _applied_files(conn), files)
            for path in files:
                # Sent as written, without parameters: a schema file's % signs
                # belong to format() and RAISE, not to the driver.
                raw.execute(path.read_text(encoding="utf-8"))
        finally:
            raw.remove_notice_handler(_log_server_warning)
        execute(conn, "forget_schema_files")
        conn.exec_driver_sql(
            read_sql("record_schema_file"),
            [{"name": name, "sha256": digest} for name, digest in _file_digests(files).items()],
        )
    logger.debug("applied schema files %s", [p.name for p in files])
    return [p.name for p in files]


def ensure_schema(engine: Engine) -> list[str]:
    """Apply the schema files unless the database records exactly these files as applied.

    A run calls this rather than :func:`upgrade`, so a role that may write rows
    but not change the schema (``churn_job``) can run the job once an owner has
    upgraded the database.

    Returns:
        The names of the files applied, empty when the schema was up to date.

    Raises:
        NewerSchemaError: a later version of gymchurn upgraded the database.
    """
    files = migration_files()
    with engine.connect() as conn:
        applied = _applied_files(conn)
    _check_not_newer(engine, applied, files)
    if applied == _file_digests(files):
        return []
    return upgrade(engine)


def _file_digests(files: list[Path]) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def execute(conn: Connection, name: str, params: dict | None = None) -> sa.CursorResult:
    """Run the query file ``NAME``, binding ``params`` to its ``%(key)s`` marks."""
    return conn.exec_driver_sql(read_sql(name), params or {})


def copy_out_statement(name: str) -> str:
    """Return ``COPY (query file NAME) TO STDOUT`` as CSV with a header, its marks kept."""
    return f"COPY ({read_sql(name).strip().rstrip(';')}) TO STDOUT (FORMAT CSV, HEADER)"


def read_frame(conn: Connection, name: str, params: dict | None = None) -> pd.DataFrame:
    """Read the result of query file ``NAME`` into a DataFrame through COPY.

    COPY takes no server-side parameters, so psycopg merges ``params`` into the
    statement on the client, quoting each value as a literal.
    """
    statement = copy_out_statement(name)
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(statement, params or None) as copy:
        # pandas parses the blocks as they arrive, so the CSV text is never
        # held whole next to the frame.
        return pd.read_csv(io.BufferedReader(_CopyStream(copy), buffer_size=1 << 20))


def read_frames(
    conn: Connection, name: str, params: dict | None = None, *, chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """Read the result of query file ``NAME`` through COPY, ``chunk_rows`` rows a frame.

    Like :func:`read_frame`, but the caller gets each frame as soon as it is
    parsed, so it can shrink it before the next one is read. Each frame's
    dtypes are inferred from its own rows: an integer column with a null in
    one frame only is float64 there.
    """
    statement = copy_out_statement(name)
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(statement, params or None) as copy:
        stream = io.BufferedReader(_CopyStream(copy), buffer_size=1 << 20)
        with pd.read_csv(stream, chunksize=chunk_rows) as reader:
            yield from reader


class _CopyStream(io.RawIOBase):
    """Read-only file over the blocks of a ``COPY ... TO STDOUT``."""

    def __init__(self, copy):
        self._blocks = iter(copy)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        # COPY TO yields one block a row: fill the buffer from as many as fit,
        # so that the Python cost is per buffer, not per row.
        filled = 0
        while filled < len(buffer):
            if not self._pending:
                block = next(self._blocks, None)
                if block is None:
                    break
                self._pending = memoryview(block)
            size = min(len(buffer) - filled, len(self._pending))
            buffer[filled : filled + size] = self._pending[:size]
            self._pending = self._pending[size:]
            filled += size
        return filled


def copy_rows(
    conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence]
) -> int:
    """Write ``rows`` into ``table`` with COPY FROM STDIN.

    ``table`` and ``columns`` are names fixed in the code, never user input;
    they are quoted as identifiers all the same.

    Returns:
        The number of rows written.
    """
    from psycopg import sql

    raw = conn.connection.driver_connection
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(*table.split(".")),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
    )
    n_rows = 0
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
            n_rows += 1
    return n_rows


def copy_frame(
    conn: Connection,
    table: str,
    frame: pd.DataFrame,
    chunk_rows: int = 100_000,
    *,
    freeze: bool = False,
) -> int:
    """Write every column of ``frame`` into the same-named columns of ``table``.

    The rows travel as CSV text in chunks of ``chunk_rows``, which is several
    times faster than one ``write_row`` call a row. Missing values become NULL.
    ``table`` and the column names are names fixed in the code or returned by
    the database; ``freeze`` is that of :func:`copy_csv`.

    Returns:
        The number of rows written.
    """
    chunks = (
        frame.iloc[start : start + chunk_rows].to_csv(index=False, header=False)
        for start in range(0, len(frame), chunk_rows)
    )
    copy_csv(conn, table, list(frame.columns), chunks, freeze=freeze)
    return len(frame)


def copy_csv(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    chunks: Iterable[str],
    *,
    freeze: bool = False,
) -> None:
    """Write CSV text, whole lines a chunk, into ``columns`` of ``table`` with COPY FROM STDIN.

    A thread sends each chunk while the next one is made. ``table`` and
    ``columns`` are names fixed in the code or returned by the database; they
    are quoted as identifiers all the same. ``freeze`` writes the rows frozen
    (COPY FREEZE), which needs a table created in the current transaction.
    """
    _copy_in(conn, table, columns, chunks, "CSV", freeze)


def copy_binary(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    chunks: Iterable[bytes],
    *,
    freeze: bool = False,
) -> None:
    """Write PostgreSQL's binary COPY format into ``columns`` of ``table``, as :func:`copy_csv`.

    The chunks together must be a whole input, header and trailer included,
    as :func:`gymchurn.binary_copy.blocks` yields them.
    """
    _copy_in(conn, table, columns, chunks, "BINARY", freeze)


def connection_encoding(conn: Connection) -> str:
    """Return the Python name of the encoding text must be sent in on ``conn``."""
    return conn.connection.driver_connection.info.encoding


def _copy_in(conn, table: str, columns: Sequence[str], chunks, form: str, freeze: bool) -> None:
    from psycopg import sql
    from psycopg.copy import QueuedLibpqWriter

    raw = conn.connection.driver_connection
    options = sql.SQL(f"FORMAT {form}, FREEZE" if freeze else f"FORMAT {form}")
    statement = sql.SQL("COPY {} ({}) FROM STDIN ({})").format(
        sql.Identifier(*table.split(".")),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        options,
    )
    with raw.cursor() as cursor:
        with cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:
            for chunk in chunks:
                copy.write(chunk)


def frame_rows(frame: pd.DataFrame, columns: Sequence[str]) -> Iterable[list]:
    """Yield the rows of ``frame`` as lists, with NaN turned into None."""
    subset = frame.loc[:, list(columns)].astype(object)
    subset = subset.where(subset.notna(), None)
    yield from subset.itertuples(index=False, name=None)


def copy_to_file(conn: Connection, statement, params: dict | None, path: Path) -> int:
    """Stream the output of a ``COPY (...) TO STDOUT`` statement into ``path``, atomically.

    The blocks go to a hidden file beside ``path`` as they arrive, and that
    file is renamed to ``path`` once the COPY has ended, so a reader never sees
    half a file and the rows are never held in memory. ``statement`` is a
    ``psycopg.sql.Composable`` built from names fixed in the code; COPY takes
    no server-side parameters, so psycopg merges ``params`` into it on the
    client, quoting each value as a literal.

    Returns:
        The number of rows written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    raw = conn.connection.driver_connection
    try:
        with raw.cursor() as cursor:
            with (
                cursor.copy(statement, params or None) as copy,
                partial.open("wb", buffering=1 << 20) as stream,
            ):
                for block in copy:
                    stream.write(block)
            n_rows = cursor.rowcount
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return n_rows


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` to ``path`` atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        frame.to_csv(partial, index=False, quoting=csv.QUOTE_MINIMAL)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
