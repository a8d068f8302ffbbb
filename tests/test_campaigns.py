"""Contacts loading and the measured effect of a campaign, on a small hand-made month.

The month 2026-10 has 22 scored clients, published without a model run:

| clients | tier, segment, action | held out | contacted | left |
|---|---|---|---|---|
| 1-10 | high, 0, Call | no | 1-8 | 1, 2, 9 |
| 11-14 | high, 0, Call | yes | none | 11, 12 |
| 21-25 | medium, 1, no measure | no | 21, 22 | 21 |
| 26-27 | medium, 1, no measure | yes | 26 | none |
| 30 | low, 1 | no | 30 | none |
"""

import datetime as dt
import math
import uuid

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from scipy.stats import norm
from statsmodels.stats.proportion import confint_proportions_2indep

from gymchurn import campaigns
from tests.test_cli import _invoke

MONTH = "2026-10"
RUN_ID = uuid.uuid4()
CLIENTS = (
    [(i, "high", 0, "Call", False) for i in range(1, 11)]
    + [(i, "high", 0, "Call", True) for i in range(11, 15)]
    + [(i, "medium", 1, None, False) for i in range(21, 26)]
    + [(i, "medium", 1, None, True) for i in (26, 27)]
    + [(30, "low", 1, None, False)]
)
CONTACTED = [*range(1, 9), 21, 22, 26, 30]
CHURNED = {1, 2, 9, 11, 12, 21}
Z = norm.ppf(0.975)


def _execute(engine, statement: str, rows: list[dict] | dict | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(statement), rows or {})


def _frame(engine, query: str, **params) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.text(query), conn, params=params)


@pytest.fixture
def scored_month(database):
    """The hand-made month of the module docstring, published."""
    _execute(
        database,
        "INSERT INTO churn.model_versions (version, algorithm, params, features, metrics, "
        "training_months, training_rows, sklearn_version, artifact_path, artifact_sha256, "
        "status) VALUES ('v-test', 'logistic_regression', '{}', '{}', '{}', '{}', 0, '1', "
        "'-', '-', 'champion')",
    )
    _execute(
        database,
        "INSERT INTO churn.runs (run_id, month, status, started_at) "
        "VALUES (:run_id, '2026-10-01', 'succeeded', now())",
        {"run_id": RUN_ID},
    )
    _execute(
        database,
        "INSERT INTO churn.clusters (month, cluster_id, size, name, run_id) "
        "VALUES ('2026-10-01', :cluster, 10, :name, :run_id)",
        [
            {"cluster": 0, "name": "new clients", "run_id": RUN_ID},
            {"cluster": 1, "name": "loyal clients", "run_id": RUN_ID},
        ],
    )
    # churn.scores has one partition a month, which the job's publish creates.
    _execute(
        database,
        "CREATE TABLE churn.scores_2026_10 PARTITION OF churn.scores FOR VALUES IN ('2026-10-01')",
    )
    _execute(
        database,
        "INSERT INTO churn.scores (month, client_id, churn_probability, risk_tier, cluster_id, "
        "model_version, run_id, suggested_action, holdout) VALUES ('2026-10-01', :client, 0.5, "
        ":tier, :cluster, 'v-test', :run_id, :action, :holdout)",
        [
            {"client": c, "tier": t, "cluster": k, "action": a, "holdout": h, "run_id": RUN_ID}
            for c, t, k, a, h in CLIENTS
        ],
    )
    return database


def _load_outcomes(engine) -> None:
    _execute(
        engine,
        "INSERT INTO crm.churn_outcomes (client_id, month, churned) "
        "VALUES (:client, '2026-10-01', :churned)",
        [{"client": c, "churned": c in CHURNED} for c, *_ in CLIENTS],
    )


def _contact_file(folder, rows: list[str], name: str = "calls.csv"):
    path = folder / name
    path.write_text("client_id,date,channel,outcome\n" + "\n".join(rows) + "\n")
    return path


def _good_rows() -> list[str]:
    return [f"{client},2026-11-0{1 + client % 9},Call,reached" for client in CONTACTED]


# Loading contacts


def test_contacts_load_writes_good_rows(scored_month, tmp_path):
    result = _invoke(
        "contacts", "load", str(_contact_file(tmp_path, _good_rows())), "--month", MONTH
    )
    loaded = _frame(scored_month, "SELECT * FROM crm.contacts ORDER BY line")

    assert result.exit_code == 0, result.output
    assert "12 rows for the list of 2026-10; 12 contacts loaded (12 clients), 0 quarantined" in (
        result.stdout
    )
    assert loaded["client_id"].to_list() == CONTACTED
    assert set(loaded["channel"]) == {"call"}
    assert loaded["line"].to_list() == list(range(2, 14))


def test_contacts_load_quarantines_with_reasons(scored_month, tmp_path):
    rows = [
        "1,2026-11-03,call,reached",
        "999,2026-11-03,call,reached",  # line 3: nobody scored by that id
        "abc,2026-11-03,call,reached",  # line 4
        "2,2026-10-20,call,reached",  # line 5: in the scored month, before the list
        "3,someday,sms,",  # line 6
        "4,2026-11-04, ,reached",  # line 7
        "1,2026-11-03,CALL,again",  # line 8: line 2 once more
        "-5,2026-12-01,,",  # line 9: three faults at once
    ]
    result = _invoke("contacts", "load", str(_contact_file(tmp_path, rows)), "--month", MONTH)
    quarantine = _frame(
        scored_month, "SELECT line, reasons FROM crm.contact_quarantine ORDER BY line"
    )

    assert result.exit_code == 0, result.output
    assert "1 contacts loaded (1 clients), 7 quarantined" in result.stdout
    assert dict(zip(quarantine["line"], quarantine["reasons"], strict=True)) == {
        3: ["unknown_client"],
        4: ["invalid_client_id"],
        5: ["date_outside_month"],
        6: ["invalid_date"],
        7: ["empty_channel"],
        8: ["duplicate"],
        9: ["invalid_client_id", "date_outside_month", "empty_channel"],
    }
    assert "calls.csv: line 3 (client_id '999'" in result.stderr


def test_contacts_reload_replaces_rows(scored_month, tmp_path):
    path = _contact_file(tmp_path, _good_rows())
    _invoke("contacts", "load", str(path), "--month", MONTH)
    result = _invoke("contacts", "load", str(path), "--month", MONTH)

    assert result.exit_code == 0, result.output
    assert f"12 contacts of an earlier load of {path.resolve()} replaced" in result.stdout
    assert _frame(scored_month, "SELECT count(*) AS n FROM crm.contacts").n.iloc[0] == 12


def test_contacts_same_name_other_folder_adds(scored_month, tmp_path):
    (tmp_path / "club_a").mkdir()
    (tmp_path / "club_b").mkdir()
    first = _contact_file(tmp_path / "club_a", _good_rows()[:6])
    second = _contact_file(tmp_path / "club_b", _good_rows()[6:])
    _invoke("contacts", "load", str(first), "--month", MONTH)
    result = _invoke("contacts", "load", str(second), "--month", MONTH)
    files = _frame(
        scored_month,
        "SELECT source_file, count(*) AS n FROM crm.contacts GROUP BY source_file "
        "ORDER BY source_file",
    )

    assert result.exit_code == 0, result.output
    assert "replaced" not in result.stdout
    assert files["source_file"].to_list() == [str(first.resolve()), str(second.resolve())]
    assert files["n"].to_list() == [6, 6]


def test_contacts_in_another_file_are_duplicates(scored_month, tmp_path):
    _invoke("contacts", "load", str(_contact_file(tmp_path, _good_rows())), "--month", MONTH)
    again = _contact_file(tmp_path, ["1,2026-11-02,call,reached", "2,2026-11-20,sms,"], "sms.csv")
    result = _invoke("contacts", "load", str(again), "--month", MONTH)

    quarantine = _frame(scored_month, "SELECT line, duplicate_of FROM crm.contact_quarantine")
    first = tmp_path / "calls.csv"

    assert result.exit_code == 0, result.output
    assert "1 contacts loaded (1 clients), 1 quarantined (1 duplicate)" in result.stdout
    assert _frame(scored_month, "SELECT count(*) AS n FROM crm.contacts").n.iloc[0] == 13
    # Client 1 was called on 2026-11-02, line 2 of calls.csv.
    assert quarantine.to_dict("records") == [
        {"line": 2, "duplicate_of": f"{first.resolve()} line 2"}
    ]
    assert f"duplicate of {first.resolve()} line 2" in result.stderr


def test_contacts_duplicate_in_file_names_line(scored_month, tmp_path):
    rows = ["1,2026-11-03,call,reached", "2,2026-11-03,call,", "1,2026-11-03,Call,again"]
    path = _contact_file(tmp_path, rows)
    _invoke("contacts", "load", str(path), "--month", MONTH)
    quarantine = _frame(scored_month, "SELECT line, duplicate_of FROM crm.contact_quarantine")

    assert quarantine.to_dict("records") == [
        {"line": 4, "duplicate_of": f"{path.resolve()} line 2"}
    ]


def test_contacts_held_out_client_warns(scored_month, tmp_path):
    result = _invoke(
        "contacts", "load", str(_contact_file(tmp_path, _good_rows())), "--month", MONTH
    )

    assert "warning: 1 held-out client(s) were contacted" in result.stderr
    assert "1 contacted client(s) were in the low tier of 2026-10" in result.stderr


def test_contacts_missing_column_exits_1(scored_month, tmp_path):
    path = tmp_path / "calls.csv"
    path.write_text("client_id,date,outcome\n1,2026-11-03,reached\n")
    result = _invoke("contacts", "load", str(path), "--month", MONTH)

    assert result.exit_code == 1
    assert "line 1: missing column(s) channel;" in result.stderr
    assert "channel (accepted names: channel, канал, канал_связи)" in result.stderr
    assert _frame(scored_month, "SELECT count(*) AS n FROM crm.contacts").n.iloc[0] == 0


def test_contacts_missing_date_named_as_written(scored_month, tmp_path):
    path = tmp_path / "calls.csv"
    path.write_text("client_id,channel,outcome\n1,call,reached\n")
    result = _invoke("contacts", "load", str(path), "--month", MONTH)

    assert result.exit_code == 1
    assert "missing column(s) date;" in result.stderr
    assert "contact_date;" not in result.stderr
    assert "date (accepted names: date, contact_date, contacted_on, дата" in result.stderr


def test_contacts_russian_headers(scored_month, tmp_path):
    path = tmp_path / "звонки.csv"
    path.write_text(
        "Клиент;Дата;Канал;Результат\n1;03.11.2026;звонок;дозвонились\n2;04.11.2026;sms;\n",
        encoding="cp1251",
    )
    result = _invoke("contacts", "load", str(path), "--month", MONTH)
    loaded = _frame(
        scored_month,
        "SELECT client_id, channel, coalesce(outcome, '-') AS outcome FROM crm.contacts "
        "ORDER BY line",
    )

    assert result.exit_code == 0, result.output
    assert loaded.to_dict("records") == [
        {"client_id": 1, "channel": "звонок", "outcome": "дозвонились"},
        {"client_id": 2, "channel": "sms", "outcome": "-"},
    ]


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        # A time after the date is dropped, with a space or a T.
        (["2026-11-05 10:30", "2026-11-15T10:00:00"], ["2026-11-05", "2026-11-15"]),
        # 16 cannot be a month, so the file's slashes are day first.
        (["16/11/2026", "05/11/2026"], ["2026-11-16", "2026-11-05"]),
        # 16 cannot be a day of November read day first, so month first.
        (["11/16/2026", "11/05/2026 18:00"], ["2026-11-16", "2026-11-05"]),
        # Both orders are real dates; only day first falls in November.
        (["05/11/2026"], ["2026-11-05"]),
    ],
)
def test_contacts_date_formats(scored_month, tmp_path, cells, expected):
    rows = [f"{client},{cell},call," for client, cell in enumerate(cells, start=1)]
    result = _invoke("contacts", "load", str(_contact_file(tmp_path, rows)), "--month", MONTH)
    loaded = _frame(scored_month, "SELECT contact_date FROM crm.contacts ORDER BY line")

    assert result.exit_code == 0, result.output
    assert [str(day) for day in loaded["contact_date"]] == expected


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        (["16/11/2026", "11/17/2026"], "mix day first (16/11/2026) and month first (11/17/2026)"),
        (["03/04/2026"], "can be read day first or month first"),
    ],
)
def test_contacts_unclear_slash_dates_exit_1(scored_month, tmp_path, cells, message):
    rows = [f"{client},{cell},call," for client, cell in enumerate(cells, start=1)]
    result = _invoke("contacts", "load", str(_contact_file(tmp_path, rows)), "--month", MONTH)

    assert result.exit_code == 1
    assert message in result.stderr
    assert "Accepted dates: 2026-11-05, 05.11.2026 (day first)" in result.stderr
    assert _frame(scored_month, "SELECT count(*) AS n FROM crm.contacts").n.iloc[0] == 0


def test_contacts_month_without_scores_exits_1(scored_month, tmp_path):
    path = _contact_file(tmp_path, _good_rows())
    result = _invoke("contacts", "load", str(path), "--month", "2026-09")

    assert result.exit_code == 1
    assert "no published scores for 2026-09" in result.stderr


def test_contacts_invalid_month_exits_2(scored_month, tmp_path):
    path = _contact_file(tmp_path, _good_rows())
    assert _invoke("contacts", "load", str(path), "--month", "2026-13").exit_code == 2


# Results


def _wilson(churned: int, clients: int) -> tuple[float, float]:
    rate = churned / clients
    centre = (rate + Z**2 / (2 * clients)) / (1 + Z**2 / clients)
    half = Z * math.sqrt(rate * (1 - rate) / clients + Z**2 / (4 * clients**2))
    return centre - half / (1 + Z**2 / clients), centre + half / (1 + Z**2 / clients)


def _newcombe(churned_a: int, clients_a: int, churned_b: int, clients_b: int):
    """Newcombe's hybrid score interval of rate a - rate b, written out by hand."""
    rate_a, rate_b = churned_a / clients_a, churned_b / clients_b
    low_a, high_a = _wilson(churned_a, clients_a)
    low_b, high_b = _wilson(churned_b, clients_b)
    difference = rate_a - rate_b
    return (
        difference - math.sqrt((rate_a - low_a) ** 2 + (high_b - rate_b) ** 2),
        difference + math.sqrt((high_a - rate_a) ** 2 + (rate_b - low_b) ** 2),
    )


def _newcombe_variance(churned_a: int, clients_a: int, churned_b: int, clients_b: int):
    """Variance of rate a - rate b read from the half-width of Newcombe's interval."""
    lower, upper = _newcombe(churned_a, clients_a, churned_b, clients_b)
    return ((upper - lower) / (2 * Z)) ** 2


def test_results_before_outcomes_exits_1(scored_month, tmp_path):
    _invoke("contacts", "load", str(_contact_file(tmp_path, _good_rows())), "--month", MONTH)
    result = _invoke("contacts", "results", "--month", MONTH)

    assert result.exit_code == 1
    assert "outcomes of 2026-10" in result.stderr
    assert "not loaded yet" in result.stderr


def test_results_without_contacts_exits_1(scored_month):
    _load_outcomes(scored_month)
    result = _invoke("contacts", "results", "--month", MONTH)

    assert result.exit_code == 1
    assert "No contacts were loaded for the at-risk list of 2026-10" in result.stderr


def test_results_match_hand_computation(scored_month, tmp_path):
    _load_outcomes(scored_month)
    loaded = _invoke(
        "contacts", "load", str(_contact_file(tmp_path, _good_rows())), "--month", MONTH
    )
    result = _invoke("contacts", "results", "--month", MONTH)
    assert loaded.exit_code == 0, loaded.output
    assert result.exit_code == 0, result.output
    rows = _frame(
        scored_month,
        "SELECT * FROM churn.campaign_results ORDER BY level, risk_tier",
    ).set_index(["level", "risk_tier"], drop=False)
    overall = rows.iloc[0]
    high = rows.loc[("stratum", "high")]
    medium = rows.loc[("stratum", "medium")]
    high_tier = rows.loc[("tier", "high")]

    assert "churn.campaign_results: 5 rows of 2026-10 recomputed" in loaded.stdout
    assert list(rows["level"]) == ["overall", "stratum", "stratum", "tier", "tier"]
    # High tier: 2 of 8 contacted left, 2 of 4 held out; 3 of 10 listed.
    assert (high.listed, high.contacted, high.held_out) == (10, 8, 4)
    assert (high.churned_listed, high.churned_contacted, high.churned_held_out) == (3, 2, 2)
    assert high.segment == "new clients"
    assert high.suggested_action == "Call"
    assert high.difference == pytest.approx(0.5 - 0.25)
    assert high.clients_kept == pytest.approx(0.25 * 8)
    assert (high.ci_lower, high.ci_upper) == pytest.approx(_newcombe(2, 4, 2, 8))
    assert (high.ci_lower_listed, high.ci_upper_listed) == pytest.approx(_newcombe(2, 4, 3, 10))
    # Medium tier: 1 of 2 contacted left, none of the 2 held out; client 26 was contacted.
    assert medium.held_out_contacted == 1
    assert pd.isna(medium.suggested_action)
    assert medium.difference == pytest.approx(0 - 0.5)
    # The high tier has one stratum, so its row has the stratum's Newcombe interval.
    assert high_tier.difference == pytest.approx(0.25)
    assert (high_tier.ci_lower, high_tier.ci_upper) == pytest.approx(_newcombe(2, 4, 2, 8))
    assert high_tier.strata_measured == 1
    # Overall: the two tiers' differences weighted by their 8 and 2 contacted clients, and
    # their Newcombe variances by the squared weights; the low-tier contact is not counted.
    high_variance = _newcombe_variance(2, 4, 2, 8)
    medium_variance = _newcombe_variance(0, 2, 1, 2)
    variance = 0.8**2 * high_variance + 0.2**2 * medium_variance
    assert overall.level == "overall"
    assert (overall.contacted, overall.held_out, overall.held_out_contacted) == (10, 6, 1)
    assert overall.difference == pytest.approx(0.8 * 0.25 + 0.2 * -0.5)
    assert variance == pytest.approx(0.035962, rel=1e-4)
    assert (overall.ci_lower, overall.ci_upper) == pytest.approx(
        (0.1 - Z * math.sqrt(variance), 0.1 + Z * math.sqrt(variance))
    )
    assert overall.clients_kept == pytest.approx(0.1 * 10)
    assert overall.churn_rate_held_out_weighted == pytest.approx(0.8 * 0.5 + 0.2 * 0)
    assert (overall.strata_measured, overall.contacted_measured) == (2, 10)
    # Held out against listed: weighted by the 10 and 5 listed clients.
    assert overall.difference_listed == pytest.approx(10 / 15 * (0.5 - 0.3) + 5 / 15 * (0 - 0.2))
    # Groups this small cannot detect even a fall to no churn at all.
    assert pd.isna(overall.min_detectable_effect)
    assert "overall: 10 contacted (churn 30.0%); held-out clients of the same 2 risk tiers" in (
        result.stdout
    )
    assert "churned 40.0%; difference +10.0 points" in result.stdout
    assert "about 1 clients kept; too few clients to detect any effect" in result.stdout
    assert "held out against every listed client of those tiers" in result.stdout
    assert "high, segment 0, Call: 8 contacted" in result.stdout
    assert "too few clients to read" in result.stdout
    assert "n/a points" not in result.stdout


def test_results_recomputed_not_doubled(scored_month, tmp_path):
    _load_outcomes(scored_month)
    _invoke("contacts", "load", str(_contact_file(tmp_path, _good_rows())), "--month", MONTH)
    _invoke("contacts", "results", "--month", MONTH)
    _invoke("contacts", "results", "--month", MONTH)

    assert _frame(scored_month, "SELECT count(*) AS n FROM churn.campaign_results").n.iloc[0] == 5


def _stratum(tier, cluster, contacted, churned_contacted, held_out, churned_held_out, listed=None):
    listed = contacted if listed is None else listed
    return {
        "risk_tier": tier,
        "cluster_id": cluster,
        "segment": f"segment {cluster}",
        "suggested_action": None,
        "listed": listed,
        "contacted": contacted,
        "held_out": held_out,
        "held_out_contacted": 0,
        "churned_listed": churned_contacted,
        "churned_contacted": churned_contacted,
        "churned_held_out": churned_held_out,
    }


# Two high-tier segments with planted effects of +20 and +10 points, each with a tenth of
# its clients held out as the holdout does, and a medium segment nobody called, with no
# effect. Pooled over both tiers the +18.3 points turn into -1.4: contacted 378 of 1080
# left, held out 74 of 220.
MIXED_STRATA = pd.DataFrame(
    [
        _stratum("high", 0, 900, 360, 100, 60),
        _stratum("high", 1, 180, 18, 20, 4),
        _stratum("medium", 2, 0, 0, 100, 10, listed=900),
    ]
)


def test_tier_difference_recovers_planted_effect():
    results = campaigns.campaign_results(dt.date(2026, 10, 1), MIXED_STRATA)
    overall = results[results["level"] == "overall"].iloc[0]
    high = results[(results["level"] == "tier") & (results["risk_tier"] == "high")].iloc[0]
    pooled = 74 / 220 - 378 / 1080

    assert pooled < 0
    # Equal shares held out, so the high tier's plain difference is the segments'
    # differences weighted by their contacted clients.
    assert high.difference == pytest.approx((900 * 0.2 + 180 * 0.1) / 1080)
    assert (high.ci_lower, high.ci_upper) == pytest.approx(_newcombe(64, 120, 378, 1080))
    assert overall.difference == pytest.approx(high.difference)
    assert overall.ci_upper - overall.ci_lower == pytest.approx(high.ci_upper - high.ci_lower)
    assert overall.clients_kept == pytest.approx(198)
    assert overall.churn_rate_held_out_weighted == pytest.approx(64 / 120)


def test_overall_leaves_out_uncontacted_tier():
    results = campaigns.campaign_results(dt.date(2026, 10, 1), MIXED_STRATA)
    overall = results[results["level"] == "overall"].iloc[0]
    tiers = results[results["level"] == "tier"].set_index("risk_tier")

    assert (overall.held_out, overall.held_out_measured) == (220, 120)
    assert (overall.strata_measured, overall.contacted_measured) == (1, 1080)
    assert tiers.loc["high", "difference"] == pytest.approx(overall.difference)
    assert tiers.loc["medium", "strata_measured"] == 0
    assert math.isnan(tiers.loc["medium", "difference"])
    assert math.isnan(tiers.loc["medium", "clients_kept"])


def test_tier_variance_matches_statsmodels():
    # One tier: the standard error is the half-width of statsmodels' Newcombe interval.
    lower, upper = confint_proportions_2indep(30, 50, 320, 800, method="newcomb")
    estimate = campaigns.stratified_difference([30], [50], [320], [800], [800])

    assert estimate.standard_error == pytest.approx((upper - lower) / (2 * Z))
    assert estimate.difference == pytest.approx(0.6 - 0.4)


# Tier sizes like the simulated month's: about 500 high and 90 medium clients on the list,
# of whom a tenth is held out, churning at 88 % and 35 % without contacts.
TIER_CONTACTED = np.array([450, 81])
TIER_HELD_OUT = np.array([50, 9])
TIER_CHURN = np.array([0.88, 0.35])
DRAWS = 400


def _overall_coverage(effect: np.ndarray, seed: int) -> tuple[float, float]:
    """Draw outcomes with ``effect`` per tier; return the truth and how often it is covered."""
    generator = np.random.default_rng(seed)
    truth = float(np.sum(TIER_CONTACTED * effect) / TIER_CONTACTED.sum())
    covered = 0
    for _ in range(DRAWS):
        churned_contacted = generator.binomial(TIER_CONTACTED, TIER_CHURN - effect)
        churned_held_out = generator.binomial(TIER_HELD_OUT, TIER_CHURN)
        estimate = campaigns.stratified_difference(
            churned_held_out, TIER_HELD_OUT, churned_contacted, TIER_CONTACTED, TIER_CONTACTED
        )
        covered += estimate.ci_lower <= truth <= estimate.ci_upper
    return truth, covered / DRAWS


@pytest.mark.parametrize(
    ("effect", "truth"),
    [((0.0, 0.0), 0.0), ((0.3, 0.1), (450 * 0.3 + 81 * 0.1) / 531)],
    ids=["no effect", "planted effect"],
)
def test_overall_interval_coverage(effect, truth):
    drawn_truth, coverage = _overall_coverage(np.array(effect), seed=2026)

    assert drawn_truth == pytest.approx(truth)
    assert coverage >= 0.90
    assert coverage <= 0.99


def test_overall_ignores_segment_split():
    # The same tier counts split into small segments give the same overall row.
    whole = pd.DataFrame([_stratum("high", 0, 450, 300, 50, 40)])
    split = pd.DataFrame([_stratum("high", cluster, 45, 30, 5, 4) for cluster in range(10)])
    month = dt.date(2026, 10, 1)
    whole_overall = campaigns.campaign_results(month, whole).iloc[0]
    split_overall = campaigns.campaign_results(month, split).iloc[0]

    assert split_overall.difference == pytest.approx(whole_overall.difference)
    assert split_overall.ci_lower == pytest.approx(whole_overall.ci_lower)
    assert split_overall.ci_upper == pytest.approx(whole_overall.ci_upper)


def test_rows_for_reading_order_and_filter():
    results = campaigns.campaign_results(dt.date(2026, 10, 1), MIXED_STRATA)
    shown = campaigns.rows_for_reading(results)

    assert shown["level"].to_list() == ["overall", "tier", "tier", "stratum", "stratum"]
    assert shown["cluster_id"].dropna().to_list() == [0, 1]


def test_too_small_to_read_marks_wide_interval():
    results = campaigns.campaign_results(dt.date(2026, 10, 1), MIXED_STRATA)
    strata = results[results["level"] == "stratum"].set_index("cluster_id")

    # Segment 0 has 100 held-out clients: a Newcombe interval about +-10 points wide.
    # Nobody of segment 2 was contacted, so it has no interval.
    assert not campaigns.too_small_to_read(strata.loc[0])
    assert (strata.loc[0, "ci_upper"] - strata.loc[0, "ci_lower"]) / 2 < 0.2
    assert campaigns.too_small_to_read(strata.loc[2])


def test_min_detectable_effect_by_hand():
    # Cohen's h for 80 % power at the 5 % level; the far tail adds nothing at this size.
    h = (norm.ppf(0.975) + norm.ppf(0.8)) / math.sqrt(1000 * 100 / 1100)
    expected = 0.3 - math.sin(math.asin(math.sqrt(0.3)) - h / 2) ** 2

    assert campaigns.min_detectable_effect(1000, 100, 0.3) == pytest.approx(expected, rel=1e-4)
    assert 0.12 < expected < 0.13


@pytest.mark.parametrize(
    ("contacted", "held_out", "rate"), [(0, 10, 0.3), (10, 0, 0.3), (10, 10, 0.0)]
)
def test_min_detectable_effect_undefined(contacted, held_out, rate):
    assert math.isnan(campaigns.min_detectable_effect(contacted, held_out, rate))
