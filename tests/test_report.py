"""Tests of the monthly HTML report, built from the real questionnaires.

The month's insights come from the real segment, driver and insight functions.
Only the churn scores are simpler than the job's: out-of-fold probabilities of
a plain gradient-boosting model, so the module's fixtures take seconds.
"""

import base64
import dataclasses
import datetime as dt
import html
import html.parser
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from gymchurn import model as churn_model
from gymchurn.batch_rules import Finding
from gymchurn.drivers import find_drivers
from gymchurn.insights import MonthInsights, build_insights
from gymchurn.loader import read_questionnaire_csv
from gymchurn.report import (
    SECTION_HEADINGS,
    BrowserCheckError,
    ChromiumNotFoundError,
    check_in_browser,
    write_report,
)
from gymchurn.schema import CHURNED, CLIENT_ID, MONTH
from gymchurn.segments import segment_clients
from tests.test_cli import _invoke

SEED = 42
N_CLUSTERS = 5
MONTH_OF_REPORT = dt.date(2026, 10, 1)
THRESHOLD = 0.5
# One distributions figure, one correlation heatmap, three driver plots
# (importance, coefficients, churn by value) and four portrait plots
# (churn by segment, differences, silhouette, dendrogram).
EXPECTED_PLOTS = 9
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="chromium is not installed (apt-get install chromium), so the browser check is skipped",
)


@dataclass(frozen=True)
class ReportInputs:
    insights: MonthInsights
    run: dict
    model: dict
    quality: pd.DataFrame
    findings: list


def _out_of_fold(estimator, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)
    predicted = cross_val_predict(estimator, features, labels, cv=folds, method="predict_proba")
    return churn_model.clip(predicted[:, 1])


def _risk_tiers(probabilities: np.ndarray) -> np.ndarray:
    return np.select(
        [probabilities >= THRESHOLD, probabilities >= 0.25], ["high", "medium"], default="low"
    )


def _build_inputs(path: Path) -> ReportInputs:
    loaded = read_questionnaire_csv(path)
    clients = loaded.questionnaires
    reference = clients.merge(loaded.outcomes, on=CLIENT_ID)
    reference[CHURNED] = reference[CHURNED].astype("float64")
    labelled = reference.assign(**{MONTH: pd.Timestamp(MONTH_OF_REPORT)})
    features = churn_model.feature_matrix(reference)
    labels = reference[CHURNED].to_numpy(dtype="int64")

    candidates = {
        "logistic_regression": Pipeline(
            [("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=2000))]
        ),
        "hist_gradient_boosting": Pipeline(
            [
                (
                    "classify",
                    HistGradientBoostingClassifier(
                        max_leaf_nodes=7, max_iter=100, random_state=SEED
                    ),
                )
            ]
        ),
    }
    probabilities = {
        name: _out_of_fold(estimator, features, labels) for name, estimator in candidates.items()
    }
    metrics = {
        name: churn_model.probability_metrics(labels, values, THRESHOLD)
        for name, values in probabilities.items()
    }
    chosen = "hist_gradient_boosting"
    scores = pd.DataFrame(
        {
            CLIENT_ID: reference[CLIENT_ID].to_numpy(),
            "churn_probability": probabilities[chosen],
            "risk_tier": _risk_tiers(probabilities[chosen]),
            "reasons": [[] for _ in range(len(reference))],
        }
    )

    segmentation = segment_clients(clients, reference, n_clusters=N_CLUSTERS, seed=SEED)
    drivers = find_drivers(candidates[chosen], labelled, labelled, seed=SEED)
    insights = build_insights(MONTH_OF_REPORT, clients, reference, scores, segmentation, drivers)

    run = {
        "run_id": "0b7c2f4e-5d1a-4c39-9e8f-2a6b1d3c4e5f",
        "month": MONTH_OF_REPORT,
        "mode": "backtest",
        "rows_read": len(clients) + 3,
        "rows_quarantined": 3,
        "rows_scored": len(clients),
        "model_version": "v202610-0123456789",
        "realised_roc_auc": metrics[chosen]["roc_auc"],
        "data_docs_path": "/srv/gymchurn/data_docs/2026-10/index.html",
    }
    registry_entry = {
        "version": run["model_version"],
        "algorithm": chosen,
        "decision": "promoted challenger",
        "reason": "no champion yet",
        "metrics": {
            "selected_by": "mean Brier score over 5 stratified folds",
            "threshold": THRESHOLD,
            "cross_validation": metrics,
            "time_holdout": {**metrics[chosen], "month": "2026-09", "rows": len(clients)},
            **metrics[chosen],
        },
    }
    quality = pd.DataFrame(
        {
            "dataset": ["month 2026-10", "month 2026-10", "month 2026-10"],
            "rule": ["age_in_range", "lifetime_not_null", "contract_end"],
            "description": [
                "age between 12 and 100",
                "lifetime not null",
                "month_to_end_contract at most contract_period",
            ],
            "failed_rows": [2, 0, 1],
            "examples": ["3 (age=-3), 8 (age=240)", "", "2 (contract_period=1, month_to_end=4)"],
        }
    )
    findings = [
        Finding("null_share", "warning", "lifetime is null in 0.1% of rows, limit <b>5%</b>")
    ]
    return ReportInputs(insights, run, registry_entry, quality, findings)


@pytest.fixture(scope="module")
def inputs(real_data) -> ReportInputs:
    # One OpenMP thread, as in test_segments.py, so a busy machine stays fast.
    with threadpool_limits(limits=1):
        return _build_inputs(real_data)


def _write(inputs: ReportInputs, path: Path, **changes) -> Path:
    arguments = {
        "run": inputs.run,
        "model": inputs.model,
        "quality": inputs.quality,
        "findings": inputs.findings,
        **changes,
    }
    insights = arguments.pop("insights", inputs.insights)
    return write_report(insights, path, **arguments)


@pytest.fixture(scope="module")
def report_file(inputs, tmp_path_factory) -> Path:
    return _write(inputs, tmp_path_factory.mktemp("report") / "reports" / "2026-10.html")


@pytest.fixture(scope="module")
def document(report_file) -> str:
    return report_file.read_text(encoding="utf-8")


class _PageText(html.parser.HTMLParser):
    """Collect a page's visible text, ``<h2>`` headings and ``<img>`` attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.headings: list[str] = []
        self.images: list[dict] = []
        self._skip = 0
        self._heading: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "img":
            self.images.append(dict(attrs))
        elif tag == "h2":
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        elif tag == "h2" and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data):
        if self._skip:
            return
        self.text.append(data)
        if self._heading is not None:
            self._heading.append(data)


def _parse(document: str) -> _PageText:
    page = _PageText()
    page.feed(document)
    page.close()
    return page


def _visible_text(document: str) -> str:
    return " ".join(" ".join(_parse(document).text).split())


def test_write_report_creates_file_of_reasonable_size(report_file):
    assert report_file.is_file()
    size = report_file.stat().st_size
    assert size > 200_000
    assert size < 5_000_000


def test_write_report_leaves_no_temporary_file(report_file):
    assert sorted(p.name for p in report_file.parent.iterdir()) == [report_file.name]


def test_report_has_no_remote_references(document):
    remote = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", document, re.IGNORECASE)
    assert remote == []
    assert "url(" not in document


def test_report_embeds_one_png_per_plot(document):
    images = _parse(document).images
    assert len(images) == EXPECTED_PLOTS
    for image in images:
        assert image["alt"].strip(), image["id"]
        prefix, _, payload = image["src"].partition(",")
        assert prefix == "data:image/png;base64", image["id"]
        assert base64.b64decode(payload, validate=True).startswith(PNG_SIGNATURE), image["id"]


def test_report_declares_plot_count_on_body(document):
    assert f'<body data-plots="{EXPECTED_PLOTS}">' in document


def test_report_has_every_section_heading_in_order(document):
    assert tuple(_parse(document).headings) == SECTION_HEADINGS


def test_report_names_every_cluster(inputs, document):
    text = _visible_text(document)
    names = inputs.insights.clusters["name"].tolist()
    assert len(names) == N_CLUSTERS
    for name in names:
        assert name in text


def test_report_names_top_driver(inputs, document):
    influence = inputs.insights.drivers.influence
    top = influence.loc[influence["rank"] == 1, "label"].item()
    assert top in _visible_text(document)


def test_report_explains_opposite_coefficient_signs(inputs, document):
    influence = inputs.insights.drivers.influence.set_index("feature")
    rates = inputs.insights.drivers.churn_by_value
    total = rates[rates["feature"] == "avg_class_frequency_total"]["churn_rate"]
    text = _visible_text(document)

    # On the real file the lifetime visit rate's coefficient is positive although
    # churn falls as the rate grows, because the last month's rate carries that.
    assert influence.loc["avg_class_frequency_total", "lr_coefficient"] > 0
    assert total.iloc[-1] < total.iloc[0]
    assert (
        "visits a week since the first visit: the coefficient says it raises churn with "
        "the other features held fixed, but alone churn falls from"
    ) in text
    assert "correlated with visits a week last month" in text


def test_report_lists_conclusions_and_patterns(inputs, document):
    text = _visible_text(document)
    assert inputs.insights.conclusions
    for sentence in [*inputs.insights.conclusions, *inputs.insights.patterns]:
        assert " ".join(sentence.split()) in text


def test_report_lists_measures(inputs, document):
    text = _visible_text(document)
    assert not inputs.insights.measures.empty
    for action in inputs.insights.measures["action"]:
        assert " ".join(action.split()) in text


def test_report_summary_counts(inputs, document):
    text = _visible_text(document)
    scored = len(inputs.insights.scores)
    expected = inputs.insights.scores["churn_probability"].sum()
    labelled = len(inputs.insights.reference)
    churned = int(inputs.insights.reference[CHURNED].sum())
    assert f"Expected churners next month {round(expected):,} of {scored:,} scored clients" in text
    assert f"({churned:,} of {labelled:,} labelled clients left)" in text
    assert f"Questionnaires read {inputs.run['rows_read']:,}" in text
    assert "Quarantined 3" in text


def test_report_marks_chosen_model(document):
    assert re.search(r'<tr class="marked"><td>hist_gradient_boosting</td><td>chosen</td>', document)
    assert "<td>logistic_regression</td><td></td>" in document


def test_report_lists_failed_rules_and_findings(document):
    text = _visible_text(document)
    assert "age_in_range age between 12 and 100 2 3 (age=-3), 8 (age=240)" in text
    assert "contract_end" in text
    assert "lifetime_not_null" not in text
    assert "/srv/gymchurn/data_docs/2026-10/index.html" in text


def test_report_escapes_text_from_data(document):
    assert "limit &lt;b&gt;5%&lt;/b&gt;" in document
    assert "<b>5%</b>" not in document


def test_write_report_same_insights_same_bytes(inputs, report_file, tmp_path):
    again = _write(inputs, tmp_path / "again.html")
    assert again.read_bytes() == report_file.read_bytes()


def test_write_report_replaces_existing_file(inputs, tmp_path):
    path = tmp_path / "report.html"
    path.write_text("old report")
    _write(inputs, path)
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_report_follows_month_and_scores(inputs, document, tmp_path):
    month = dt.date(2026, 11, 1)
    scores = inputs.insights.scores.assign(
        churn_probability=inputs.insights.scores["churn_probability"] / 2
    )
    insights = dataclasses.replace(inputs.insights, month=month, scores=scores)
    changed = _write(
        inputs, tmp_path / "changed.html", insights=insights, run={**inputs.run, "month": month}
    ).read_text(encoding="utf-8")
    text = _visible_text(changed)
    expected = scores["churn_probability"].sum()

    assert "<title>Churn report 2026-11</title>" in changed
    assert "<title>Churn report 2026-10</title>" in document
    assert f"Expected churners next month {round(expected):,} of {len(scores):,}" in text
    assert changed != document


def test_report_without_registry_metrics(inputs, tmp_path):
    model = {**inputs.model, "metrics": {}}
    text = _visible_text(_write(inputs, tmp_path / "loaded.html", model=model).read_text())
    assert "The registry has no cross-validation results for this model." in text
    assert "The registry has no time-holdout metrics for this model." in text
    assert "Mean cross-validated metrics" not in text


def test_report_without_findings_or_failures(inputs, tmp_path):
    quality = inputs.quality.assign(failed_rows=0)
    run = {**inputs.run, "data_docs_path": None}
    path = _write(inputs, tmp_path / "clean.html", quality=quality, findings=[], run=run)
    text = _visible_text(path.read_text())
    assert "Every row passed all 3 row rules." in text
    assert "No batch-level findings." in text
    assert "No Data Docs were built for this run." in text


def test_write_report_rejects_month_mismatch(inputs, tmp_path):
    run = {**inputs.run, "month": dt.date(2026, 9, 1)}
    with pytest.raises(ValueError, match="run month 2026-09 differs from the insights' month"):
        _write(inputs, tmp_path / "wrong.html", run=run)
    assert not (tmp_path / "wrong.html").exists()


def test_write_report_rejects_missing_run_key(inputs, tmp_path):
    run = {key: value for key, value in inputs.run.items() if key != "rows_scored"}
    with pytest.raises(ValueError, match=r"run is missing the keys \['rows_scored'\]"):
        _write(inputs, tmp_path / "wrong.html", run=run)


def test_write_report_logs_path_size_and_time(inputs, tmp_path, caplog):
    path = tmp_path / "logged.html"
    with caplog.at_level(logging.INFO, logger="gymchurn.report"):
        _write(inputs, path)
    records = [r for r in caplog.records if r.name == "gymchurn.report"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert str(path) in message
    assert re.search(r"\d+\.\d\d MB, in \d+\.\d s", message)


def test_check_in_browser_missing_chromium(report_file, tmp_path):
    with pytest.raises(ChromiumNotFoundError, match="apt-get install chromium"):
        check_in_browser(report_file, tmp_path / "shot.png", chromium="/nonexistent/chromium")


def test_check_in_browser_missing_report(tmp_path):
    with pytest.raises(BrowserCheckError, match="not found"):
        check_in_browser(tmp_path / "none.html", tmp_path / "shot.png")


def test_check_in_browser_timeout_kills_process_group(report_file, tmp_path):
    pid_file = tmp_path / "helper.pid"
    browser = tmp_path / "hanging-browser"
    # Stands in for a browser that hangs and has a helper process of its own.
    browser.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {pid_file}\nwait\n")
    browser.chmod(0o755)
    with pytest.raises(BrowserCheckError, match="timed out"):
        check_in_browser(report_file, tmp_path / "shot.png", chromium=str(browser), timeout=2)
    helper = Path(f"/proc/{pid_file.read_text().strip()}/stat")
    if helper.exists():
        state = helper.read_text().rsplit(")", 1)[1].split()[0]
        assert state in ("Z", "X")


@needs_chromium
def test_check_in_browser_clean_report(report_file, tmp_path):
    screenshot = tmp_path / "shots" / "report.png"
    check = check_in_browser(report_file, screenshot)
    assert check.broken_images == ()
    assert check.js_errors == ()
    assert check.images == EXPECTED_PLOTS
    assert check.headings == SECTION_HEADINGS
    assert check.screenshot == screenshot
    data = screenshot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert int.from_bytes(data[16:20], "big") == 1280
    # The whole page: taller than a screen, and far more than a blank image.
    assert int.from_bytes(data[20:24], "big") > 3000
    assert len(data) > 200_000


@needs_chromium
def test_check_in_browser_names_broken_image(report_file, tmp_path):
    broken = tmp_path / "broken.html"
    document = report_file.read_text(encoding="utf-8")
    corrupted, count = re.subn(
        r'(id="plot-correlations" src="data:image/png;base64,)[^"]+',
        r"\1AAAAAAAA",
        document,
    )
    assert count == 1
    broken.write_text(corrupted, encoding="utf-8")
    with pytest.raises(BrowserCheckError, match=r"did not decode: plot-correlations$") as error:
        check_in_browser(broken, tmp_path / "shot.png")
    assert str(broken) in str(error.value)


@needs_chromium
def test_check_in_browser_reports_script_error(report_file, tmp_path):
    failing = tmp_path / "failing.html"
    document = report_file.read_text(encoding="utf-8")
    failing.write_text(
        document.replace(
            "</main>", '<script>throw new Error("chart data missing");</script></main>'
        ),
        encoding="utf-8",
    )
    with pytest.raises(BrowserCheckError, match="1 script error.*chart data missing"):
        check_in_browser(failing, tmp_path / "shot.png")


@needs_chromium
def test_check_in_browser_reports_missing_image(report_file, tmp_path):
    missing = tmp_path / "missing.html"
    document = report_file.read_text(encoding="utf-8")
    shortened, count = re.subn(r'<img id="plot-silhouette"[^>]*>', "", document)
    assert count == 1
    missing.write_text(shortened, encoding="utf-8")
    with pytest.raises(BrowserCheckError, match=f"8 image.*the report embedded {EXPECTED_PLOTS}"):
        check_in_browser(missing, tmp_path / "shot.png")


@needs_chromium
def test_check_report_command_clean_report(report_file, tmp_path):
    screenshot = tmp_path / "report.png"
    result = _invoke("check-report", str(report_file), "--screenshot", str(screenshot))

    assert result.exit_code == 0, result.output
    assert f"{EXPECTED_PLOTS} plots rendered, {len(SECTION_HEADINGS)} sections" in result.stdout
    assert str(screenshot.resolve()) in result.stdout
    assert screenshot.read_bytes().startswith(PNG_SIGNATURE)


@needs_chromium
def test_check_report_command_fails_on_missing_plot(report_file, tmp_path):
    missing = tmp_path / "missing.html"
    document = report_file.read_text(encoding="utf-8")
    missing.write_text(re.sub(r'<img id="plot-dendrogram"[^>]*>', "", document), encoding="utf-8")

    result = _invoke("check-report", str(missing))

    assert result.exit_code == 1
    assert f"8 image(s) on the page, but the report embedded {EXPECTED_PLOTS}" in result.output
    assert not missing.with_suffix(".png").exists()


def test_check_report_command_without_chromium(report_file, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))

    result = _invoke("check-report", str(report_file), "--screenshot", str(tmp_path / "s.png"))

    assert result.exit_code == 1
    assert "Chromium not found" in result.output
    assert "apt-get install chromium" in result.output


@pytest.mark.parametrize(
    ("low", "high", "noted"),
    [(0.231, 0.234, False), (0.20, 0.30, True), (0.30, 0.20, False)],
)
def test_sign_note_only_for_a_visible_opposite_trend(real_data, low, high, noted):
    """A coefficient that lowers churn contradicts a rate that visibly rises."""
    from gymchurn.report import _sign_notes

    reference = read_questionnaire_csv(real_data).questionnaires
    influence = pd.DataFrame(
        {"feature": ["phone"], "lr_coefficient": [-0.4], "direction": ["lowers churn"]}
    )
    churn_by_value = pd.DataFrame(
        {"feature": ["phone", "phone"], "value": [0, 1], "churn_rate": [low, high]}
    )

    notes = _sign_notes(influence, churn_by_value, reference)

    assert len(notes) == int(noted)
    if noted:
        assert "rises from 20% to 30%" in notes[0]
