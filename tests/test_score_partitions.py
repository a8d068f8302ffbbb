"""churn.scores as one partition a month: the swap of a month's scores and the upgrade."""

import datetime as dt
import uuid

import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa

from gymchurn import db, steps
from tests.conftest import _create_database, _drop_database

MARCH = dt.date(2026, 3, 1)
APRIL = dt.date(2026, 4, 1)
VERSION = "v202602-test"
PARTITION_FILE = "013_partitioned_scores.sql"


def _scalar(engine, query: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(query), params).scalar()


def _add_run(conn, month: dt.date) -> uuid.UUID:
    run_id = uuid.uuid4()
    db.execute(conn, "insert_run", {"run_id": run_id, "month": month, "retrain_policy": "auto"})
    return run_id


def _add_model(conn) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO churn.model_versions (version, algorithm, params, features, metrics,"
            " training_months, training_rows, sklearn_version, artifact_path, artifact_sha256,"
            " status) VALUES (:version, 'logistic_regression', '{}', '{}', '{}', '{}', 0, '1.9',"
            " 'none', 'none', 'champion') ON CONFLICT DO NOTHING"
        ),
        {"version": VERSION},
    )


def _scores(n_clients: int, probability: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "client_id": range(1, n_clients + 1),
            "churn_probability": probability,
            "risk_tier": "high" if probability >= 0.5 else "low",
            "cluster_id": 2,
            "reasons": [["1-month contract"]] * n_clients,
            "suggested_action": None,
            "holdout": False,
        }
    )


def _publish_scores(engine, month: dt.date, scores: pd.DataFrame) -> uuid.UUID:
    with engine.begin() as conn:
        _add_model(conn)
        run_id = _add_run(conn, month)
    with engine.begin() as conn:
        steps.stage_scores(conn, month, run_id, VERSION, scores)
        steps.swap_in_scores(conn, month)
    return run_id


def test_swap_replaces_month_partition(database):
    _publish_scores(database, MARCH, _scores(5, 0.2))
    _publish_scores(database, APRIL, _scores(4, 0.3))
    rerun = _publish_scores(database, MARCH, _scores(3, 0.7))

    with database.connect() as conn:
        march = conn.execute(
            sa.text("SELECT * FROM churn.scores WHERE month = :m ORDER BY client_id"), {"m": MARCH}
        ).all()
        partitions = conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_inherits AS h JOIN pg_class AS c ON c.oid = h.inhrelid"
                " WHERE h.inhparent = 'churn.scores'::regclass ORDER BY 1"
            )
        ).scalars()
        partitions = list(partitions)
    assert [row.client_id for row in march] == [1, 2, 3]
    assert {row.run_id for row in march} == {rerun}
    assert {row.model_version for row in march} == {VERSION}
    assert [row.reasons for row in march] == [["1-month contract"]] * 3
    assert partitions == ["scores_2026_03", "scores_2026_04"]
    assert _scalar(database, "SELECT count(*) FROM churn.scores WHERE month = :m", m=APRIL) == 4


def test_swap_analyzes_new_partition(database):
    _publish_scores(database, MARCH, _scores(5, 0.2))
    _publish_scores(database, MARCH, _scores(3, 0.7))

    # ANALYZE counts every row of a table this small.
    assert (
        _scalar(
            database, "SELECT reltuples FROM pg_class WHERE oid = 'churn.scores_2026_03'::regclass"
        )
        == 3
    )
    assert (
        _scalar(
            database,
            "SELECT count(*) FROM pg_stats WHERE schemaname = 'churn' "
            "AND tablename = 'scores_2026_03' AND attname = 'churn_probability'",
        )
        == 1
    )


def test_swap_indexes_and_no_defaults_left(database):
    _publish_scores(database, MARCH, _scores(3, 0.6))

    with database.connect() as conn:
        indexes = conn.execute(
            sa.text(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'scores_2026_03' ORDER BY 1"
            )
        ).scalars()
        indexes = list(indexes)
        defaults = conn.execute(
            sa.text(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'scores_2026_03' AND column_default IS NOT NULL"
            )
        ).scalars()
        defaults = list(defaults)
    assert indexes == [
        "scores_2026_03_high_tier_ranking",
        "scores_2026_03_month_tier",
        "scores_2026_03_pkey",
    ]
    assert sorted(defaults) == ["holdout", "reasons"]
    assert _scalar(database, "SELECT to_regclass('churn.scores_2026_03_next')") is None


def test_upgrade_merges_the_two_tier_indexes(database):
    """A database with the earlier (month, risk_tier) and (month, cluster_id, risk_tier)."""
    _publish_scores(database, MARCH, _scores(3, 0.6))
    with database.begin() as conn:
        conn.exec_driver_sql("DROP INDEX churn.scores_month_tier")
        conn.exec_driver_sql("CREATE INDEX scores_month_tier ON churn.scores (month, risk_tier)")
        conn.exec_driver_sql(
            "CREATE INDEX scores_month_cluster_tier ON churn.scores (month, cluster_id, risk_tier)"
        )

    db.upgrade(database)
    db.upgrade(database)

    with database.connect() as conn:
        definitions = dict(
            conn.execute(
                sa.text(
                    "SELECT indexname, indexdef FROM pg_indexes"
                    " WHERE tablename IN ('scores', 'scores_2026_03')"
                    " AND indexname NOT LIKE '%pkey' AND indexname NOT LIKE '%ranking'"
                )
            ).all()
        )
    # The parent's index and the March partition's, which PostgreSQL named.
    assert len(definitions) == 2
    assert "scores_month_tier" in definitions
    assert all(d.endswith("(month, risk_tier, cluster_id)") for d in definitions.values())


def test_swap_keeps_text_and_floats_exact(database):
    reasons = [
        ["1-month contract ends in 1 month", "spends 1,234 on extras"],
        [],
        ['says "hello"', "back\\slash", "{braces}", "semi;colon"],
        ["NULL", "", "trailing space "],
    ]
    actions = ['Call, then "offer" a\\discount', None, "", "NULL"]
    probabilities = [0.1 + 0.2, 1e-4, 0.9999, 1 / 3]
    scores = pd.DataFrame(
        {
            "client_id": [4, 1, 3, 2],
            "churn_probability": probabilities,
            "risk_tier": ["low", "low", "high", "medium"],
            "cluster_id": [0, 1, 2, 3],
            "reasons": reasons,
            "suggested_action": actions,
            "holdout": [False, False, True, False],
        }
    )

    _publish_scores(database, MARCH, scores)

    with database.connect() as conn:
        stored = conn.execute(
            sa.text(
                "SELECT client_id, churn_probability, risk_tier, reasons, suggested_action"
                " FROM churn.scores ORDER BY cluster_id"
            )
        ).all()
    assert [row.client_id for row in stored] == [4, 1, 3, 2]
    assert [row.churn_probability for row in stored] == probabilities
    assert [row.risk_tier for row in stored] == ["low", "low", "high", "medium"]
    assert [row.reasons for row in stored] == reasons
    assert [row.suggested_action for row in stored] == actions


@pytest.mark.parametrize("indexed_first", [False, True])
def test_swap_rejects_unknown_run(database, indexed_first):
    _publish_scores(database, MARCH, _scores(2, 0.2))

    with pytest.raises(sa.exc.IntegrityError, match="scores_run_id_fkey"):
        with database.begin() as conn:
            steps.stage_scores(conn, MARCH, uuid.uuid4(), VERSION, _scores(3, 0.9))
            if indexed_first:
                steps.index_scores(conn, MARCH)
            steps.swap_in_scores(conn, MARCH)

    assert _scalar(database, "SELECT count(*) FROM churn.scores WHERE month = :m", m=MARCH) == 2


def test_staging_takes_no_lock_on_scores(database):
    """Check that COPY into the new table leaves churn.scores unlocked until the swap.

    Two months published at once would deadlock if each held a lock on
    churn.scores from the start of its transaction.
    """
    _publish_scores(database, MARCH, _scores(2, 0.2))
    with database.begin() as conn:
        run_id = _add_run(conn, APRIL)
    with database.begin() as conn:
        steps.stage_scores(conn, APRIL, run_id, VERSION, _scores(3, 0.4))
        locked = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()"
                " AND relation IN ('churn.scores'::regclass, 'churn.scores_2026_03'::regclass)"
            )
        ).scalar()
        conn.rollback()
    assert locked == 0


def _partition_scans(conn, table: str) -> int:
    return conn.execute(
        sa.text(
            "SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_xact_user_tables"
            " WHERE relid = to_regclass(:table)"
        ),
        {"table": table},
    ).scalar_one()


def test_index_step_locks_nothing_readers_need(database):
    _publish_scores(database, MARCH, _scores(2, 0.2))
    with database.begin() as conn:
        run_id = _add_run(conn, MARCH)
    with database.begin() as conn:
        steps.stage_scores(conn, MARCH, run_id, VERSION, _scores(3, 0.4))
        steps.index_scores(conn, MARCH)
        locked = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND relation IN"
                " ('churn.scores'::regclass, 'churn.scores_2026_03'::regclass,"
                " 'churn.runs'::regclass, 'churn.model_versions'::regclass)"
            )
        ).scalar()
        scans = _partition_scans(conn, "churn.scores_2026_03_next")
        steps.swap_in_scores(conn, MARCH)
        # The swap reads the rows once a foreign key, not once an index again.
        scans_after_swap = _partition_scans(conn, "churn.scores_2026_03")
    assert locked == 0
    assert scans >= 3
    assert scans_after_swap == scans + 2
    assert _scalar(database, "SELECT count(*) FROM churn.scores WHERE month = :m", m=MARCH) == 3


@pytest.fixture
def plain_scores_database(admin_engine, server_url):
    """A database with every schema file but the one that partitions churn.scores."""
    url = _create_database(admin_engine, server_url)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn:
        for path in db.migration_files():
            if path.name != PARTITION_FILE:
                conn.execute(path.read_text(encoding="utf-8"))
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()
    _drop_database(admin_engine, url)


def test_upgrade_partitions_plain_scores(plain_scores_database):
    engine = plain_scores_database
    with engine.begin() as conn:
        _add_model(conn)
        runs = {month: _add_run(conn, month) for month in (MARCH, APRIL)}
        for month, run_id in runs.items():
            conn.execute(
                sa.text(
                    "INSERT INTO churn.scores (month, client_id, churn_probability, risk_tier,"
                    " cluster_id, model_version, run_id, reasons)"
                    " SELECT :month, g, 0.6, 'high', 1, :version, :run_id, '{visits fell}'"
                    " FROM generate_series(1, :n) AS g"
                ),
                {"month": month, "version": VERSION, "run_id": run_id, "n": month.month},
            )

    db.upgrade(engine)

    assert _scalar(engine, "SELECT relkind FROM pg_class WHERE oid = 'churn.scores'::regclass") == (
        "p"
    )
    assert _scalar(engine, "SELECT count(*) FROM churn.scores WHERE month = :m", m=MARCH) == 3
    assert _scalar(engine, "SELECT count(*) FROM churn.scores_2026_04") == 4
    assert _scalar(engine, "SELECT count(*) FROM churn.at_risk") == 7
    assert _scalar(engine, "SELECT to_regclass('churn.scores_unpartitioned')") is None
    assert _scalar(engine, "SELECT obj_description('churn.scores'::regclass)").startswith(
        "Probability that the client leaves"
    )
    assert _scalar(
        engine, "SELECT has_table_privilege('churn_bi', 'churn.scores_2026_03', 'SELECT')"
    )
    assert _scalar(engine, "SELECT has_table_privilege('churn_job', 'churn.scores', 'INSERT')")
    views_on_scores = _scalar(
        engine,
        "SELECT count(DISTINCT r.ev_class) FROM pg_depend AS d JOIN pg_rewrite AS r"
        " ON r.oid = d.objid WHERE d.refobjid = 'churn.scores'::regclass",
    )
    assert views_on_scores == 4
