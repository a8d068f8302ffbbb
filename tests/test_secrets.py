"""The password in DATABASE_URL never reaches output, files or the database.

The job logs in as a role of its own with a distinctive password (the local
test server may trust 127.0.0.1, in which case the password is sent but not
checked). The tests run the job through a success, a recorded failure and
connection failures, then search every output, file and text value for it.
"""

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from psycopg import sql

from gymchurn import db
from gymchurn.settings import get_settings
from tests.conftest import REPO, prefect_home
from tests.test_cli import _invoke
from tests.test_cli_arguments import _tables_digest

PASSWORD = f"Pw-{uuid.uuid4().hex[:16]}-secret"


@pytest.fixture
def password_url(database, admin_engine, monkeypatch):
    """DATABASE_URL of a login role with PASSWORD that may read and write the test database."""
    role = f"gymchurn_test_{uuid.uuid4().hex[:8]}"
    with admin_engine.connect() as conn:
        raw = conn.connection.driver_connection
        raw.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(PASSWORD)
            )
        )
        # Members inherit the privileges of the owner of the job's tables.
        raw.execute(sql.SQL("GRANT postgres TO {}").format(sql.Identifier(role)))
    url = database.url.set(username=role, password=PASSWORD, drivername="postgresql")
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("GYMCHURN_DB_RETRY_SECONDS", "[0.1]")
    get_settings.cache_clear()
    yield url
    db.get_engine(get_settings()).dispose()
    with admin_engine.connect() as conn:
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
            {"r": role},
        )
        conn.connection.driver_connection.execute(
            sql.SQL("DROP ROLE {}").format(sql.Identifier(role))
        )
    get_settings.cache_clear()


def _run(tmp_path: Path, url: str, *months: str) -> tuple[int, str]:
    """Run ``gymchurn run`` for ``months`` with DATABASE_URL ``url``; return code and output."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PREFECT_HOME": str(prefect_home(tmp_path / "prefect")),
        "GYMCHURN_DB_RETRY_SECONDS": "[0.1]",
    }
    command = [sys.executable, "-m", "gymchurn.cli", "run"]
    for month in months:
        command += ["--month", month]
    job = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    return job.returncode, job.stdout + job.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _files_containing(folder: Path, secret: str) -> list[str]:
    return [
        str(path)
        for path in folder.rglob("*")
        if path.is_file() and secret.encode() in path.read_bytes()
    ]


def test_password_never_shown_or_stored(database, password_url, tmp_path):
    url = password_url.render_as_string(hide_password=False)
    outputs = {}
    simulated = _invoke("simulate", "--clients", "1500", "--months", "2", "--start", "2026-01")
    assert simulated.exit_code == 0, simulated.output
    outputs["simulate"] = simulated.output

    # February is scored and published; March has no questionnaires and fails.
    code, outputs["run"] = _run(tmp_path, url, "2026-02", "2026-03")
    assert code == 1, outputs["run"][-3000:]
    assert "2026-02: " in outputs["run"]
    # The job's own error is shown with its message and without a traceback.
    assert "error: run for 2026-03 failed: no questionnaires for 2026-03" in outputs["run"]
    # Once for the failed step, once in the error line: Prefect's records of
    # the flow's exception and final state stay off the console.
    assert outputs["run"].count("no questionnaires for 2026-03") == 2, outputs["run"][-3000:]
    assert "Traceback" not in outputs["run"], outputs["run"][-3000:]
    code, outputs["no database"] = _run(
        tmp_path, password_url.set(database="gymchurn_test_missing").render_as_string(False)
    )
    assert code == 1
    code, outputs["closed port"] = _run(
        tmp_path, password_url.set(port=_free_port()).render_as_string(False), "2026-02"
    )
    assert code == 1
    assert "cannot connect to the database" in outputs["closed port"]
    code, outputs["not postgres"] = _run(
        tmp_path, password_url.set(drivername="mysql").render_as_string(False), "2026-02"
    )
    assert code == 2
    for name in ("at-risk", "models list", "validate"):
        args = {
            "at-risk": ["at-risk", "--month", "2026-02", "--output", str(tmp_path / "list.csv")],
            "models list": ["models", "list"],
            "validate": ["validate", "--month", "2026-02"],
        }[name]
        result = _invoke(*args)
        outputs[name] = result.output

    with database.connect() as conn:
        statuses = conn.execute(sa.text("SELECT status FROM churn.runs ORDER BY 1")).scalars()
        assert list(statuses) == ["failed", "succeeded"]
        text_values = [
            row[0]
            for table in _tables_digest(database)
            for row in conn.execute(sa.text(f"SELECT t::text FROM {table} AS t"))
        ]
    assert PASSWORD in url
    # The URL is shown, with its password masked.
    assert f"{password_url.username}:***@" in outputs["simulate"]
    for name, output in outputs.items():
        assert PASSWORD not in output, name
    assert not [value for value in text_values if PASSWORD in value]
    assert _files_containing(tmp_path, PASSWORD) == []
