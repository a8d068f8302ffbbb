"""Retraining decisions, the registry's statuses and the monitoring table."""

import contextlib
import datetime as dt
import json
import logging
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from gymchurn import lifecycle, model, registry, steps
from gymchurn.settings import get_settings
from gymchurn.simulation.simulator import ClientSimulator
from gymchurn.simulation.store import write_simulation
from tests.conftest import LogMessages
from tests.test_cli import _invoke

JAN, FEB, MAR = dt.date(2026, 1, 1), dt.date(2026, 2, 1), dt.date(2026, 3, 1)


def test_psi_same_distribution_near_zero():
    rng = np.random.default_rng(0)
    assert (
        lifecycle.population_stability_index(rng.normal(size=20_000), rng.normal(size=20_000))
        < 0.01
    )


def test_psi_shifted_distribution_large():
    rng = np.random.default_rng(0)
    psi = lifecycle.population_stability_index(
        rng.normal(size=20_000), rng.normal(1.0, 1.0, 20_000)
    )
    assert psi > 0.25


def test_psi_discrete_feature_one_bin_a_value():
    expected = np.array([1] * 550 + [6] * 210 + [12] * 240)
    actual = np.array([1] * 750 + [6] * 100 + [12] * 150)
    psi = lifecycle.population_stability_index(expected, actual)
    shares_e, shares_a = np.array([0.55, 0.21, 0.24]), np.array([0.75, 0.10, 0.15])
    assert psi == pytest.approx(
        np.sum((shares_a - shares_e) * np.log(shares_a / shares_e)), rel=0.01
    )


def test_realised_mean_same_in_any_row_order():
    rng = np.random.default_rng(0)
    probabilities = rng.random(3_000)
    labels = probabilities > 0.7
    order = rng.permutation(len(probabilities))
    # Summed in these two orders, np.mean differs in the last digit.
    assert np.mean(probabilities) != np.mean(probabilities[order])

    first = lifecycle.realised_metrics(labels, probabilities, labels)
    again = lifecycle.realised_metrics(labels[order], probabilities[order], labels[order])

    assert again == first
    assert first["realised_mean_probability"] == pytest.approx(0.4976251, abs=1e-7)


_CHAMPION = {"version": "v1", "training_months": [JAN, FEB]}
_QUIET = {"contract_period": 0.02, "lifetime": 0.05}
_LAST_MONTH = {
    "realised_roc_auc": 0.95,
    "realised_churn_rate": 0.26,
    "realised_mean_probability": 0.25,
}


def _decide(policy="auto", **overrides):
    arguments = {
        "champion": _CHAMPION,
        "labelled_months": [JAN, FEB],
        "drift": _QUIET,
        "drift_features": ["contract_period", "lifetime"],
        "drift_threshold": 0.25,
        "last_month": (FEB, _LAST_MONTH),
        "min_roc_auc": 0.8,
        "max_calibration_gap": 0.05,
    } | overrides
    return lifecycle.decide_retrain(policy, **arguments)


def test_decide_keeps_champion_when_nothing_changed():
    decision = _decide()
    assert decision.retrain is False
    assert "largest PSI 0.05" in decision.reason
    assert f"realised ROC-AUC on 2026-02 outcomes {_LAST_MONTH['realised_roc_auc']:.3f}" in (
        decision.reason
    )


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"champion": None}, "no champion model"),
        ({"labelled_months": [JAN, FEB, MAR]}, "new labelled month 2026-03"),
        (
            {"drift": {"contract_period": 0.4, "lifetime": 0.05}},
            "drift in contract_period: PSI 0.40",
        ),
        (
            {"last_month": (FEB, _LAST_MONTH | {"realised_roc_auc": 0.7})},
            "realised ROC-AUC on 2026-02 outcomes 0.700 < 0.800",
        ),
        (
            {"last_month": (FEB, _LAST_MONTH | {"realised_churn_rate": 0.34})},
            "34.0% of 2026-02's clients left against a mean probability of 25.0% "
            "(gap 9.00 > 5.00 points)",
        ),
    ],
)
def test_decide_retrains_on_each_trigger(overrides, reason):
    decision = _decide(**overrides)
    assert decision.retrain is True
    assert reason in decision.reason


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        # Rounded to the usual places these would print 5.0 > 5.0 and the like.
        (
            {"last_month": (FEB, _LAST_MONTH | {"realised_churn_rate": 0.3004})},
            "(gap 5.04 > 5.00 points)",
        ),
        (
            {"last_month": (FEB, _LAST_MONTH | {"realised_churn_rate": 0.30004})},
            "(gap 5.004 > 5.000 points)",
        ),
        (
            {"drift": {"contract_period": 0.2504, "lifetime": 0.05}},
            "drift in contract_period: PSI 0.2504 > 0.2500",
        ),
        (
            {"last_month": (FEB, _LAST_MONTH | {"realised_roc_auc": 0.7999})},
            "realised ROC-AUC on 2026-02 outcomes 0.7999 < 0.8000",
        ),
    ],
)
def test_decide_reason_shows_close_comparison(overrides, reason):
    decision = _decide(**overrides)
    assert decision.retrain is True
    assert reason in decision.reason


def test_format_compared_keeps_places_when_distinct():
    assert lifecycle.format_compared(0.09, 0.05, 2, scale=100) == ("9.00", "5.00")
    assert lifecycle.format_compared(0.91234, 0.91236, 4) == ("0.9123", "0.9124")
    assert lifecycle.format_compared(0.912341, 0.912344, 4) == ("0.912341", "0.912344")


def test_decide_ignores_drift_outside_drift_features():
    decision = _decide(drift={"gender": 0.9, "lifetime": 0.05})
    assert decision.retrain is False


def test_decide_never_without_champion_rejected():
    with pytest.raises(ValueError, match="no champion"):
        _decide("never", champion=None)


def test_decide_never_keeps_champion_despite_drift():
    decision = _decide("never", drift={"lifetime": 0.9})

    assert decision.retrain is False
    assert decision.reason == "retrain policy never, although drift in lifetime: PSI 0.90 > 0.25"


def test_decide_never_without_triggers():
    decision = _decide("never")

    assert decision.retrain is False
    assert decision.reason == "retrain policy never"


def test_decide_always_retrains():
    decision = _decide("always")
    assert decision.retrain is True
    assert decision.reason.startswith("retrain policy always")


def _run_month(engine, month: dt.date, retrain: str = "auto") -> registry.ChosenModel:
    settings = get_settings()
    run_id = uuid.uuid4()
    steps.start_run(engine, run_id, month)
    checked = steps.check(steps.extract(engine, month), settings)
    chosen = registry.fit_or_load(engine, settings, checked, retrain)
    scores = steps.score(chosen, checked, settings)
    steps.publish(engine, run_id, checked, chosen, scores, steps.segment(checked, settings))
    return chosen


@contextlib.contextmanager
def _registry_logs():
    """Collect the messages that gymchurn.registry logs at INFO and above."""

    handler = LogMessages(logging.INFO)
    logger = logging.getLogger("gymchurn.registry")
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


def _query(engine, text: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(text), params).all()


@pytest.fixture(scope="module")
def simulated_runs(module_database):
    """Three simulated months of 2,000 clients, each scored in turn."""
    write_simulation(module_database, ClientSimulator(2_000, seed=3), JAN, 3)
    return [_run_month(module_database, month) for month in (JAN, FEB, MAR)]


def test_first_month_model_becomes_champion(simulated_runs):
    first = simulated_runs[0]
    assert first.decision == "promoted challenger"
    assert first.reason == (
        f"new model {first.version} was trained because no champion model, "
        "and is now the champion that scores 2026-01"
    )


def test_new_month_trains_and_compares(simulated_runs):
    third = simulated_runs[2]
    assert "new labelled month 2026-02" in third.reason
    assert third.decision in ("promoted challenger", "kept champion")
    # Trained on January, both models are compared on February's outcomes.
    assert "on 2026-02, " in third.reason
    assert "rows held out" in third.reason
    # The reason names the model that scores March and states that a new one was trained.
    trained = " was trained because new labelled month 2026-02"
    if third.decision == "kept champion":
        assert third.reason.startswith(f"champion {third.version} kept and scores 2026-03; ")
        assert trained in third.reason
        assert ", but not promoted: challenger " in third.reason
    else:
        assert third.reason.startswith(f"new model {third.version}{trained}")
        assert " to score 2026-03: challenger " in third.reason


def test_registry_has_one_champion(module_database, simulated_runs):
    statuses = _query(
        module_database, "SELECT status, count(*) FROM churn.model_versions GROUP BY status"
    )
    assert dict(statuses)["champion"] == 1
    champion = _query(
        module_database,
        "SELECT version, promoted_at, status_reason, calibration FROM churn.model_versions"
        " WHERE status = 'champion'",
    )[0]
    assert champion.promoted_at is not None
    assert champion.status_reason
    assert champion.calibration in ("none", "sigmoid", "isotonic")


def test_runs_record_decision(module_database, simulated_runs):
    rows = _query(
        module_database,
        "SELECT month, retrain_policy, model_decision, decision_reason FROM churn.runs"
        " WHERE status = 'succeeded' ORDER BY month",
    )
    assert [row.month for row in rows] == [JAN, FEB, MAR]
    assert all(row.retrain_policy == "auto" for row in rows)
    assert [row.model_decision for row in rows] == [c.decision for c in simulated_runs]
    assert all(row.decision_reason for row in rows)


def test_monitoring_has_psi_and_scores(module_database, simulated_runs):
    rows = _query(
        module_database,
        "SELECT metric, feature, value FROM churn.monitoring WHERE month = :month",
        month=MAR,
    )
    psi = {row.feature: row.value for row in rows if row.metric == "psi"}
    assert len(psi) == 13
    assert all(value >= 0 for value in psi.values())
    metrics = {row.metric: row.value for row in rows if row.metric != "psi"}
    assert 0.1 < metrics["score_mean"] < 0.5
    assert 0.0 < metrics["share_high"] < 0.5
    # March is the last simulated month: its outcomes are not known yet.
    assert "realised_roc_auc" not in metrics


def test_monitoring_realised_once_outcomes_known(module_database, simulated_runs):
    rows = _query(
        module_database,
        "SELECT metric, value FROM churn.monitoring"
        " WHERE month = :month AND metric LIKE 'realised%'",
        month=FEB,
    )
    metrics = dict(rows)
    assert metrics["realised_roc_auc"] > 0.9
    assert 0.5 < metrics["realised_precision_high"] <= 1.0
    assert metrics["realised_outcomes"] > 1_500


def test_rerun_loads_champion_same_scores(module_database, simulated_runs):
    before = _query(
        module_database,
        "SELECT client_id, churn_probability FROM churn.scores WHERE month = :month"
        " ORDER BY client_id",
        month=MAR,
    )

    monitoring = "SELECT metric, feature, value FROM churn.monitoring ORDER BY 1, 2"
    monitoring_before = _query(module_database, monitoring)

    again = _run_month(module_database, MAR)

    assert again.decision == "loaded champion"
    assert _query(module_database, monitoring) == monitoring_before
    after = _query(
        module_database,
        "SELECT client_id, churn_probability FROM churn.scores WHERE month = :month"
        " ORDER BY client_id",
        month=MAR,
    )
    assert after == before


def test_retrain_never_loads_champion(module_database, simulated_runs):
    champion, months = _query(
        module_database,
        "SELECT version, training_months FROM churn.model_versions WHERE status = 'champion'",
    )[0]

    chosen = _run_month(module_database, MAR, retrain="never")

    assert chosen.decision == "loaded champion"
    assert chosen.version == champion
    assert chosen.reason.startswith(
        f"champion {champion} scores 2026-03; no new model was trained (retrain policy never"
    )
    # The drivers use the months to tell whether the champion saw their rows.
    assert chosen.training_months == tuple(sorted(months))
    assert max(chosen.training_months) < MAR


def test_retrain_never_drift_logged_plainly(module_database, simulated_runs):
    # Any change in the age distribution passes a threshold this low.
    settings = get_settings().model_copy(
        update={"drift_psi_threshold": 1e-9, "drift_features": ["age"]}
    )
    checked = steps.check(steps.extract(module_database, MAR), settings)
    champion = _query(
        module_database, "SELECT version FROM churn.model_versions WHERE status = 'champion'"
    )[0].version
    versions = "SELECT version, status FROM churn.model_versions ORDER BY version"
    before = _query(module_database, versions)

    with _registry_logs() as messages:
        chosen = registry.fit_or_load(module_database, settings, checked, "never")

    psi, threshold = lifecycle.format_compared(chosen.drift["age"], 1e-9, decimals=2)
    assert chosen.drift["age"] > 1e-9
    assert chosen.decision == "loaded champion"
    assert chosen.version == champion
    assert chosen.reason.startswith(
        f"champion {champion} scores 2026-03; no new model was trained (retrain policy never, "
        f"although drift in age: PSI {psi} > {threshold}"
    )
    model_lines = [message for message in messages if message.startswith("model: ")]
    assert len(model_lines) == 1
    assert model_lines[0].startswith(f"model: {chosen.reason}; the {chosen.algorithm} model ")
    assert _query(module_database, versions) == before


def test_challenger_not_promoted_reason(database, monkeypatch):
    write_simulation(database, ClientSimulator(2_000, seed=3), JAN, 3)
    _run_month(database, JAN)
    champion = _run_month(database, FEB)
    # The challenger trained for March loses on the held-out month.
    monkeypatch.setattr(
        registry, "_compare_on_holdout", lambda *_: (0.9, 0.95, "2026-02, 2000 rows held out")
    )

    with _registry_logs() as messages:
        chosen = _run_month(database, MAR)

    challenger = _query(
        database,
        "SELECT version FROM churn.model_versions WHERE training_months"
        " = ARRAY[DATE '2026-01-01', DATE '2026-02-01']",
    )[0].version
    assert champion.decision == "loaded champion"
    assert chosen.decision == "kept champion"
    assert chosen.version == champion.version
    assert chosen.reason == (
        f"champion {champion.version} kept and scores 2026-03; new model {challenger} was "
        "trained because new labelled month 2026-02, but not promoted: challenger "
        f"{challenger} ROC-AUC 0.9000, champion {champion.version} 0.9500 on 2026-02, "
        "2000 rows held out"
    )
    assert f"model: {chosen.reason}" in messages
    # gymchurn run prints this column as its "model choice" line.
    reasons = _query(
        database,
        "SELECT decision_reason FROM churn.runs WHERE month = :month AND status = 'succeeded'",
        month=MAR,
    )
    assert [row.decision_reason for row in reasons] == [chosen.reason]


def _quarantine_counts(engine) -> list[tuple]:
    """Return (month of the run, dataset, run_id, rows) for each run's quarantine rows."""
    rows = _query(
        engine,
        "SELECT r.month, q.dataset, r.run_id, count(*) AS n FROM churn.quarantine q"
        " JOIN churn.runs r USING (run_id) GROUP BY 1, 2, 3 ORDER BY 1, 2",
    )
    return [tuple(row) for row in rows]


def test_training_quarantine_only_by_training_runs(database):
    write_simulation(database, ClientSimulator(2_000, seed=3), JAN, 3)
    with database.begin() as conn:
        damaged = conn.execute(
            sa.text(
                "UPDATE crm.questionnaires SET age = -3 WHERE month = :month AND client_id IN"
                " (SELECT client_id FROM crm.questionnaires WHERE month = :month"
                " ORDER BY client_id LIMIT 2) RETURNING client_id"
            ),
            {"month": JAN},
        ).all()
    assert len(damaged) == 2

    # January is a backtest: its damaged rows are quarantined as scoring rows.
    assert _run_month(database, JAN).trained
    february = _run_month(database, FEB, retrain="never")
    march = _run_month(database, MAR)
    counts = _quarantine_counts(database)

    assert february.decision == "loaded champion"
    assert not february.trained
    # February's run validated January's damaged rows among its training candidates.
    checked_by_february = _query(
        database,
        "SELECT v.n_failed FROM churn.validation_results v JOIN churn.runs r USING (run_id)"
        " WHERE r.month = :month AND v.rule = 'age_in_range'"
        " AND v.dataset LIKE 'labelled questionnaires%'",
        month=FEB,
    )
    assert [row.n_failed for row in checked_by_february] == [2]
    assert march.trained
    assert [(month, dataset, n) for month, dataset, _, n in counts] == [
        (JAN, "scoring", 2),
        (MAR, "training", 2),
    ]
    training_clients = _query(
        database, "SELECT month, client_id FROM churn.quarantine WHERE dataset = 'training'"
    )
    assert sorted(training_clients) == sorted((JAN, row.client_id) for row in damaged)

    # A rerun of March that loads a saved model keeps the first run's training rows.
    rerun = _run_month(database, MAR, retrain="never")

    assert not rerun.trained
    assert _quarantine_counts(database) == counts


def test_rerun_earlier_month_uses_its_model(module_database, simulated_runs):
    query = (
        "SELECT client_id, churn_probability FROM churn.scores WHERE month = :month"
        " ORDER BY client_id"
    )
    before = _query(module_database, query, month=FEB)
    champion = _query(
        module_database, "SELECT version FROM churn.model_versions WHERE status = 'champion'"
    )[0].version

    again = _run_month(module_database, FEB)

    assert again.decision == "loaded model of the month"
    assert again.version == simulated_runs[1].version
    assert "the model of its published run" in again.reason
    assert _query(module_database, query, month=FEB) == before
    after = _query(
        module_database, "SELECT version FROM churn.model_versions WHERE status = 'champion'"
    )[0].version
    assert after == champion


def test_rerun_backtest_month_keeps_out_of_fold_scores(module_database, simulated_runs):
    query = (
        "SELECT client_id, churn_probability, risk_tier FROM churn.scores WHERE month = :month"
        " ORDER BY client_id"
    )
    before = _query(module_database, query, month=JAN)
    champion = _query(
        module_database, "SELECT version FROM churn.model_versions WHERE status = 'champion'"
    )[0].version

    again = _run_month(module_database, JAN)

    assert simulated_runs[0].out_of_fold is not None
    assert champion != simulated_runs[0].version
    assert again.decision == "loaded model of the month"
    assert again.version == simulated_runs[0].version
    assert again.out_of_fold is not None
    assert "out-of-fold scores" in again.reason
    assert _query(module_database, query, month=JAN) == before
    after = _query(
        module_database, "SELECT version FROM churn.model_versions WHERE status = 'champion'"
    )[0].version
    assert after == champion


def test_missing_champion_file_rebuilt(module_database, simulated_runs):
    row = _query(
        module_database,
        "SELECT version, artifact_path FROM churn.model_versions WHERE status = 'champion'",
    )[0]
    query = (
        "SELECT client_id, churn_probability FROM churn.scores WHERE month = :month"
        " ORDER BY client_id"
    )
    before = _query(module_database, query, month=MAR)
    Path(row.artifact_path).unlink()

    again = _run_month(module_database, MAR)

    assert "the champion's file is missing" in again.reason
    rebuilt = _query(
        module_database,
        "SELECT artifact_path FROM churn.model_versions WHERE version = :version",
        version=row.version,
    )[0].artifact_path
    assert Path(rebuilt).is_file()
    assert again.version == row.version
    assert _query(module_database, query, month=MAR) == before


def test_retrain_never_missing_champion_file_fails(module_database, simulated_runs, tmp_path):
    row = _query(
        module_database,
        "SELECT version, artifact_path FROM churn.model_versions WHERE status = 'champion'",
    )[0]
    versions = "SELECT version, status FROM churn.model_versions ORDER BY version"
    before = _query(module_database, versions)
    settings = get_settings()
    checked = steps.check(steps.extract(module_database, MAR), settings)
    moved = tmp_path / "moved.skops"
    shutil.move(row.artifact_path, moved)
    try:
        with pytest.raises(model.ModelFileMissingError) as raised:
            registry.fit_or_load(module_database, settings, checked, "never")
    finally:
        shutil.move(moved, row.artifact_path)

    message = str(raised.value)
    assert row.artifact_path in message
    assert row.version in message
    assert "gymchurn models promote VERSION" in message
    assert "--retrain always" in message
    assert "\n" not in message
    assert _query(module_database, versions) == before


def test_high_tier_clients_have_reasons(module_database, simulated_runs):
    rows = _query(
        module_database,
        "SELECT reasons FROM churn.scores WHERE month = :month AND risk_tier = 'high'",
        month=MAR,
    )
    assert len(rows) > 200
    with_reasons = [row.reasons for row in rows if row.reasons]
    assert len(with_reasons) >= 0.95 * len(rows)
    assert all(1 <= len(reasons) <= 3 for reasons in with_reasons)
    phrases = [phrase for reasons in with_reasons for phrase in reasons]
    assert any(phrase.startswith("member for") for phrase in phrases)
    assert any(phrase.startswith("visits fell from") for phrase in phrases)


def _scenario_runs(engine, scenario: str) -> list[registry.ChosenModel]:
    start = dt.date(2026, 1, 1)
    simulator = ClientSimulator(
        3_000, seed=3, scenario=scenario, scenario_start=dt.date(2026, 4, 1)
    )
    write_simulation(engine, simulator, start, 5)
    return [_run_month(engine, dt.date(2026, month, 1)) for month in range(1, 6)]


def _calibration_gap(engine, month: dt.date) -> float:
    rows = dict(
        _query(
            engine,
            "SELECT metric, value FROM churn.monitoring WHERE month = :month"
            " AND metric IN ('realised_churn_rate', 'realised_mean_probability')",
            month=month,
        )
    )
    return rows["realised_churn_rate"] - rows["realised_mean_probability"]


def test_steady_scenario_triggers_no_drift(database):
    runs = _scenario_runs(database, "steady")

    for chosen in runs:
        assert "drift in" not in chosen.reason
        assert "left against" not in chosen.reason
    assert abs(_calibration_gap(database, dt.date(2026, 4, 1))) < 0.05


def test_price_rise_scenario_triggers_retrain(database):
    runs = _scenario_runs(database, "price_rise")

    # April's outcomes, the first after the rise, are known in May's run.
    assert _calibration_gap(database, dt.date(2026, 4, 1)) > 0.05
    assert "of 2026-04's clients left against a mean probability" in runs[4].reason
    assert runs[4].decision in ("promoted challenger", "kept champion")


def test_registry_records_time_holdout(module_database, simulated_runs):
    rows = _query(
        module_database,
        "SELECT metrics -> 'time_holdout' AS holdout FROM churn.model_versions"
        " WHERE training_months = ARRAY[DATE '2026-01-01', DATE '2026-02-01']",
    )
    holdout = rows[0].holdout
    assert holdout["month"] == "2026-02"
    assert holdout["rows"] > 1_800
    assert holdout["roc_auc"] > 0.9
    assert 0 < holdout["brier"] < 0.15


def test_models_list_shows_statuses(module_database, simulated_runs):
    result = _invoke("models", "list")

    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    versions = _query(module_database, "SELECT version, status FROM churn.model_versions")
    assert len(lines) == len(versions)
    for version, status in versions:
        assert any(line.startswith(version) and f" {status} " in line for line in lines)


def test_models_show_prints_record(module_database, simulated_runs):
    version = simulated_runs[0].version

    result = _invoke("models", "show", version)

    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["version"] == version
    assert record["training_rows"] == 2_000
    assert len(record["artifact_sha256"]) == 64


def test_models_show_unknown_version(module_database):
    result = _invoke("models", "show", "v000000-missing")

    assert result.exit_code == 1
    assert "model version v000000-missing not found" in result.output


def test_models_promote_makes_champion(module_database, simulated_runs):
    first = simulated_runs[0].version

    result = _invoke("models", "promote", first)

    assert result.exit_code == 0, result.output
    statuses = dict(_query(module_database, "SELECT version, status FROM churn.model_versions"))
    assert statuses[first] == "champion"
    assert list(statuses.values()).count("champion") == 1
    reason = _query(
        module_database,
        "SELECT status_reason FROM churn.model_versions WHERE version = :version",
        version=first,
    )[0].status_reason
    assert "by hand" in reason


def test_models_promote_rejects_changed_file(module_database, simulated_runs, tmp_path):
    version = simulated_runs[1].version
    path = _query(
        module_database,
        "SELECT artifact_path FROM churn.model_versions WHERE version = :version",
        version=version,
    )[0].artifact_path
    backup = tmp_path / "backup.skops"
    shutil.copyfile(path, backup)
    with open(path, "ab") as handle:
        handle.write(b"tampered")
    try:
        result = _invoke("models", "promote", version)
    finally:
        shutil.copyfile(backup, path)

    assert result.exit_code == 1
    assert f"cannot promote {version}" in result.output


def test_rerun_earlier_month_changed_file(module_database, simulated_runs, tmp_path):
    # February is an earlier month only for a champion trained on it: earlier
    # tests may have promoted another version.
    later = _query(
        module_database,
        "SELECT version FROM churn.model_versions WHERE :month = ANY (training_months)",
        month=FEB,
    )[0].version
    with module_database.begin() as conn:
        registry.promote(conn, later, "a champion trained on February")
    version = simulated_runs[1].version
    query = (
        "SELECT client_id, churn_probability FROM churn.scores WHERE month = :month"
        " ORDER BY client_id"
    )
    before = _query(module_database, query, month=FEB)
    path = _query(
        module_database,
        "SELECT artifact_path FROM churn.model_versions WHERE version = :version",
        version=version,
    )[0].artifact_path
    backup = tmp_path / "backup.skops"
    shutil.copyfile(path, backup)
    with open(path, "ab") as handle:
        handle.write(b"tampered")
    try:
        with pytest.raises(model.ModelIntegrityError, match="changed after it was written"):
            _run_month(module_database, FEB)
        again = _run_month(module_database, FEB, retrain="always")
    finally:
        shutil.copyfile(backup, path)
    rebuilt = _query(
        module_database,
        "SELECT artifact_path FROM churn.model_versions WHERE version = :version",
        version=version,
    )[0].artifact_path

    assert again.decision == "loaded model of the month"
    assert again.version == version
    assert "trained on the months before it" in again.reason
    assert rebuilt != path
    assert _query(module_database, query, month=FEB) == before
