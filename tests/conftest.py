"""Shared fixtures: a real PostgreSQL database per test, and the real data.

With ``TEST_DATABASE_URL`` set (for example
``postgresql://postgres@127.0.0.1:5432/postgres``) the databases are created on
that server; otherwise on an embedded PostgreSQL in a temporary folder.
"""

import functools
import logging
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from gymchurn.runtime import configure_environment

REPO = Path(__file__).resolve().parent.parent
# The real questionnaires and the awkward input files live next to the
# repository by default; GYMCHURN_TEST_SHARED points elsewhere.
SHARED = Path(os.environ.get("GYMCHURN_TEST_SHARED", REPO.parent / "shared"))
REAL_DATA = SHARED / "data" / "gym_churn_us.csv"
CASES = SHARED / "cases"
# Test databases are named PREFIX + a random suffix; set GYMCHURN_TEST_DB_PREFIX
# to tell apart the databases of test sessions sharing one server.
DATABASE_PREFIX = os.environ.get("GYMCHURN_TEST_DB_PREFIX", "gymchurn_test_")

# Before any Prefect import: no telemetry, and Prefect's files in a temporary folder.
_SESSION_HOME = Path(
    os.environ.setdefault("GYMCHURN_TEST_HOME", f"/tmp/gymchurn-test-{os.getpid()}")
)
(_SESSION_HOME / "prefect").mkdir(parents=True, exist_ok=True)
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
configure_environment(_SESSION_HOME)
# Models are cross-validated on 3 folds instead of the job's 5: by estimate,
# half the fitting. A test of the folds themselves sets them outright, and the
# job processes that tests start inherit the 3.
os.environ.setdefault("GYMCHURN_CV_FOLDS", "3")

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from gymchurn import db  # noqa: E402
from gymchurn.settings import get_settings  # noqa: E402

# The test files that take longest, longest first (about 200 s to 40 s on two
# cores). `make test` passes --no-loadscope-reorder, so the two workers take
# whole files in this order and the run does not end with one long file
# running alone.
_LONGEST_FILES = (
    "test_lifecycle.py",
    "test_run_safety.py",
    "test_interrupt.py",
    "test_monthly_flow.py",
    "test_model_integrity.py",
    "test_schedule.py",
    "test_dask_runner.py",
    "test_simulate_command.py",
    "test_validation.py",
    "test_soak.py",
    "test_secrets.py",
    "test_bi_access.py",
    "test_database_outage.py",
    "test_at_risk_command.py",
    "test_cli.py",
    "test_simulation_campaign.py",
    "test_model.py",
)


def pytest_collection_modifyitems(config, items):
    """Put the tests of :data:`_LONGEST_FILES` first, in that order of files."""
    rank = {name: index for index, name in enumerate(_LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@functools.cache
def _prefect_database_template() -> Path:
    """Return a Prefect database with its tables created, made once per test process."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    folder = _SESSION_HOME / f"prefect-template-{worker}"
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
        env={**os.environ, "PREFECT_HOME": str(folder)},
        check=True,
        capture_output=True,
        timeout=300,
    )
    return folder / "prefect.db"


def prefect_home(folder: Path) -> Path:
    """Create ``folder`` as a Prefect home for a job the test starts, and return it.

    The home gets a copy of a Prefect database whose tables exist already. On
    a new home the job's temporary Prefect server first creates them, which
    took 9 s of a job's start in one measurement on two cores.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_prefect_database_template(), folder / "prefect.db")
    return folder


def pytest_configure(config):
    # Some test modules read the case files as they are collected: without
    # them, stop before collection with what to set, not with a traceback.
    missing = [path for path in (REAL_DATA, CASES) if not path.exists()]
    if missing:
        raise pytest.UsageError(
            f"{', '.join(map(str, missing))} not found: the tests read the real "
            "questionnaires and the case files from the folder in GYMCHURN_TEST_SHARED "
            f"(now {SHARED}); set it to the folder that holds data/gym_churn_us.csv "
            "and cases/"
        )


@pytest.fixture(scope="session")
def server_url() -> sa.URL:
    """URL of the maintenance database of the server the tests use."""
    text = os.environ.get("TEST_DATABASE_URL") or db.embedded_database_url(
        _SESSION_HOME / "embedded"
    )
    url = make_url(text)
    return url.set(drivername="postgresql+psycopg")


@pytest.fixture(scope="session")
def admin_engine(server_url):
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def _create_database(admin_engine, server_url) -> sa.URL:
    name = f"{DATABASE_PREFIX}{uuid.uuid4().hex[:12]}"
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    return server_url.set(database=name)


def _drop_database(admin_engine, url: sa.URL) -> None:
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


def _use_database(monkeypatch, url: sa.URL, folder: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("GYMCHURN_MODEL_DIR", str(folder / "models"))
    monkeypatch.setenv("GYMCHURN_OUTPUT_DIR", str(folder / "output"))
    get_settings.cache_clear()


@pytest.fixture
def database(admin_engine, server_url, monkeypatch, tmp_path):
    """A new empty database with the schema applied; the job's settings point at it.

    Yields:
        The engine of that database.
    """
    url = _create_database(admin_engine, server_url)
    _use_database(monkeypatch, url, tmp_path)
    engine = db.get_engine(get_settings())
    db.upgrade(engine)
    yield engine
    engine.dispose()
    _drop_database(admin_engine, url)
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def module_database(admin_engine, server_url, tmp_path_factory):
    """Like ``database``, shared by the tests of one module."""
    monkeypatch = pytest.MonkeyPatch()
    url = _create_database(admin_engine, server_url)
    _use_database(monkeypatch, url, tmp_path_factory.mktemp("job"))
    engine = db.get_engine(get_settings())
    db.upgrade(engine)
    yield engine
    engine.dispose()
    _drop_database(admin_engine, url)
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API for the whole session (about 10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_file():
        pytest.fail(f"real questionnaires not found at {REAL_DATA}")
    return REAL_DATA


def pytest_sessionfinish(session, exitstatus):
    """Remove the session's folder of Prefect files and model files.

    Kept when it contains the embedded PostgreSQL, which stops only when this
    process exits, or when GYMCHURN_TEST_HOME chose the folder.
    """
    default = Path(f"/tmp/gymchurn-test-{os.getpid()}")
    if _SESSION_HOME == default and os.environ.get("TEST_DATABASE_URL"):
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)


class LogMessages(logging.Handler):
    """Keep the text of each record a logger passes on at ``level`` and above."""

    def __init__(self, level: int = logging.NOTSET):
        super().__init__(level=level)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
