"""Tests of ``gymchurn at-risk`` after one monthly run on the real questionnaires."""

import csv
import re
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
import sqlalchemy as sa

from gymchurn import holdout
from gymchurn.at_risk import COLUMNS
from gymchurn.loader import load_questionnaire_file, read_questionnaire_csv
from gymchurn.measures import load_measures
from gymchurn.schema import parse_month
from gymchurn.settings import get_settings
from tests.test_cli import _invoke

pytestmark = pytest.mark.usefixtures("prefect_harness")

MONTH = "2026-10"


def _run(month: str) -> dict:
    from flows.monthly_scoring import monthly_scoring

    return monthly_scoring(month=month)


def _frame(engine, query: str, **params) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.text(query), conn, params=params)


def _rows(frame: pd.DataFrame) -> list[tuple]:
    """Rows as tuples of plain values, with every missing value as None."""
    values = frame.astype(object).where(frame.notna(), None)
    return [tuple(row) for row in values.itertuples(index=False, name=None)]


def _view_rows(engine) -> pd.DataFrame:
    """The month's rows of churn.at_risk in the command's columns and order.

    The probability is rounded to 4 decimals, as the command writes it.
    """
    view = _frame(
        engine, "SELECT * FROM churn.at_risk WHERE month = :month ORDER BY rank", month="2026-10-01"
    )
    view["reasons"] = view["reasons"].map("; ".join).replace("", None)
    view["churn_probability"] = view["churn_probability"].round(4)
    return view[COLUMNS]


@pytest.fixture(scope="module")
def monthly_run(module_database, real_data, prefect_harness):
    """October's questionnaires and outcomes loaded and scored."""
    loaded = read_questionnaire_csv(real_data)
    load_questionnaire_file(module_database, loaded, parse_month(MONTH))
    return _run(MONTH)


@pytest.fixture(scope="module")
def default_export(monthly_run) -> tuple[object, Path]:
    result = _invoke("at-risk", "--month", MONTH)
    return result, get_settings().output_dir / f"at_risk_{MONTH}.csv"


def test_default_export_equals_view(module_database, default_export):
    result, path = default_export
    exported = pd.read_csv(path)
    view = _view_rows(module_database)

    assert result.exit_code == 0, result.output
    assert exported.columns.to_list() == COLUMNS
    assert len(view) > 0
    assert _rows(exported) == _rows(view)


def test_csv_probabilities_have_4_decimals(module_database, default_export):
    _, path = default_export
    with path.open(newline="") as stream:
        texts = [row["churn_probability"] for row in csv.DictReader(stream)]
    stored = _frame(
        module_database,
        "SELECT client_id, churn_probability FROM churn.at_risk WHERE month = :month ORDER BY rank",
        month="2026-10-01",
    )
    full = stored["churn_probability"]

    assert len(texts) == len(stored)
    assert [text for text in texts if not re.fullmatch(r"0\.\d{1,4}", text)] == []
    assert [float(text) for text in texts] == full.round(4).to_list()
    # The database keeps the full precision.
    assert (full != full.round(4)).any()


def test_csv_ranked_by_full_probability(module_database, default_export):
    _, path = default_export
    exported = pd.read_csv(path)
    stored = _frame(
        module_database,
        "SELECT client_id FROM churn.scores WHERE month = :month AND risk_tier = 'high'"
        " AND NOT holdout ORDER BY churn_probability DESC, client_id",
        month="2026-10-01",
    )

    assert exported["client_id"].to_list() == stored["client_id"].to_list()
    assert exported["rank"].to_list() == list(range(1, len(stored) + 1))
    assert exported["churn_probability"].is_monotonic_decreasing


def test_default_export_summary_line(default_export):
    result, path = default_export
    n_rows = len(pd.read_csv(path))

    assert result.stdout.splitlines() == [
        f"{MONTH}: {n_rows} rows (tier high) written to {path.resolve()}"
    ]
    # Not a terminal, so no spinner.
    assert result.stderr == ""


def test_monthly_job_export_equals_command_file(monthly_run, default_export, tmp_path):
    _, path = default_export
    job_file = Path(monthly_run["at_risk_path"])

    assert job_file.resolve() == path.resolve()
    copy = tmp_path / "command.csv"
    result = _invoke("at-risk", "--month", MONTH, "--output", str(copy))
    assert result.exit_code == 0, result.output
    assert copy.read_bytes() == job_file.read_bytes()


def _medium_cluster(engine) -> int:
    """The segment with the most medium-tier clients at 0.3 or above."""
    counts = _frame(
        engine,
        "SELECT cluster_id, count(*) AS n FROM churn.scores WHERE month = '2026-10-01'"
        " AND risk_tier = 'medium' AND churn_probability >= 0.3"
        " GROUP BY cluster_id ORDER BY n DESC, cluster_id LIMIT 1",
    )
    return int(counts["cluster_id"].iloc[0])


def test_filtered_export_keeps_matching_rows(module_database, monthly_run):
    cluster = _medium_cluster(module_database)
    expected = _frame(
        module_database,
        "SELECT client_id FROM churn.scores WHERE month = '2026-10-01' AND risk_tier = 'medium'"
        " AND cluster_id = :cluster AND churn_probability >= 0.3 AND NOT holdout"
        " ORDER BY churn_probability DESC, client_id LIMIT 50",
        cluster=cluster,
    )

    result = _invoke(
        "at-risk",
        "--month",
        MONTH,
        "--tier",
        "medium",
        "--cluster",
        str(cluster),
        "--min-probability",
        "0.3",
        "--limit",
        "50",
    )

    assert result.exit_code == 0, result.output
    path = get_settings().output_dir / f"at_risk_{MONTH}_medium_cluster{cluster}_min0.3_top50.csv"
    exported = pd.read_csv(path)
    assert 0 < len(exported) <= 50
    assert (exported["risk_tier"] == "medium").all()
    assert (exported["cluster_id"] == cluster).all()
    assert exported["churn_probability"].ge(0.3).all()
    # Ranked by the full probability, so clients with the same rounded value
    # need not be in client_id order.
    assert exported["churn_probability"].is_monotonic_decreasing
    assert exported["client_id"].to_list() == expected["client_id"].to_list()
    assert str(path.resolve()) in result.stdout


def test_limit_keeps_top_of_view(module_database, default_export):
    result = _invoke("at-risk", "--month", MONTH, "--limit", "5")
    path = get_settings().output_dir / f"at_risk_{MONTH}_high_top5.csv"
    exported = pd.read_csv(path)

    assert result.exit_code == 0, result.output
    assert _rows(exported) == _rows(_view_rows(module_database).head(5))
    assert exported["rank"].to_list() == [1, 2, 3, 4, 5]
    # The month's full list stays as it was.
    assert len(pd.read_csv(default_export[1])) > 5


def test_xlsx_has_rows_of_csv(default_export):
    result = _invoke("at-risk", "--month", MONTH, "--format", "xlsx")
    path = get_settings().output_dir / f"at_risk_{MONTH}.xlsx"
    sheet = openpyxl.load_workbook(path, read_only=True).active
    header, *rows = list(sheet.iter_rows(values_only=True))
    expected = _rows(pd.read_csv(default_export[1]))

    assert result.exit_code == 0, result.output
    assert list(header) == COLUMNS
    assert rows == expected


def test_filters_leaving_no_rows_exit_0(monthly_run):
    result = _invoke("at-risk", "--month", MONTH, "--min-probability", "1")
    path = get_settings().output_dir / f"at_risk_{MONTH}_high_min1.csv"

    assert result.exit_code == 0, result.output
    assert "no clients match the filters" in result.stderr
    assert f"{MONTH}: 0 rows" in result.stdout
    assert pd.read_csv(path).columns.to_list() == COLUMNS
    assert len(pd.read_csv(path)) == 0


def test_output_folder_gets_default_name(monthly_run, scores, tmp_path):
    result = _invoke("at-risk", "--month", MONTH, "--output", str(tmp_path))
    # About a quarter of the real month is in the high tier, and the holdout takes some.
    high = scores.risk_tier == "high"
    n_held_out = int(scores.holdout[high].sum())

    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"at_risk_{MONTH}.csv"]
    assert 900 < high.sum() < 1100
    assert n_held_out > 0
    assert len(pd.read_csv(tmp_path / f"at_risk_{MONTH}.csv")) == high.sum() - n_held_out


def test_output_missing_folder_created(monthly_run, tmp_path):
    folder = tmp_path / "lists" / "sub"

    result = _invoke("at-risk", "--month", MONTH, "--output", f"{folder}/")

    assert result.exit_code == 0, result.output
    assert folder.is_dir()
    assert sorted(path.name for path in folder.iterdir()) == [f"at_risk_{MONTH}.csv"]
    assert pd.read_csv(folder / f"at_risk_{MONTH}.csv").columns.to_list() == COLUMNS


def test_output_folder_over_file_exits_1(monthly_run, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("a file where a folder is expected")

    result = _invoke("at-risk", "--month", MONTH, "--output", f"{taken}/")

    assert result.exit_code == 1
    assert f"cannot write {taken / f'at_risk_{MONTH}.csv'}" in result.stderr
    assert taken.read_text() == "a file where a folder is expected"


def test_unwritable_output_exits_1_without_leftovers(monthly_run, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder is expected")

    result = _invoke("at-risk", "--month", MONTH, "--output", str(blocked / "list.csv"))

    assert result.exit_code == 1
    assert f"cannot write {blocked / 'list.csv'}" in result.stderr
    # The file the system refused, when it is not the list itself.
    assert f"({blocked})" in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == ["blocked"]


def test_high_tier_clients_get_actions(module_database, monthly_run):
    clients = _frame(
        module_database,
        "SELECT s.suggested_action, s.risk_tier, q.* FROM churn.scores AS s"
        " JOIN crm.questionnaires AS q USING (month, client_id) WHERE s.month = '2026-10-01'",
    )
    rules = {measure.title: measure for measure in load_measures().measures}
    high = clients[clients["risk_tier"] == "high"]
    share = high["suggested_action"].notna().mean()

    # Measured on the real file: every high-tier client gets an action.
    assert share >= 0.95
    assert clients.loc[clients["risk_tier"] == "low", "suggested_action"].isna().all()
    for title, chosen in clients.dropna(subset=["suggested_action"]).groupby("suggested_action"):
        assert title in rules
        assert rules[title].targets(chosen).all()


def test_has_phone_matches_questionnaires(module_database, default_export):
    exported = pd.read_csv(default_export[1])
    phones = _frame(
        module_database,
        "SELECT client_id, phone FROM crm.questionnaires WHERE month = '2026-10-01'",
    )
    merged = exported.merge(phones, on="client_id", validate="one_to_one")

    assert len(merged) == len(exported)
    assert merged["has_phone"].to_list() == (merged["phone"] == 1).to_list()
    assert merged["has_phone"].nunique() == 2


def test_month_without_scores_exits_3(monthly_run):
    result = _invoke("at-risk", "--month", "2026-09")

    assert result.exit_code == 3
    assert "no published scores for 2026-09 in postgresql" in result.stderr
    assert "gymchurn run --month 2026-09" in result.stderr
    assert "set DATABASE_URL" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--month", "2026-13"], "2026-13"),
        (["--month", MONTH, "--tier", "urgent"], "invalid --tier 'urgent'"),
        (["--month", MONTH, "--min-probability", "1.5"], "invalid --min-probability 1.5"),
        (["--month", MONTH, "--min-probability", "-0.1"], "invalid --min-probability -0.1"),
        (["--month", MONTH, "--limit", "-1"], "invalid --limit -1"),
        (["--month", MONTH, "--limit", "0"], "invalid --limit 0: expected 1 or more rows"),
        (["--month", MONTH, "--format", "pdf"], "invalid --format 'pdf'"),
        (["--month", MONTH, "--cluster", "-2"], "invalid --cluster -2"),
        (["--month", MONTH, "--format", "csv", "--output", "list.xlsx"], "does not match"),
    ],
)
def test_bad_argument_exits_2(monthly_run, arguments, message):
    before = sorted(get_settings().output_dir.iterdir())

    result = _invoke("at-risk", *arguments)

    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""
    assert sorted(get_settings().output_dir.iterdir()) == before


def test_rerun_gives_same_actions(module_database, monthly_run):
    query = (
        "SELECT client_id, suggested_action FROM churn.scores"
        " WHERE month = '2026-10-01' ORDER BY client_id"
    )
    before = _frame(module_database, query)

    _run(MONTH)

    after = _frame(module_database, query)
    assert before["suggested_action"].notna().sum() > 0
    assert _rows(after) == _rows(before)


def test_rows_equal_view_after_rerun(module_database, monthly_run):
    result = _invoke("at-risk", "--month", MONTH)
    exported = pd.read_csv(get_settings().output_dir / f"at_risk_{MONTH}.csv")

    assert result.exit_code == 0, result.output
    assert _rows(exported) == _rows(_view_rows(module_database))


@pytest.fixture(scope="module")
def scores(module_database, monthly_run) -> pd.DataFrame:
    return _frame(
        module_database,
        "SELECT client_id, risk_tier, cluster_id, holdout FROM churn.scores WHERE month = :month",
        month="2026-10-01",
    )


def test_real_month_holds_out_a_tenth_of_each_stratum(scores):
    listed = scores[scores.risk_tier.isin(["high", "medium"])]
    strata = listed.groupby(["risk_tier", "cluster_id"])["holdout"].agg(["size", "sum"])

    assert len(scores) == 4000
    assert len(strata) >= 5
    for (tier, cluster), row in strata.iterrows():
        share_of_size = 0.1 * row["size"]
        assert np.floor(share_of_size) <= row["sum"] <= np.ceil(share_of_size), (tier, cluster)
    assert not scores.loc[scores.risk_tier == "low", "holdout"].any()
    assert 0.08 * len(listed) < strata["sum"].sum() < 0.12 * len(listed)


def test_real_month_holdout_matches_recomputed_choice(scores):
    shuffled = scores.sample(frac=1, random_state=7)
    flags = holdout.select_holdout(shuffled, parse_month(MONTH), 0.1, get_settings().random_seed)

    assert set(shuffled.client_id[flags]) == set(scores.client_id[scores.holdout])


def test_run_result_counts_held_out(monthly_run, scores):
    assert monthly_run["held_out"] == int(scores.holdout.sum())


def test_view_and_export_leave_out_holdout(module_database, monthly_run, scores):
    view = _frame(
        module_database,
        "SELECT client_id, rank FROM churn.at_risk WHERE month = :month",
        month="2026-10-01",
    )
    exported = pd.read_csv(monthly_run["at_risk_path"])
    high = scores[scores.risk_tier == "high"]
    held_out = set(scores.client_id[scores.holdout])

    assert len(view) == int((~high.holdout).sum())
    assert not held_out & set(view.client_id)
    assert sorted(view["rank"]) == list(range(1, len(view) + 1))
    assert set(exported.client_id) == set(view.client_id)


def test_at_risk_command_medium_leaves_out_holdout(monthly_run, scores, tmp_path):
    output = tmp_path / "medium.csv"
    result = _invoke("at-risk", "--month", MONTH, "--tier", "medium", "--output", str(output))
    listed = pd.read_csv(output)
    medium = scores[scores.risk_tier == "medium"]

    assert result.exit_code == 0, result.output
    assert set(listed.client_id) == set(medium.client_id[~medium.holdout])


def test_latest_scores_shows_holdout(module_database, monthly_run, scores):
    latest = _frame(module_database, "SELECT count(*) AS n FROM churn.latest_scores WHERE holdout")
    assert latest.n.iloc[0] == int(scores.holdout.sum())
