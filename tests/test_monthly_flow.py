"""The monthly flow end to end on the real questionnaires, in a real database."""

import html
import logging
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from gymchurn import model
from gymchurn.loader import load_questionnaire_file, read_questionnaire_csv
from gymchurn.schema import CHURNED, FEATURES, parse_month
from gymchurn.settings import get_settings
from tests.conftest import LogMessages

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _load(engine, path, month: str) -> None:
    load_questionnaire_file(engine, read_questionnaire_csv(path), parse_month(month))


def _run(month: str) -> dict:
    from flows.monthly_scoring import monthly_scoring

    return monthly_scoring(month=month)


def _frame(engine, query: str, **params) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.text(query), conn, params=params)


@pytest.fixture(scope="module")
def features_only(real_data, tmp_path_factory):
    """The real file without its Churn column: next month's questionnaires."""
    path = tmp_path_factory.mktemp("csv") / "november.csv"
    pd.read_csv(real_data).drop(columns="Churn").to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def forward_run(module_database, real_data, features_only, prefect_harness):
    """October loaded with outcomes, November without; November scored."""
    _load(module_database, real_data, "2026-10")
    _load(module_database, features_only, "2026-11")
    return _run("2026-11")


def test_forward_run_scores_every_client(module_database, forward_run):
    scores = _frame(module_database, "SELECT * FROM churn.scores WHERE month = '2026-11-01'")
    assert len(scores) == 4000
    assert scores["client_id"].nunique() == 4000
    assert forward_run["rows_read"] == 4000
    assert forward_run["rows_scored"] == 4000
    assert forward_run["rows_quarantined"] == 0
    assert forward_run["mode"] == "forward"


def test_forward_run_probabilities_inside_unit_interval(module_database, forward_run):
    scores = _frame(
        module_database, "SELECT churn_probability FROM churn.scores WHERE month = '2026-11-01'"
    )
    assert scores["churn_probability"].gt(0).all()
    assert scores["churn_probability"].lt(1).all()
    # About a quarter of the real clients left, so the mean score is near 0.25.
    assert 0.18 < scores["churn_probability"].mean() < 0.35


def test_forward_run_writes_five_clusters(module_database, forward_run):
    clusters = _frame(module_database, "SELECT * FROM churn.clusters WHERE month = '2026-11-01'")
    assert sorted(clusters["cluster_id"]) == [0, 1, 2, 3, 4]
    assert clusters["size"].sum() == 4000
    # Segment ids are ordered by the churn rate of their labelled clients.
    ordered = clusters.sort_values("cluster_id")["churn_rate"].to_list()
    assert ordered == sorted(ordered)


def test_forward_run_records_model_version(module_database, forward_run):
    versions = _frame(module_database, "SELECT * FROM churn.model_versions")
    assert versions["version"].to_list() == [forward_run["model_version"]]
    row = versions.iloc[0]
    assert row["algorithm"] in {"logistic_regression", "random_forest", "hist_gradient_boosting"}
    assert row["training_rows"] == 4000
    assert row["metrics"]["roc_auc"] > 0.95
    assert set(row["metrics"]["cross_validation"]) == {
        "logistic_regression",
        "random_forest",
        "hist_gradient_boosting",
    }
    assert model.file_sha256(Path(row["artifact_path"])) == row["artifact_sha256"]


def test_forward_run_at_risk_file_matches_view(module_database, forward_run):
    view = _frame(
        module_database,
        "SELECT client_id, churn_probability FROM churn.at_risk"
        " WHERE month = '2026-11-01' ORDER BY rank",
    )
    high = _frame(
        module_database,
        "SELECT count(*) AS n FROM churn.scores WHERE month = '2026-11-01' AND risk_tier = 'high'"
        " AND NOT holdout",
    )
    exported = pd.read_csv(forward_run["at_risk_path"])
    assert len(view) == high["n"].iloc[0]
    assert len(view) > 0
    assert exported["client_id"].to_list() == view["client_id"].to_list()
    assert exported["churn_probability"].is_monotonic_decreasing
    assert (exported["risk_tier"] == "high").all()
    assert exported["reasons"].notna().mean() > 0.95
    assert exported["reasons"].dropna().str.split("; ").map(len).max() <= 3


def test_forward_run_finishes_after_its_at_risk_list(module_database, forward_run):
    run = _frame(
        module_database,
        "SELECT started_at, finished_at, at_risk_path FROM churn.runs"
        " WHERE month = '2026-11-01' AND status = 'succeeded'",
    ).iloc[0]
    written = pd.Timestamp(Path(run["at_risk_path"]).stat().st_mtime, unit="s", tz="UTC")

    assert run["finished_at"] >= written
    assert run["finished_at"] - written < pd.Timedelta(seconds=5)
    assert run["started_at"] < written


def test_forward_run_describes_segments_drivers_and_measures(module_database, forward_run):
    clusters = _frame(module_database, "SELECT * FROM churn.clusters WHERE month = '2026-11-01'")
    influence = _frame(
        module_database,
        "SELECT * FROM churn.feature_influence WHERE month = '2026-11-01' ORDER BY rank",
    )
    rates = _frame(
        module_database, "SELECT * FROM churn.feature_churn_rates WHERE month = '2026-11-01'"
    )
    measures = _frame(
        module_database,
        "SELECT * FROM churn.recommendations WHERE month = '2026-11-01' ORDER BY position",
    )
    findings = _frame(module_database, "SELECT * FROM churn.findings WHERE month = '2026-11-01'")

    assert clusters["name"].notna().all()
    assert clusters["name"].is_unique
    assert clusters["expected_churners"].sum() == pytest.approx(
        _frame(
            module_database,
            "SELECT sum(churn_probability) AS s FROM churn.scores WHERE month = '2026-11-01'",
        )["s"].iloc[0]
    )
    assert set(clusters["differences"].iloc[0]) == set(FEATURES)
    assert influence["rank"].to_list() == list(range(1, 14))
    top = set(influence["feature"].head(5))
    assert {"lifetime", "avg_class_frequency_current_month"} <= top
    assert top & {"contract_period", "month_to_end_contract"}
    # The churn rates describe October, the labelled month November's model learned from.
    assert (rates.groupby("feature")["clients"].sum() == 4000).all()
    assert len(rates["feature"].unique()) == 13
    most = clusters.loc[clusters["expected_churners"].idxmax()]
    assert measures["cluster_id"].iloc[0] == most["cluster_id"]
    assert measures["group_name"].iloc[0] == most["name"]
    assert (measures["clients"] > 0).all()
    assert sorted(findings["kind"].unique()) == ["conclusion", "pattern"]
    assert (findings["kind"] == "conclusion").sum() >= 4


def test_forward_run_writes_the_monthly_report(module_database, forward_run):
    run = _frame(
        module_database,
        "SELECT report_path FROM churn.runs WHERE month = '2026-11-01' AND status = 'succeeded'",
    )
    path = Path(run["report_path"].iloc[0])
    names = _frame(module_database, "SELECT name FROM churn.clusters WHERE month = '2026-11-01'")
    text = path.read_text(encoding="utf-8")

    assert path == Path(forward_run["report_path"])
    assert path.name == "report_2026-11.html"
    assert all(html.escape(name) in text for name in names["name"])
    assert "data:image/png;base64," in text
    # The staged copy is gone once the month is published.
    assert [p.name for p in path.parent.iterdir()] == ["report_2026-11.html"]


def test_rerun_same_month_gives_same_rows(module_database, forward_run):
    columns = "client_id, churn_probability, risk_tier, cluster_id, model_version, reasons, holdout"
    query = f"SELECT {columns} FROM churn.scores WHERE month = '2026-11-01' ORDER BY client_id"
    before = _frame(module_database, query)
    clusters_query = "SELECT * FROM churn.clusters WHERE month = '2026-11-01' ORDER BY cluster_id"
    clusters_before = _frame(module_database, clusters_query).drop(columns="run_id")
    keys = {
        "feature_influence": "feature",
        "feature_churn_rates": "feature, bin_order",
        "recommendations": "position",
        "findings": "kind, position",
    }
    tables_before = {
        table: _frame(
            module_database,
            f"SELECT * FROM churn.{table} WHERE month = '2026-11-01' ORDER BY {key}",
        ).drop(columns="run_id")
        for table, key in keys.items()
    }

    rerun = _run("2026-11")

    pd.testing.assert_frame_equal(_frame(module_database, query), before)
    pd.testing.assert_frame_equal(
        _frame(module_database, clusters_query).drop(columns="run_id"), clusters_before
    )
    for table, key in keys.items():
        query = f"SELECT * FROM churn.{table} WHERE month = '2026-11-01' ORDER BY {key}"
        pd.testing.assert_frame_equal(
            _frame(module_database, query).drop(columns="run_id"), tables_before[table]
        )
    runs = _frame(
        module_database, "SELECT run_id, status FROM churn.runs WHERE month = '2026-11-01'"
    )
    assert sorted(runs["status"]) == ["succeeded", "superseded"]
    published = runs.loc[runs["status"] == "succeeded", "run_id"].astype(str).to_list()
    assert published == [rerun["run_id"]]
    assert rerun["model_version"] == forward_run["model_version"]


def test_backtest_realised_roc_auc(module_database, forward_run):
    backtest = _run("2026-10")
    assert backtest["mode"] == "backtest"
    assert backtest["rows_scored"] == 4000
    assert backtest["realised_roc_auc"] >= 0.985
    runs = _frame(
        module_database, "SELECT realised_roc_auc FROM churn.runs WHERE month = '2026-10-01'"
    )
    assert runs["realised_roc_auc"].iloc[0] == pytest.approx(backtest["realised_roc_auc"])


def test_backtest_scores_are_out_of_fold(module_database, forward_run, real_data):
    """Check that no backtest score comes from a model fitted on that client's label."""
    _run("2026-10")
    scores = _frame(
        module_database,
        "SELECT client_id, churn_probability FROM churn.scores"
        " WHERE month = '2026-10-01' ORDER BY client_id",
    )
    version = _frame(module_database, "SELECT * FROM churn.model_versions").iloc[0]
    training = read_questionnaire_csv(real_data)
    frame = training.questionnaires.merge(training.outcomes, on="client_id")
    labels = frame[CHURNED].astype(int).to_numpy()
    pipeline = model.candidate_models(seed=42)[version["algorithm"]]
    _, out_of_fold = model.cross_validate(
        pipeline,
        model.feature_matrix(frame),
        labels,
        folds=get_settings().cv_folds,
        seed=42,
        threshold=0.5,
    )
    assert scores["churn_probability"].to_numpy() == pytest.approx(out_of_fold)
    in_sample = model.predict(pipeline.fit(model.feature_matrix(frame), labels), frame)
    assert abs(scores["churn_probability"].to_numpy() - in_sample).max() > 0.05


def test_run_quarantines_out_of_range_age(database, real_data, tmp_path):
    damaged = pd.read_csv(real_data)
    damaged.loc[41, "Age"] = -3
    path = tmp_path / "damaged.csv"
    damaged.to_csv(path, index=False)
    _load(database, path, "2026-10")

    result = _run("2026-10")

    quarantine = _frame(database, "SELECT * FROM churn.quarantine")
    assert quarantine["client_id"].to_list() == [42]
    assert quarantine["row_data"].iloc[0]["age"] == -3
    assert any("age" in rule for rule in quarantine["failed_rules"].iloc[0])
    assert result["rows_scored"] == 3999
    assert result["rows_quarantined"] == 1
    scored = _frame(database, "SELECT client_id FROM churn.scores")
    assert len(scored) == 3999
    assert 42 not in set(scored["client_id"])


@pytest.fixture
def package_logs():
    """Messages the package logs during a test (Prefect keeps them from caplog)."""

    handler = LogMessages(logging.INFO)
    logging.getLogger("gymchurn").addHandler(handler)
    yield handler.messages
    logging.getLogger("gymchurn").removeHandler(handler)


def test_run_without_questionnaires_fails_and_keeps_scores(
    database, real_data, package_logs, monkeypatch
):
    from gymchurn import steps

    _load(database, real_data, "2026-10")
    _run("2026-10")
    checks, earlier_reads = [], []
    execute = steps.db.execute

    def counting_execute(conn, name, params=None):
        if name == "month_has_questionnaires":
            checks.append(params["month"])
        return execute(conn, name, params)

    monkeypatch.setattr(steps.db, "execute", counting_execute)
    monkeypatch.setattr(steps, "_read_earlier", lambda *args: earlier_reads.append(args))

    with pytest.raises(
        steps.NoDataError, match="no questionnaires for 2026-12 in crm.questionnaires of postgres"
    ):
        _run("2026-12")

    # Missing data is not retried: a second read would find nothing either.
    # The earlier months are not read for a month that has nothing to score.
    assert [str(month) for month in checks] == ["2026-12-01"]
    assert earlier_reads == []
    assert not [m for m in package_logs if m.startswith("extract: 0 questionnaires")]

    runs = _frame(
        database,
        "SELECT month, status, message, retrain_policy FROM churn.runs ORDER BY started_at",
    )
    assert runs["status"].to_list() == ["succeeded", "failed"]
    assert "gymchurn load-csv" in runs["message"].iloc[1]
    # The failed run records the policy it ran with, like the one that succeeded.
    assert runs["retrain_policy"].to_list() == ["auto", "auto"]
    assert _frame(database, "SELECT count(*) AS n FROM churn.scores")["n"].iloc[0] == 4000


def test_forward_run_records_validation(module_database, forward_run):
    run = _frame(
        module_database,
        "SELECT data_docs_path FROM churn.runs WHERE status = 'succeeded' AND month = '2026-11-01'",
    ).iloc[0]
    assert Path(run["data_docs_path"]).is_file()
    results = _frame(
        module_database,
        "SELECT dataset, kind, rule, n_failed FROM churn.validation_results"
        " WHERE month = '2026-11-01'",
    )
    assert {"questionnaires of 2026-11", "labelled questionnaires before 2026-11"} <= set(
        results["dataset"]
    )
    assert "age_in_range" in set(results["rule"])
    assert (results.loc[results["kind"] == "row", "n_failed"] == 0).all()


def test_report_failure_publishes_nothing(database, real_data, monkeypatch):
    from flows.monthly_scoring import monthly_scoring
    from gymchurn import report

    _load(database, real_data, "2026-10")
    first = _run("2026-10")
    query = "SELECT client_id, churn_probability, run_id FROM churn.scores ORDER BY client_id"
    before = _frame(database, query)
    published = Path(first["report_path"])
    folder = published.parent
    real_writer = report.write_report

    def broken(insights, path, **arguments):
        # A failure after the staged file was written.
        path.write_text("partial", encoding="utf-8")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_report", broken)
    with pytest.raises(OSError, match="No space left"):
        monthly_scoring(month="2026-10", retrain="never")
    monkeypatch.setattr(report, "write_report", real_writer)
    assert [p.name for p in folder.iterdir()] == ["report_2026-10.html"]

    # The reports folder replaced by a file: the report cannot be staged.
    folder.rename(folder.with_name("kept"))
    folder.write_text("", encoding="utf-8")
    with pytest.raises(OSError):
        monthly_scoring(month="2026-10", retrain="never")
    folder.unlink()
    folder.with_name("kept").rename(folder)

    # A folder where the report goes: found before the month is published.
    published.unlink()
    published.mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        monthly_scoring(month="2026-10", retrain="never")

    runs = _frame(database, "SELECT status, message FROM churn.runs ORDER BY started_at")
    assert runs["status"].to_list() == ["succeeded", "failed", "failed", "failed"]
    assert "No space left" in runs["message"].iloc[1]
    assert "is a folder" in runs["message"].iloc[3]
    # The staged report is deleted, so the message names no staged file.
    assert "staged" not in runs["message"].iloc[3]
    pd.testing.assert_frame_equal(_frame(database, query), before)
    assert [p.name for p in folder.iterdir()] == ["report_2026-10.html"]

    # A folder where the at-risk list goes: found only after the publish,
    # so the run stays published and its message records the failure.
    published.rmdir()
    at_risk = Path(first["at_risk_path"])
    at_risk.unlink()
    at_risk.mkdir()
    with pytest.raises(IsADirectoryError):
        monthly_scoring(month="2026-10", retrain="never")
    last = _frame(
        database,
        "SELECT status, message, at_risk_path FROM churn.runs ORDER BY started_at DESC LIMIT 1",
    ).iloc[0]
    assert last["status"] == "succeeded"
    assert last["at_risk_path"] is None
    assert "Then failed (IsADirectoryError" in last["message"]
    assert last["message"].endswith("may be missing; run the month again.")


def test_top_at_risk_skips_held_out():
    from types import SimpleNamespace

    import numpy as np

    from flows.monthly_scoring import _top_at_risk

    rng = np.random.default_rng(5)
    n = 5_000
    # Probabilities on a coarse grid, so that many clients tie.
    probabilities = rng.integers(1, 100, n) / 100
    clients = pd.DataFrame(
        {
            "client_id": rng.permutation(n) + 1,
            "churn_probability": probabilities,
            "risk_tier": "high",
            "reasons": "visits fell",
            "cluster_id": 0,
        }
    )
    held_out = clients["churn_probability"] == 0.99
    scores = pd.DataFrame({"client_id": clients["client_id"], "holdout": held_out})
    insights = SimpleNamespace(
        scores=clients, clusters=pd.DataFrame({"cluster_id": [0], "name": ["regulars"]})
    )

    top = _top_at_risk(insights, scores)

    expected = (
        clients[~held_out]
        .sort_values(["churn_probability", "client_id"], ascending=[False, True])
        .head(20)
    )
    assert [row["client_id"] for row in top] == expected["client_id"].tolist()
    assert all(row["churn_probability"] == 0.98 for row in top)
    assert top[0]["segment"] == "regulars"
