"""The BI views, the group roles churn_job and churn_bi, and the schema comments.

One backtest of the real questionnaires (month 2026-10, outcomes known) feeds
the view tests. The access tests connect as temporary login roles.
"""

import contextlib
import logging
import os
import re
import subprocess
import sys
import uuid

import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa

from gymchurn import db
from gymchurn.campaigns import refresh_month
from gymchurn.contacts import load_contacts
from gymchurn.loader import load_questionnaire_file, read_questionnaire_csv
from gymchurn.schema import parse_month
from tests.conftest import CASES, REPO

MONTH = "2026-10-01"
BI_VIEWS = ["latest_scores", "cluster_summary", "monthly_trend"]


def _frame(engine, query: str, **params) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.text(query), conn, params=params)


def _scalar(engine, query: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(query), params).scalar_one()


@pytest.fixture(scope="module")
def backtest(module_database, real_data, prefect_harness, tmp_path_factory):
    """The real file loaded as 2026-10 with its outcomes, that month scored, and its
    listed clients contacted, so that churn.campaign_results has rows."""
    from flows.monthly_scoring import monthly_scoring

    load_questionnaire_file(
        module_database, read_questionnaire_csv(real_data), parse_month("2026-10")
    )
    result = monthly_scoring(month="2026-10")
    listed = _frame(
        module_database,
        "SELECT client_id FROM churn.scores WHERE month = :month AND NOT holdout"
        " AND risk_tier IN ('high', 'medium')",
        month=MONTH,
    )
    calls = tmp_path_factory.mktemp("contacts") / "calls.csv"
    listed.assign(date="2026-11-02", channel="call", outcome="reached").to_csv(calls, index=False)
    load_contacts(module_database, calls, parse_month("2026-10"))
    refresh_month(module_database, parse_month("2026-10"))
    return result


@contextlib.contextmanager
def _login_in(admin_engine, database_url: sa.URL, group: str):
    """Yield an engine that connects as a new login role in ``group``.

    The role has a random name and is dropped afterwards, also when the test fails.
    """
    name = f"gymchurn_test_{group}_{uuid.uuid4().hex[:8]}"
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{name}" LOGIN IN ROLE {group}')
    engine = sa.create_engine(database_url.set(username=name, password=None))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{name}"')


@pytest.fixture(scope="module")
def bi_engine(admin_engine, module_database, backtest):
    with _login_in(admin_engine, module_database.url, "churn_bi") as engine:
        yield engine


@pytest.fixture(scope="module")
def job_engine(admin_engine, module_database, backtest):
    with _login_in(admin_engine, module_database.url, "churn_job") as engine:
        yield engine


def _rejected(engine, statement: str) -> str:
    """Return the error that ``statement`` raises, in a transaction rolled back after."""
    with engine.connect() as conn:
        with pytest.raises(sa.exc.ProgrammingError) as caught:
            conn.exec_driver_sql(statement)
        conn.rollback()
    return str(caught.value.orig)


# Views after a real run


def test_latest_scores_every_client(module_database, backtest):
    latest = _frame(module_database, "SELECT * FROM churn.latest_scores")
    assert len(latest) == 4000
    assert latest["client_id"].nunique() == 4000
    assert set(latest["month"].astype(str)) == {MONTH}
    assert latest["cluster_name"].notna().all()
    assert set(latest["run_id"].astype(str)) == {str(backtest["run_id"])}


def test_latest_scores_matches_scores(module_database, backtest):
    joined = _scalar(
        module_database,
        "SELECT count(*) FROM churn.latest_scores AS l"
        " JOIN churn.scores AS s USING (month, client_id)"
        " JOIN churn.clusters AS c ON c.month = l.month AND c.cluster_id = l.cluster_id"
        " WHERE l.churn_probability = s.churn_probability"
        " AND l.risk_tier = s.risk_tier AND l.cluster_name = c.name",
    )
    assert joined == 4000


def test_cluster_summary_sizes_add_up(module_database, backtest):
    summary = _frame(
        module_database, "SELECT * FROM churn.cluster_summary WHERE month = :m", m=MONTH
    )
    high = _scalar(
        module_database,
        "SELECT count(*) FROM churn.scores WHERE month = :m AND risk_tier = 'high'",
        m=MONTH,
    )
    assert sorted(summary["cluster_id"]) == [0, 1, 2, 3, 4]
    assert summary["size"].sum() == backtest["rows_scored"] == 4000
    assert summary["share"].sum() == pytest.approx(1.0)
    assert summary["clients_high"].sum() == high
    assert summary["name"].notna().all()
    assert summary["traits"].map(len).min() >= 1


def test_monthly_trend_sums_order_independent(module_database, backtest):
    query = "SELECT expected_churners, mean_probability FROM churn.monthly_trend"
    with module_database.connect() as conn:
        before = tuple(conn.exec_driver_sql(query).one())
        # New versions of every other row go to the end of the table, so a scan
        # reads the rows in another order. Rolled back at the end.
        moved = conn.exec_driver_sql(
            "UPDATE churn.scores SET holdout = holdout WHERE client_id %% 2 = 0"
        ).rowcount
        after = tuple(conn.exec_driver_sql(query).one())
        conn.rollback()

    assert moved == 2000
    assert after == before
    assert 900 < before[0] < 1200


def test_monthly_trend_expected_churners(module_database, backtest):
    trend = _frame(module_database, "SELECT * FROM churn.monthly_trend")
    totals = _frame(
        module_database,
        "SELECT count(*) AS n, sum(churn_probability) AS total, avg(churn_probability) AS mean"
        " FROM churn.scores WHERE month = :m",
        m=MONTH,
    ).iloc[0]
    assert len(trend) == 1
    row = trend.iloc[0]
    assert str(row["month"]) == MONTH
    assert row["clients_scored"] == totals["n"] == 4000
    assert row["expected_churners"] == pytest.approx(totals["total"])
    assert row["mean_probability"] == pytest.approx(totals["mean"])
    assert row["mode"] == "backtest"


def test_monthly_trend_tiers_match_scores(module_database, backtest):
    trend = _frame(module_database, "SELECT * FROM churn.monthly_trend").iloc[0]
    tiers = _frame(
        module_database,
        "SELECT risk_tier, count(*) AS n FROM churn.scores WHERE month = :m GROUP BY risk_tier",
        m=MONTH,
    ).set_index("risk_tier")["n"]
    assert trend["clients_high"] == tiers.get("high", 0)
    assert trend["clients_medium"] == tiers.get("medium", 0)
    assert trend["clients_low"] == tiers.get("low", 0)
    assert trend["clients_high"] + trend["clients_medium"] + trend["clients_low"] == 4000


def test_monthly_trend_realised_churn(module_database, backtest, real_data):
    trend = _frame(module_database, "SELECT * FROM churn.monthly_trend").iloc[0]
    churned = pd.read_csv(real_data)["Churn"]
    assert trend["outcomes_known"] == 4000
    assert trend["churners"] == churned.sum()
    assert trend["realised_churn_rate"] == pytest.approx(churned.mean())
    assert trend["realised_roc_auc"] == pytest.approx(backtest["realised_roc_auc"])
    assert trend["realised_roc_auc"] >= 0.985
    assert not trend["labels_blocked"]


# Access of churn_bi


def test_bi_reads_every_churn_table_and_view(module_database, bi_engine):
    relations = _frame(
        module_database,
        "SELECT c.relname FROM pg_class AS c"
        " WHERE c.relnamespace = 'churn'::regnamespace AND c.relkind IN ('r', 'p', 'v')"
        " ORDER BY c.relname",
    )["relname"].to_list()
    assert set(BI_VIEWS) | {"at_risk", "scores", "clusters", "runs"} <= set(relations)
    counts = {name: _scalar(bi_engine, f"SELECT count(*) FROM churn.{name}") for name in relations}
    assert counts["scores"] == 4000
    assert counts["latest_scores"] == 4000
    assert counts["cluster_summary"] == 5
    assert counts["at_risk"] > 0


def test_bi_reads_view_over_crm(bi_engine):
    # churn.monthly_trend reads crm.churn_outcomes with its owner's rights.
    assert _scalar(bi_engine, "SELECT outcomes_known FROM churn.monthly_trend") == 4000


@pytest.mark.parametrize(
    "table", ["crm.questionnaires", "crm.churn_outcomes", "crm.questionnaire_faults"]
)
def test_bi_cannot_read_crm(bi_engine, table):
    error = _rejected(bi_engine, f"SELECT count(*) FROM {table}")
    assert "permission denied" in error


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO churn.scores SELECT * FROM churn.scores LIMIT 1",
        "UPDATE churn.scores SET churn_probability = 0.5",
        "DELETE FROM churn.scores",
        "TRUNCATE churn.scores",
        "CREATE TABLE churn.bi_scratch (x int)",
        "CREATE TABLE public.bi_scratch (x int)",
        "CREATE VIEW churn.bi_scratch AS SELECT 1 AS x",
    ],
)
def test_bi_cannot_write(bi_engine, statement):
    error = _rejected(bi_engine, statement)
    assert "permission denied" in error


# Access of churn_job


def test_job_reads_crm(job_engine):
    assert _scalar(job_engine, "SELECT count(*) FROM crm.questionnaires") == 4000
    assert _scalar(job_engine, "SELECT count(*) FROM crm.churn_outcomes") == 4000


def test_job_writes_churn(job_engine):
    with job_engine.connect() as conn, conn.begin() as transaction:
        updated = conn.execute(
            sa.text("UPDATE churn.scores SET reasons = '{}' WHERE month = :m"), {"m": MONTH}
        ).rowcount
        inserted = conn.execute(
            sa.text(
                "INSERT INTO churn.runs (run_id, month, status, started_at)"
                " VALUES (:run_id, :m, 'failed', now())"
            ),
            {"run_id": uuid.uuid4(), "m": MONTH},
        ).rowcount
        deleted = conn.execute(
            sa.text("DELETE FROM churn.findings WHERE month = :m"), {"m": MONTH}
        ).rowcount
        transaction.rollback()
    assert updated == 4000
    assert inserted == 1
    assert deleted > 0


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO crm.churn_outcomes VALUES (999999, '2026-10-01', true)",
        "UPDATE crm.questionnaires SET age = 30",
        "DELETE FROM crm.churn_outcomes",
        "CREATE TABLE crm.job_scratch (x int)",
        "CREATE TABLE public.job_scratch (x int)",
    ],
)
def test_job_cannot_write_crm(job_engine, statement):
    error = _rejected(job_engine, statement)
    assert "permission denied" in error


# Comments and repeated upgrades

_UNCOMMENTED = """
SELECT n.nspname || '.' || c.relname AS relation, NULL AS column_name
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname IN ('crm', 'churn') AND c.relkind IN ('r', 'p', 'v', 'm')
  AND obj_description(c.oid, 'pg_class') IS NULL
UNION ALL
SELECT n.nspname || '.' || c.relname, a.attname
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname IN ('crm', 'churn') AND c.relkind IN ('r', 'p', 'v', 'm')
  AND col_description(c.oid, a.attnum) IS NULL
ORDER BY 1, 2
"""


def test_every_column_has_comment(module_database):
    n_columns = _scalar(
        module_database,
        "SELECT count(*) FROM information_schema.columns WHERE table_schema IN ('crm', 'churn')",
    )
    missing = _frame(module_database, _UNCOMMENTED)
    names = [
        row.relation if row.column_name is None else f"{row.relation}.{row.column_name}"
        for row in missing.itertuples()
    ]
    assert n_columns > 150
    assert names == [], f"{len(names)} without a comment: {', '.join(names)}"


# Everything a second upgrade could change: comments, indexes, privileges,
# default privileges, view definitions.
_SCHEMA_LISTING = """
SELECT 'comment', n.nspname || '.' || c.relname || '.' || coalesce(a.attname, ''),
       coalesce(d.description, '')
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_description AS d
    ON d.objoid = c.oid AND d.classoid = 'pg_class'::regclass
   AND d.objsubid = coalesce(a.attnum, 0)
WHERE n.nspname IN ('crm', 'churn')
UNION ALL
SELECT 'index', schemaname || '.' || indexname, indexdef
FROM pg_indexes WHERE schemaname IN ('crm', 'churn')
UNION ALL
SELECT 'grant', n.nspname || '.' || c.relname, coalesce(c.relacl::text, '')
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname IN ('crm', 'churn')
UNION ALL
SELECT 'schema', nspname, coalesce(nspacl::text, '') || ' ' || coalesce(
    obj_description(oid, 'pg_namespace'), '')
FROM pg_namespace WHERE nspname IN ('crm', 'churn', 'public')
UNION ALL
SELECT 'default', coalesce(defaclnamespace::regnamespace::text, '') || ' '
    || defaclobjtype::text, defaclacl::text
FROM pg_default_acl
UNION ALL
SELECT 'view', schemaname || '.' || viewname, definition
FROM pg_views WHERE schemaname IN ('crm', 'churn')
ORDER BY 1, 2, 3
"""


def _schema_listing(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(_SCHEMA_LISTING))]


def test_upgrade_twice_gives_same_schema(database):
    before = _schema_listing(database)
    db.upgrade(database)
    after = _schema_listing(database)
    kinds = {row[0] for row in before}
    grants = {row[1]: row[2] for row in before if row[0] == "grant"}
    assert kinds == {"comment", "index", "grant", "schema", "default", "view"}
    assert "churn_bi=r/" in grants["churn.latest_scores"]
    assert "churn_bi" not in grants["crm.questionnaires"]
    assert "churn_job=r/" in grants["crm.questionnaires"]
    assert after == before


@pytest.fixture
def owner_database(admin_engine, server_url):
    """A database owned by a login role without CREATEROLE; both dropped afterwards.

    Yields:
        The owner's role name and an engine connected as the owner.
    """
    owner = f"gymchurn_test_owner_{uuid.uuid4().hex[:8]}"
    name = f"gymchurn_test_{uuid.uuid4().hex[:12]}"
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{owner}" LOGIN NOCREATEROLE NOSUPERUSER')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" OWNER "{owner}"')
    engine = sa.create_engine(server_url.set(database=name, username=owner, password=None))
    try:
        yield owner, engine
    finally:
        engine.dispose()
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{owner}"')


def test_upgrade_without_createrole_grants(owner_database):
    owner, engine = owner_database
    applied = db.upgrade(engine)
    may_create = _scalar(
        engine, "SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user"
    )
    assert applied[-1] == db.migration_files()[-1].name
    assert may_create is False
    assert _scalar(
        engine, "SELECT has_table_privilege('churn_bi', 'churn.latest_scores', 'SELECT')"
    )
    assert not _scalar(
        engine, "SELECT has_table_privilege('churn_bi', 'crm.questionnaires', 'SELECT')"
    )
    assert _scalar(engine, "SELECT has_table_privilege('churn_job', 'churn.scores', 'INSERT')")


def test_upgrade_without_createrole_warns(admin_engine, owner_database, server_url):
    """Check that a missing role is skipped with a warning naming the fix.

    The roles are cluster-wide and shared with every other database, so
    churn_bi is renamed inside a transaction that is rolled back; other
    sessions never see the change.
    """
    owner, engine = owner_database
    db.upgrade(engine)
    # A Diagnostic is valid only during the callback, so keep its fields.
    warnings: list[tuple[str, str]] = []

    def keep_warning(diagnostic: psycopg.errors.Diagnostic) -> None:
        if diagnostic.severity_nonlocalized == "WARNING":
            warnings.append((diagnostic.message_primary, diagnostic.message_hint))

    url = server_url.set(database=engine.url.database)
    admin = psycopg.connect(url.set(drivername="postgresql").render_as_string(False))
    try:
        admin.add_notice_handler(keep_warning)
        with admin.transaction(force_rollback=True):
            admin.execute("ALTER ROLE churn_bi RENAME TO churn_bi_hidden_by_test")
            admin.execute(f'SET LOCAL ROLE "{owner}"')
            admin.execute((db.sql_dir() / "009_bi.sql").read_text(encoding="utf-8"))
            bi_grants = admin.execute(
                "SELECT count(*) FROM pg_class AS c, aclexplode(c.relacl) AS acl"
                " WHERE c.relnamespace = 'churn'::regnamespace"
                " AND acl.grantee = 'churn_bi_hidden_by_test'::regrole"
            ).fetchone()[0]
    finally:
        admin.close()
    assert len(warnings) == 1
    message, hint = warnings[0]
    assert "roles churn_bi not created" in message
    assert f"user {owner} has neither CREATEROLE nor SUPERUSER" in message
    assert "CREATE ROLE churn_bi NOLOGIN" in hint
    # The grants made by the first upgrade stay; no new ones fail.
    assert bi_grants > 0


def test_upgrade_logs_server_warnings(admin_engine, caplog):
    caplog.set_level(logging.WARNING, logger="gymchurn.db")
    with admin_engine.connect() as conn:
        raw = conn.connection.driver_connection
        raw.add_notice_handler(db._log_server_warning)
        try:
            conn.exec_driver_sql(
                "DO $$ BEGIN RAISE NOTICE 'noise';"
                " RAISE WARNING USING MESSAGE = 'roles skipped', HINT = 'Run it.'; END $$"
            )
        finally:
            raw.remove_notice_handler(db._log_server_warning)
    assert [r.getMessage() for r in caplog.records] == ["database: roles skipped. Run it."]


# The example queries of docs/bi.md


def _doc_queries() -> list[str]:
    # Analysts' examples are fenced ```sql; the DBA's statements are fenced
    # ```pgsql, so that this test does not run them.
    text = (REPO / "docs" / "bi.md").read_text(encoding="utf-8")
    return re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)


def test_docs_have_an_example_per_view():
    queries = "\n".join(_doc_queries())
    for view in [*BI_VIEWS, "at_risk"]:
        assert f"churn.{view}" in queries


@pytest.mark.parametrize("index", range(len(_doc_queries())))
def test_docs_example_runs_as_bi(bi_engine, index):
    query = _doc_queries()[index]
    with bi_engine.connect() as conn:
        rows = conn.exec_driver_sql(query).fetchall()
    assert len(rows) > 0, f"no rows from:\n{query}"


def test_job_role_runs_the_month(admin_engine, module_database, backtest, monkeypatch):
    from flows.monthly_scoring import monthly_scoring
    from gymchurn.settings import get_settings

    with _login_in(admin_engine, module_database.url, "churn_job") as engine:
        monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
        get_settings.cache_clear()
        try:
            rerun = monthly_scoring(month="2026-10")
        finally:
            get_settings.cache_clear()
        login = engine.url.username

    runs = _frame(
        module_database,
        "SELECT run_id, status FROM churn.runs WHERE month = :month ORDER BY started_at",
        month=MONTH,
    )
    assert login.startswith("gymchurn_test_churn_job_")
    assert rerun["rows_scored"] == 4000
    assert runs["status"].to_list() == ["superseded", "succeeded"]
    assert str(runs["run_id"].iloc[-1]) == rerun["run_id"]
    assert (
        _scalar(
            module_database, "SELECT count(*) FROM churn.scores WHERE month = :month", month=MONTH
        )
        == 4000
    )


def test_run_skips_upgrade_of_current_schema(database):
    files = [path.name for path in db.migration_files()]
    recorded = _frame(database, "SELECT name FROM churn.schema_migrations ORDER BY name")

    assert recorded["name"].to_list() == files
    assert db.ensure_schema(database) == []
    with database.begin() as conn:
        conn.exec_driver_sql("UPDATE churn.schema_migrations SET sha256 = 'changed'")
    assert db.ensure_schema(database) == files


def test_job_role_load_denied_in_one_line(admin_engine, module_database, backtest):
    with _login_in(admin_engine, module_database.url, "churn_job") as engine:
        env = {**os.environ, "DATABASE_URL": engine.url.render_as_string(hide_password=False)}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "gymchurn.cli",
                "load-csv",
                str(CASES / "00_clean_reference.csv"),
                "--month",
                "2026-05",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert result.returncode == 1
    assert "error: the database role may not do this: permission denied" in result.stderr
    assert "schema owner" in result.stderr
    assert "Traceback" not in result.stderr
    assert (
        _scalar(
            module_database, "SELECT count(*) FROM crm.questionnaires WHERE month = '2026-05-01'"
        )
        == 0
    )
