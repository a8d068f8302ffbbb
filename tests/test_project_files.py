"""The SQL files, the schema upgrade and the deployment files agree with the code."""

import re
import tomllib
from urllib.parse import urlparse

import pytest
import sqlalchemy as sa
import yaml

from gymchurn import db
from tests.conftest import REPO

# Calls that name a query file: db.execute(conn, "name", ...), db.read_frame(conn,
# "name", ...), read_sql("name"), and the loader's _upsert(conn, "staging query",
# "upsert query", ...).
_QUERY_CALLS = [
    re.compile(r'\b(?:execute|read_frames?|_read_frame_rows)\(\s*conn,\s*"(\w+)"'),
    re.compile(r'\.upsert\(\s*"(\w+)"'),
    # The publish step deletes the month's rows in a loop over query names.
    re.compile(r'"(delete_month_\w+)"'),
    re.compile(r'\bread_sql\(\s*"(\w+)"'),
]


def _referenced_queries() -> set[str]:
    names = set()
    for path in [*REPO.glob("gymchurn/**/*.py"), *REPO.glob("flows/*.py")]:
        text = path.read_text()
        for pattern in _QUERY_CALLS:
            for match in pattern.finditer(text):
                names.update(match.groups())
    return names


def test_referenced_query_files_exist():
    referenced = _referenced_queries()
    available = {path.stem for path in (db.sql_dir() / "queries").glob("*.sql")}
    assert len(referenced) >= 15
    assert referenced - available == set()


def test_every_query_file_is_used():
    available = {path.stem for path in (db.sql_dir() / "queries").glob("*.sql")}
    assert available - _referenced_queries() == set()


def test_upgrade_twice_keeps_data(database):
    with database.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO crm.churn_outcomes VALUES (7, '2026-10-01', true)"),
        )
    applied = db.upgrade(database)
    assert applied == [path.name for path in db.migration_files()]
    with database.connect() as conn:
        n_rows = conn.execute(sa.text("SELECT count(*) FROM crm.churn_outcomes")).scalar_one()
        tables = conn.execute(
            sa.text(
                "SELECT count(*) FROM information_schema.tables"
                " WHERE table_schema IN ('crm', 'churn')"
            )
        ).scalar_one()
    assert n_rows == 1
    # 6 crm tables (contacts, their quarantine and the loads of questionnaire
    # files among them), 13 churn tables
    # (campaign_results among them) and the views at_risk, latest_scores,
    # cluster_summary and monthly_trend. Month partitions of churn.scores
    # are tables too; this database has none.
    assert tables == 23


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_job_database_matches_postgres_service(compose):
    postgres = compose["services"]["postgres"]["environment"]
    url = urlparse(compose["services"]["gymchurn"]["environment"]["DATABASE_URL"])
    assert url.hostname == "postgres"
    assert url.port == 5432
    assert url.username == postgres["POSTGRES_USER"]
    assert url.path.lstrip("/") == postgres["POSTGRES_DB"]
    assert url.password == postgres["POSTGRES_PASSWORD"]


def test_compose_job_reaches_prefect_server(compose):
    server = compose["services"]["prefect-server"]
    port = int(re.search(r"--port (\d+)", server["command"]).group(1))
    api = urlparse(compose["services"]["gymchurn"]["environment"]["PREFECT_API_URL"])
    assert api.hostname == "prefect-server"
    assert api.port == port
    assert api.path == "/api"
    assert server["environment"]["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_dockerfile_copies_every_packaged_folder():
    dockerfile = (REPO / "Dockerfile").read_text()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    folders = [*wheel["packages"], *wheel["force-include"]]
    copied = re.findall(r"^COPY (\S+) ", dockerfile, re.MULTILINE)
    assert sorted(folders) == sorted(name for name in copied if "." not in name)


def test_later_schema_file_stops_upgrade(database):
    with database.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO churn.schema_migrations (name, sha256) VALUES ('099_later.sql', 'x')"
            )
        )

    for prepare in (db.ensure_schema, db.upgrade):
        with pytest.raises(db.NewerSchemaError, match=r"schema file\(s\) 099_later.sql"):
            prepare(database)

    with database.connect() as conn:
        recorded = conn.execute(sa.text("SELECT count(*) FROM churn.schema_migrations")).scalar()
    assert recorded == len(db.migration_files()) + 1
