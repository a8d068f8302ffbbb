"""Every awkward input file, loaded after a month of real questionnaires and scored.

The real file is loaded as 2026-09, so each case month is trained on it. Its
20 rows are far fewer than the history's 4,000, so the row-count rule's band
is widened for this module: the cases are about rows, not about the size.
"""

import logging
import uuid

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from gymchurn import registry, steps
from gymchurn.loader import CsvFormatError, load_questionnaire_file, read_questionnaire_csv
from gymchurn.schema import parse_month
from gymchurn.settings import get_settings
from gymchurn.simulation.simulator import ClientSimulator
from gymchurn.simulation.store import write_simulation
from gymchurn.validation import DataValidationError
from tests.conftest import CASES, LogMessages

HISTORY, MONTH = parse_month("2026-09"), parse_month("2026-10")


@pytest.fixture(scope="module")
def cases_database(module_database, real_data):
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("GYMCHURN_ROW_COUNT_ERROR_BAND", "[0, 1000000]")
    get_settings.cache_clear()
    load_questionnaire_file(module_database, read_questionnaire_csv(real_data), HISTORY)
    yield module_database
    monkeypatch.undo()
    get_settings.cache_clear()


def _score_case(engine, name: str) -> uuid.UUID:
    load_questionnaire_file(engine, read_questionnaire_csv(CASES / name), MONTH, replace=True)
    return _score_month(engine)


def _score_month(engine) -> uuid.UUID:
    settings = get_settings()
    run_id = uuid.uuid4()
    steps.start_run(engine, run_id, MONTH)
    try:
        checked = steps.check(steps.extract(engine, MONTH), settings)
    except DataValidationError as error:
        steps.record_validation_failure(engine, run_id, MONTH, error, settings)
        steps.fail_run(engine, run_id, error)
        raise
    chosen = registry.fit_or_load(engine, settings, checked)
    scores = steps.score(chosen, checked, settings)
    segments = steps.segment(checked, settings)
    steps.publish(engine, run_id, checked, chosen, scores, segments)
    return run_id


def _frame(engine, query: str, **params) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(sa.text(query), params).mappings().all())


def _scores(engine) -> pd.Series:
    frame = _frame(
        engine,
        "SELECT client_id, churn_probability FROM churn.scores WHERE month = :m",
        m=MONTH,
    )
    return frame.set_index("client_id")["churn_probability"].sort_index()


def _quarantine(engine, run_id) -> dict[int, list[str]]:
    frame = _frame(
        engine,
        "SELECT client_id, failed_rules FROM churn.quarantine"
        " WHERE run_id = :run AND dataset = 'scoring'",
        run=run_id,
    )
    return dict(zip(frame["client_id"], frame["failed_rules"], strict=True)) if len(frame) else {}


@pytest.fixture(scope="module")
def reference_scores(cases_database) -> pd.Series:
    _score_case(cases_database, "00_clean_reference.csv")
    return _scores(cases_database)


def test_clean_reference_scores_all(cases_database, reference_scores):
    assert len(reference_scores) == 20
    assert reference_scores.between(0, 1).all()


@pytest.mark.parametrize(
    "name",
    [
        "01_bom_semicolon_decimal_comma.csv",
        "12_cp1251_russian_headers.csv",
        "17_columns_reordered.csv",
    ],
)
def test_same_clients_same_scores(cases_database, reference_scores, name):
    _score_case(cases_database, name)

    pd.testing.assert_series_equal(_scores(cases_database), reference_scores)


@pytest.mark.parametrize(
    ("name", "quarantined", "rule"),
    [
        ("03_age_out_of_range.csv", {3, 8}, "age_in_range"),
        (
            "04_month_to_end_gt_contract.csv",
            {1, 2, 10},
            "month_to_end_contract_within_contract_period",
        ),
        ("10_nan_in_lifetime.csv", {2, 6, 13, 17}, "lifetime_not_null"),
    ],
)
def test_faulty_rows_quarantined_others_scored(cases_database, name, quarantined, rule):
    run_id = _score_case(cases_database, name)

    held = _quarantine(cases_database, run_id)
    assert set(held) == quarantined
    for client, rules in held.items():
        assert rule in rules, client
    assert set(_scores(cases_database).index) == set(range(1, 21)) - quarantined
    # Clients are numbered by row, under a header line.
    located = _frame(
        cases_database,
        "SELECT client_id, source_file, line FROM churn.quarantine"
        " WHERE run_id = :run AND dataset = 'scoring'",
        run=run_id,
    )
    assert set(located["source_file"]) == {str((CASES / name).resolve())}
    assert dict(zip(located["client_id"], located["line"], strict=True)) == {
        client: client + 1 for client in quarantined
    }


def test_quarantined_row_gone_from_reloaded_file(cases_database, tmp_path, caplog):
    frame = pd.read_csv(CASES / "03_age_out_of_range.csv", dtype=str, keep_default_na=False)
    frame.insert(0, "client_id", [str(i) for i in range(1, len(frame) + 1)])
    path = tmp_path / "ages.csv"
    frame.to_csv(path, index=False)
    load_questionnaire_file(cases_database, read_questionnaire_csv(path), MONTH, replace=True)
    # The same path again without client 3's row, so client 8 moves up a line.
    frame.drop(index=2).to_csv(path, index=False)

    with caplog.at_level(logging.INFO, logger="gymchurn"):
        load_questionnaire_file(cases_database, read_questionnaire_csv(path), MONTH)
        run_id = _score_month(cases_database)

    located = _frame(
        cases_database,
        "SELECT client_id, source_file, line FROM churn.quarantine"
        " WHERE run_id = :run AND dataset = 'scoring' ORDER BY client_id",
        run=run_id,
    )
    assert located["client_id"].tolist() == [3, 8]
    assert set(located["source_file"]) == {str(path.resolve())}
    assert pd.isna(located["line"].iloc[0])
    assert located["line"].iloc[1] == 8
    first = f"the first at {path.resolve()} line 8 (client 8)"
    assert f"2 quarantined row(s) located in the files they were loaded from, {first}" in (
        caplog.text
    )
    assert "1 quarantined row(s) come from a file that was loaded again without them" in (
        caplog.text
    )
    assert f"{path}: 1 client(s) of 2026-10 loaded from this file before are not in it now" in (
        caplog.text
    )


def test_unreadable_lifetime_names_raw_value(cases_database):
    run_id = _score_case(cases_database, "10_nan_in_lifetime.csv")

    held = _quarantine(cases_database, run_id)
    assert "lifetime_parseable" in held[17]
    values = _frame(
        cases_database,
        "SELECT failed_values FROM churn.quarantine WHERE run_id = :run AND client_id = 17",
        run=run_id,
    )["failed_values"].iloc[0]
    assert values["lifetime_parseable"]["lifetime"] == "NaN"
    stored = _frame(
        cases_database,
        "SELECT count(*) AS n FROM crm.questionnaires WHERE month = :m AND lifetime IS NULL",
        m=MONTH,
    )
    assert stored["n"].iloc[0] == 4


def test_unknown_label_scored_not_trained(cases_database):
    _score_case(cases_database, "02_churn_yes_no.csv")

    assert len(_scores(cases_database)) == 20
    outcomes = _frame(
        cases_database, "SELECT client_id FROM crm.churn_outcomes WHERE month = :m", m=MONTH
    )
    assert len(outcomes) == 19
    assert 7 not in set(outcomes["client_id"])


def test_extra_columns_ignored(cases_database):
    _score_case(cases_database, "09_extra_unknown_columns.csv")

    assert len(_scores(cases_database)) == 20


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("06_header_only.csv", "no data rows"),
        ("08_missing_column.csv", "Avg_class_frequency_current_month"),
        ("14_no_header.csv", "header missing"),
        ("20_binary_not_csv.csv", "not a UTF-8/CSV text file"),
    ],
)
def test_unreadable_file_keeps_published_month(cases_database, reference_scores, name, words):
    _score_case(cases_database, "00_clean_reference.csv")

    with pytest.raises(CsvFormatError, match=words):
        read_questionnaire_csv(CASES / name)

    pd.testing.assert_series_equal(_scores(cases_database), reference_scores)


def test_mostly_broken_month_fails_validation(cases_database, tmp_path):
    rows = pd.read_csv(CASES / "00_clean_reference.csv")
    rows.loc[:13, "Month_to_end_contract"] = rows.loc[:13, "Contract_period"] + 1
    path = tmp_path / "mostly_broken.csv"
    rows.to_csv(path, index=False)
    load_questionnaire_file(cases_database, read_questionnaire_csv(path), MONTH, replace=True)
    settings = get_settings()
    run_id = uuid.uuid4()
    steps.start_run(cases_database, run_id, MONTH)

    with pytest.raises(DataValidationError) as raised:
        steps.check(steps.extract(cases_database, MONTH), settings)
    steps.record_validation_failure(cases_database, run_id, MONTH, raised.value, settings)
    steps.fail_run(cases_database, run_id, raised.value)

    run = _frame(
        cases_database,
        "SELECT status, rows_quarantined, data_docs_path FROM churn.runs WHERE run_id = :run",
        run=run_id,
    ).iloc[0]
    assert run["status"] == "failed_validation"
    assert run["rows_quarantined"] == 14
    assert run["data_docs_path"].endswith("index.html")
    results = _frame(
        cases_database,
        "SELECT rule, n_failed FROM churn.validation_results WHERE run_id = :run AND n_failed > 0",
        run=run_id,
    )
    assert "month_to_end_contract_within_contract_period" in set(results["rule"])


def test_inverted_labels_kept_out_until_confirmed(database, monkeypatch):
    start = parse_month("2026-01")
    write_simulation(database, ClientSimulator(1_500, seed=4), start, 3)
    with database.begin() as conn:
        conn.execute(
            sa.text("UPDATE crm.churn_outcomes SET churned = NOT churned WHERE month = :m"),
            {"m": parse_month("2026-02")},
        )
    march = parse_month("2026-03")

    checked = steps.check(steps.extract(database, march), get_settings())

    assert set(checked.training["month"]) == {start}
    blocked = [f for f in checked.findings if f.severity == "block_training"]
    assert blocked
    assert "GYMCHURN_CONFIRM_LABELS" in blocked[0].message

    monkeypatch.setenv("GYMCHURN_CONFIRM_LABELS", "2026-02")
    get_settings.cache_clear()
    confirmed = steps.check(steps.extract(database, march), get_settings())
    get_settings.cache_clear()

    assert set(confirmed.training["month"]) == {start, parse_month("2026-02")}


def test_blocked_own_labels_not_measured(database):
    start, february = parse_month("2026-01"), parse_month("2026-02")
    write_simulation(database, ClientSimulator(1_500, seed=4), start, 3)
    with database.begin() as conn:
        conn.execute(
            sa.text("UPDATE crm.churn_outcomes SET churned = NOT churned WHERE month = :m"),
            {"m": february},
        )
    settings = get_settings()
    run_id = uuid.uuid4()
    steps.start_run(database, run_id, february)

    checked = steps.check(steps.extract(database, february), settings)
    chosen = registry.fit_or_load(database, settings, checked)
    scores = steps.score(chosen, checked, settings)
    published = steps.publish(
        database, run_id, checked, chosen, scores, steps.segment(checked, settings)
    )

    assert checked.labels_blocked
    assert published.realised_roc_auc is None
    metrics = _frame(database, "SELECT metric FROM churn.monitoring WHERE month = :m", m=february)
    assert "score_mean" in set(metrics["metric"])
    assert not [name for name in metrics["metric"] if name.startswith("realised")]
    trend = _frame(database, "SELECT * FROM churn.monthly_trend WHERE month = :m", m=february)
    assert trend["labels_blocked"].tolist() == [True]
    assert trend["realised_churn_rate"].isna().tolist() == [True]
    assert trend["outcomes_known"].iloc[0] > 1000


def test_row_count_stop_keeps_docs_and_counts(database, real_data, monkeypatch):
    # The module's widened band must not apply here.
    monkeypatch.delenv("GYMCHURN_ROW_COUNT_ERROR_BAND", raising=False)
    get_settings.cache_clear()
    load_questionnaire_file(database, read_questionnaire_csv(real_data), HISTORY)
    load_questionnaire_file(
        database, read_questionnaire_csv(CASES / "03_age_out_of_range.csv"), MONTH
    )
    settings = get_settings()
    run_id = uuid.uuid4()
    steps.start_run(database, run_id, MONTH)

    with pytest.raises(DataValidationError, match="GYMCHURN_ROW_COUNT_ERROR_BAND") as raised:
        steps.check(steps.extract(database, MONTH), settings)
    steps.record_validation_failure(database, run_id, MONTH, raised.value, settings)
    steps.fail_run(database, run_id, raised.value, {"rows_read": 20})
    get_settings.cache_clear()

    run = _frame(
        database,
        "SELECT status, rows_quarantined, data_docs_path FROM churn.runs WHERE run_id = :run",
        run=run_id,
    ).iloc[0]
    assert run["status"] == "failed_validation"
    assert run["rows_quarantined"] == 2
    assert run["data_docs_path"].endswith("index.html")
    rules = set(
        _frame(
            database,
            "SELECT rule FROM churn.validation_results WHERE run_id = :run AND kind = 'batch'",
            run=run_id,
        )["rule"]
    )
    assert "row_count" in rules


def test_report_quality_rows_name_the_ages(cases_database):
    """The report's table of failed rules gives the clients and ages of file 03."""
    load_questionnaire_file(
        cases_database,
        read_questionnaire_csv(CASES / "03_age_out_of_range.csv"),
        MONTH,
        replace=True,
    )
    checked = steps.check(steps.extract(cases_database, MONTH), get_settings())

    quality = steps._quality_rows(checked)
    age = quality[(quality["rule"] == "age_in_range") & (quality["failed_rows"] > 0)]

    assert age["failed_rows"].tolist() == [2]
    assert age["examples"].tolist() == ["3 (age=-3), 8 (age=240)"]


@pytest.mark.parametrize(
    ("name", "n_quarantined"), [("03_age_out_of_range.csv", 2), ("10_nan_in_lifetime.csv", 4)]
)
def test_sliced_check_matches_whole(cases_database, name, n_quarantined):
    """Reading and checking 3 rows at a time gives the outcome of one piece."""
    load_questionnaire_file(
        cases_database, read_questionnaire_csv(CASES / name), MONTH, replace=True
    )
    whole_settings = get_settings().model_copy(update={"read_chunk_rows": 1_000_000})
    sliced_settings = get_settings().model_copy(update={"read_chunk_rows": 3})

    whole = steps.check(steps.extract(cases_database, MONTH, whole_settings), whole_settings)
    sliced = steps.check(steps.extract(cases_database, MONTH, sliced_settings), sliced_settings)

    assert whole.scoring.n_quarantined == n_quarantined
    assert sliced.scoring.rules == whole.scoring.rules
    pd.testing.assert_frame_equal(sliced.scoring.valid, whole.scoring.valid)
    pd.testing.assert_frame_equal(sliced.scoring.quarantined, whole.scoring.quarantined)
    assert steps._quality_rows(sliced).equals(steps._quality_rows(whole))


def test_scores_share_valid_client_ids(cases_database):
    """The month's scores and segments hold no copy of the valid rows' client ids."""
    load_questionnaire_file(
        cases_database,
        read_questionnaire_csv(CASES / "03_age_out_of_range.csv"),
        MONTH,
        replace=True,
    )
    settings = get_settings()
    checked = steps.check(steps.extract(cases_database, MONTH), settings)
    chosen = registry.fit_or_load(cases_database, settings, checked)

    scores = steps.score(chosen, checked, settings)
    segments = steps.segment(checked, settings)

    valid = checked.scoring.valid
    assert len(valid) == 18
    assert "month" not in valid
    assert "row_number" not in valid
    assert scores["client_id"].tolist() == valid["client_id"].tolist()
    assert np.shares_memory(scores["client_id"].to_numpy(), valid["client_id"].to_numpy())
    assert np.shares_memory(
        segments.assignments["client_id"].to_numpy(), valid["client_id"].to_numpy()
    )


def test_extract_counts_month_faults_apart(cases_database):
    load_questionnaire_file(
        cases_database,
        read_questionnaire_csv(CASES / "10_nan_in_lifetime.csv"),
        MONTH,
        replace=True,
    )
    package_logger = logging.getLogger("gymchurn")
    messages = LogMessages(logging.INFO)
    level = package_logger.level
    package_logger.addHandler(messages)
    package_logger.setLevel(logging.INFO)
    try:
        data = steps.extract(cases_database, MONTH)
    finally:
        package_logger.removeHandler(messages)
        package_logger.setLevel(level)

    assert len(data.faults) == 4
    summary = [m for m in messages.messages if m.startswith("extract: 20 questionnaires")]
    assert len(summary) == 1
    assert "4 unreadable cell(s) from loading in 2026-10 and 0 in the candidates" in summary[0]


def test_reference_skips_month_without_leavers(database, real_data, tmp_path, caplog):
    """Describe the month before when the latest labelled month kept too few valid rows.

    Of a labelled month of 20 rows, 14 break a row rule, the 3 leavers among
    them. Its 6 valid rows have no leaver, too few to hold out for the drivers.
    """
    august, september = parse_month("2026-08"), parse_month("2026-09")
    load_questionnaire_file(database, read_questionnaire_csv(real_data), august)
    broken = pd.read_csv(CASES / "00_clean_reference.csv", dtype=str)
    rows = broken.index[broken["Churn"] == "1"].union(broken.index[:13])
    broken.loc[rows, "Month_to_end_contract"] = "13"
    path = tmp_path / "broken.csv"
    broken.to_csv(path, index=False)
    load_questionnaire_file(database, read_questionnaire_csv(path), september)
    load_questionnaire_file(
        database, read_questionnaire_csv(CASES / "00_clean_reference.csv"), MONTH
    )
    settings = get_settings()

    with caplog.at_level(logging.WARNING, logger="gymchurn"):
        checked = steps.check(steps.extract(database, MONTH, settings), settings)
    chosen = registry.fit_or_load(database, settings, checked)
    drivers = steps.explain(chosen, checked, settings)

    assert len(rows) == 14
    assert checked.reference_month == august
    assert set(steps.reference_rows(checked)["month"]) == {august}
    assert "the latest labelled month, 2026-09, has 6 valid row(s) with 0 leaver(s)" in caplog.text
    assert len(drivers.influence) == 13
    assert drivers.holdout_rows == 1000
