"""Every command rejects a month, tier, number, version or path crafted as SQL.

Each case must exit with code 2 (a bad argument) and leave every table of the
``crm`` and ``churn`` schemas exactly as it was.
"""

import pytest
import sqlalchemy as sa
from psycopg import sql

from gymchurn.loader import load_questionnaire_file, read_questionnaire_csv
from gymchurn.schema import parse_month
from gymchurn.settings import get_settings
from tests.conftest import CASES
from tests.test_cli import _invoke

CRAFTED = "2026-11'; drop table churn.scores; --"
REFERENCE = str(CASES / "00_clean_reference.csv")

CASES_REJECTED = [
    ("run", "--month", CRAFTED),
    ("load-csv", REFERENCE, "--month", CRAFTED),
    ("load-csv", CRAFTED, "--month", "2026-10"),
    ("simulate", "--start", CRAFTED, "--months", "2"),
    ("simulate", "--scenario", "price_rise", "--scenario-start", CRAFTED),
    ("simulate", "--clients", "1; drop table crm.questionnaires"),
    ("simulate", "--scenario", CRAFTED),
    ("simulate", "--from-csv", CRAFTED),
    ("validate", "--month", CRAFTED),
    ("validate", CRAFTED),
    ("at-risk", "--month", CRAFTED),
    ("at-risk", "--month", "2026-10", "--tier", "high' OR '1'='1"),
    ("at-risk", "--month", "2026-10", "--cluster", "1 OR 1=1"),
    ("at-risk", "--month", "2026-10", "--limit", "5; delete from churn.runs"),
    ("at-risk", "--month", "2026-10", "--min-probability", "0 OR 1=1"),
    ("at-risk", "--month", "2026-10", "--format", "csv'; --"),
    ("models", "show", "v1'; drop table churn.model_versions; --"),
    ("models", "promote", "v1' OR '1'='1"),
    ("models", "evaluate", "--csv", CRAFTED),
    ("check-report", CRAFTED),
    ("demo", "--start", CRAFTED, "--months", "1", "--clients", "10"),
]


def _tables_digest(engine) -> dict:
    """Row count and md5 of every table of the crm and churn schemas."""
    with engine.connect() as conn:
        tables = conn.execute(
            sa.text(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema IN ('crm', 'churn') AND table_type = 'BASE TABLE'"
            )
        ).all()
        raw = conn.connection.driver_connection
        digest = {}
        for schema, name in tables:
            query = sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "
                "FROM {} AS t"
            ).format(sql.Identifier(schema, name))
            digest[f"{schema}.{name}"] = raw.execute(query).fetchone()
    return digest


@pytest.fixture
def loaded_database(database):
    load_questionnaire_file(
        database, read_questionnaire_csv(CASES / "00_clean_reference.csv"), parse_month("2026-10")
    )
    return database


@pytest.mark.parametrize("args", CASES_REJECTED, ids=lambda args: " ".join(args[:2]))
def test_crafted_argument_rejected(loaded_database, args):
    before = _tables_digest(loaded_database)

    result = _invoke(*args)

    assert result.exit_code == 2, result.output
    assert _tables_digest(loaded_database) == before


def test_models_show_plain_unknown_version_not_found(loaded_database):
    # A well-formed name is looked up, not rejected.
    result = _invoke("models", "show", "v000000-missing")

    assert result.exit_code == 1
    assert "model version v000000-missing not found" in result.output


@pytest.mark.parametrize("content", [None, "[[measure]]\ntitle = 'no rule'\n"])
def test_run_refuses_bad_measures_file_before_starting(
    loaded_database, tmp_path, monkeypatch, content
):
    path = tmp_path / "measures.toml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    before = _tables_digest(loaded_database)
    monkeypatch.setenv("GYMCHURN_MEASURES_FILE", str(path))
    get_settings.cache_clear()

    result = _invoke("run", "--month", "2026-10")

    assert result.exit_code == 2, result.output
    assert f"invalid setting GYMCHURN_MEASURES_FILE: {path}" in result.output
    # No run was started, so churn.runs has no row for it.
    assert _tables_digest(loaded_database) == before


@pytest.mark.parametrize("variable", ["GYMCHURN_HOME", "GYMCHURN_MODEL_DIR", "GYMCHURN_OUTPUT_DIR"])
def test_run_refuses_a_file_as_folder_before_starting(
    loaded_database, tmp_path, monkeypatch, variable
):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder\n", encoding="utf-8")
    before = _tables_digest(loaded_database)
    monkeypatch.setenv(variable, str(a_file / "inside"))
    get_settings.cache_clear()

    result = _invoke("run", "--month", "2026-10")

    assert result.exit_code == 2, result.output
    assert f"{variable}='{a_file / 'inside'}'" in result.output
    assert f"{a_file} is a file, not a folder" in result.output
    assert _tables_digest(loaded_database) == before
