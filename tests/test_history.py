"""Tests of the reads of earlier months: the SQL profiles and the training sample."""

import pandas as pd
import pytest
import sqlalchemy as sa

from gymchurn import history, steps
from gymchurn.batch_rules import check_batch, profile_months
from gymchurn.schema import parse_month
from gymchurn.settings import Settings
from gymchurn.simulation.simulator import ClientSimulator
from gymchurn.simulation.store import write_simulation

JAN, FEB, MAR = (parse_month(month) for month in ("2026-01", "2026-02", "2026-03"))
SEED = 42


def _simulate(engine) -> None:
    write_simulation(engine, ClientSimulator(300, seed=8), JAN, 3)


def _execute(engine, *statements: str, **params) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement), params)


def _stored_rows(engine, before) -> pd.DataFrame:
    """Every questionnaire before ``before`` with its outcome, read without COPY."""
    query = sa.text(
        "SELECT q.*, o.churned::int AS churned FROM crm.questionnaires AS q"
        " LEFT JOIN crm.churn_outcomes AS o USING (client_id, month)"
        " WHERE q.month < :before ORDER BY q.month, q.client_id"
    )
    with engine.connect() as conn:
        return pd.read_sql(query, conn, params={"before": before})


def _candidates(engine, n_rows: int, months=(JAN, FEB)) -> pd.DataFrame:
    with engine.connect() as conn:
        return history.read_training_candidates(conn, months, n_rows, SEED)


def _keys(candidates: pd.DataFrame) -> list:
    return list(zip(candidates["month"], candidates["client_id"], strict=True))


@pytest.fixture(scope="module")
def damaged(module_database):
    """Three months of 300 clients with odd cells in January and February.

    A contract of 100 months is outside the values the profile query records as bits,
    so its profile needs the second query.
    """
    _simulate(module_database)
    _execute(
        module_database,
        "UPDATE crm.questionnaires SET lifetime = NULL WHERE month = :m AND client_id % 10 = 0",
        "UPDATE crm.questionnaires SET contract_period = 100 WHERE month = :m"
        " AND client_id % 40 = 3",
        m=JAN,
    )
    _execute(
        module_database,
        "UPDATE crm.questionnaires SET contract_period = 3, gender = NULL"
        " WHERE month = :m AND client_id % 25 = 1",
        m=FEB,
    )
    return module_database


def test_month_profiles_sql_equal_frames(damaged):
    with damaged.connect() as conn:
        from_sql = history.read_month_profiles(conn, MAR)

    from_frames = profile_months(_stored_rows(damaged, MAR))

    assert [profile.month for profile in from_sql] == [JAN, FEB]
    assert 100.0 in from_sql[0].category_values["contract_period"]
    assert from_sql == from_frames


def test_month_profiles_sql_give_same_findings(damaged):
    month = _stored_rows(damaged, parse_month("2026-04"))
    month = month[month["month"] == MAR].copy()
    month.loc[month["client_id"] % 4 == 0, "lifetime"] = None
    month.loc[month["client_id"] % 50 == 7, "contract_period"] = 24
    with damaged.connect() as conn:
        from_sql = history.read_month_profiles(conn, MAR)

    findings = check_batch(month, from_sql)

    assert {finding.rule for finding in findings} == {
        "lifetime_null_share",
        "contract_period_new_values",
    }
    assert findings == check_batch(month, profile_months(_stored_rows(damaged, MAR)))


def test_training_candidates_are_first_in_key_order(damaged):
    every = _candidates(damaged, 10_000)

    first = _candidates(damaged, 100)

    labelled = _stored_rows(damaged, MAR)["churned"].notna().sum()
    assert len(every) == labelled
    assert every["sample_key"].is_monotonic_increasing
    assert _keys(first) == _keys(every)[:100]
    assert set(first["month"]) == {"2026-01-01", "2026-02-01"}


def test_training_candidates_of_chosen_months(damaged):
    candidates = _candidates(damaged, 100, months=[JAN])

    assert set(candidates["month"]) == {"2026-01-01"}
    assert len(candidates) == 100


def test_training_candidates_ignore_physical_order(database):
    _simulate(database)
    first = _candidates(database, 100)
    # Rewrite the table in reverse order, so that a scan meets the rows the other way round.
    _execute(
        database,
        "CREATE TABLE crm.reordered AS SELECT * FROM crm.questionnaires",
        "DELETE FROM crm.questionnaires",
        "INSERT INTO crm.questionnaires SELECT * FROM crm.reordered"
        " ORDER BY month DESC, client_id DESC",
        "DROP TABLE crm.reordered",
    )

    second = _candidates(database, 100)

    pd.testing.assert_frame_equal(first, second)


def test_check_replaces_quarantined_candidates(database):
    _simulate(database)
    settings = Settings(max_training_rows=100, max_invalid_share=0.5)
    order = [
        (parse_month(month), client_id) for month, client_id in _keys(_candidates(database, 300))
    ]
    for month, client_id in order[:4]:
        _execute(
            database,
            "UPDATE crm.questionnaires SET age = 500 WHERE month = :m AND client_id = :c",
            m=month,
            c=client_id,
        )
    month, client_id = order[4]
    _execute(
        database,
        "UPDATE crm.questionnaires SET age = NULL WHERE month = :m AND client_id = :c",
        "INSERT INTO crm.questionnaire_faults VALUES (:c, :m, 'age', 9, 'n/a', 'not_a_number')",
        m=month,
        c=client_id,
    )

    checked = steps.check(steps.extract(database, MAR, settings), settings)

    report = checked.training_report
    assert report.n_rows == history.candidate_rows(100, 0.5) == 200
    assert report.n_quarantined == 5
    assert {"age_in_range", "age_parseable"} <= {rule.rule for rule in report.failed_rules}
    kept = set(zip(checked.training["month"], checked.training["client_id"], strict=True))
    assert kept == set(order[5:105])


def test_check_blocked_month_keeps_sample_size(database):
    _simulate(database)
    _execute(
        database, "UPDATE crm.churn_outcomes SET churned = NOT churned WHERE month = :m", m=FEB
    )
    settings = Settings(max_training_rows=100)

    checked = steps.check(steps.extract(database, MAR, settings), settings)

    assert "churned_share" in {finding.rule for finding in checked.findings}
    assert set(checked.training["month"]) == {JAN}
    assert len(checked.training) == 100
    assert checked.training_report.n_rows == 200


def test_extract_chunk_size_keeps_frame(database):
    """Chunks of 7 rows, some with a null answer, give the frame one chunk gives."""
    _simulate(database)
    _execute(
        database,
        "UPDATE crm.questionnaires SET age = NULL, lifetime = 300"
        " WHERE month = :m AND client_id % 50 = 4",
        m=MAR,
    )
    with database.connect() as conn:
        n_rows, n_nulls = conn.execute(
            sa.text(
                "SELECT count(*), count(*) FILTER (WHERE age IS NULL)"
                " FROM crm.questionnaires WHERE month = :m"
            ),
            {"m": MAR},
        ).one()

    whole = steps.extract(database, MAR, Settings(read_chunk_rows=1_000_000)).scoring
    chunked = steps.extract(database, MAR, Settings(read_chunk_rows=7)).scoring

    pd.testing.assert_frame_equal(chunked, whole)
    assert n_nulls >= 3
    assert len(whole) == n_rows
    assert whole["row_number"].tolist() == list(range(1, n_rows + 1))
    assert whole["client_id"].is_monotonic_increasing
    assert whole["age"].isna().sum() == n_nulls
    # A null keeps age float64; 300 months of lifetime need int16, not int8.
    assert str(whole["age"].dtype) == "float64"
    assert str(whole["lifetime"].dtype) == "int16"
    assert str(whole["gender"].dtype) == "int8"
