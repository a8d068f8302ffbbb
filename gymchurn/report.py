"""The monthly report for management: one self-contained HTML file a month.

Every plot is a PNG embedded as a base64 data URI and the styles are inline, so
the file opens offline and can be mailed as it is. All text about the data is
computed from the month's ``MonthInsights`` and the run's facts. Fixed text is
limited to headings, labels, notes on what is missing, and captions that
describe what each plot shows.

``check_in_browser`` opens a written report in headless Chromium, takes a
screenshot and reads what the report's inline script recorded on load: the
number of images, those that did not decode, and script errors.
"""

import base64
import html.parser
import io
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from scipy.cluster import hierarchy

from gymchurn.campaigns import READABLE_HALF_WIDTH, rows_for_reading, too_small_to_read
from gymchurn.insights import MonthInsights
from gymchurn.schema import (
    CHURNED,
    FEATURE_LABELS,
    FEATURES,
    INTEGER_FEATURES,
    format_month,
)

logger = logging.getLogger(__name__)

RUN_KEYS = (
    "run_id",
    "month",
    "mode",
    "rows_read",
    "rows_quarantined",
    "rows_scored",
    "model_version",
    "realised_roc_auc",
    "data_docs_path",
)
MODEL_KEYS = ("version", "algorithm", "decision", "reason", "metrics")
QUALITY_COLUMNS = ("dataset", "rule", "description", "failed_rows", "examples")

# Metric key -> column title, in the order of the model comparison table.
METRIC_TITLES = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "brier": "Brier score",
    "ece": "ECE",
    "log_loss": "log loss",
    "precision": "precision",
    "recall": "recall",
    "accuracy": "accuracy",
}

# Section id -> heading, in report order.
SECTIONS = {
    "summary": "Summary",
    "data": "Data overview",
    "distributions": "Feature distributions by churn",
    "correlations": "Correlation matrix",
    "model": "Model comparison",
    "drivers": "Churn drivers",
    "portraits": "Client portraits",
    "targets": "Target groups and measures",
    "campaign": "Did last month's actions work?",
    "patterns": "Other patterns",
    "quality": "Data quality",
}
SECTION_HEADINGS = tuple(SECTIONS.values())

# Drivers whose churn rate by value gets a panel, and whose means the cluster table shows.
TOP_DRIVERS = 4

# Branches the dendrogram is cut to: more leaves than this are unreadable at page width.
DENDROGRAM_LEAVES = 30

# Integer features with at most this many distinct values get bars, others histograms.
MAX_BAR_VALUES = 12
HISTOGRAM_BINS = 20

_DPI = 100
# PNG metadata: matplotlib writes its version as "Software" by default. Without
# it and without any time stamp, the same data gives the same bytes.
_PNG_METADATA = {"Software": None}
_STAYED_COLOUR = "#4c72b0"
_LEFT_COLOUR = "#dd8452"
_MISSING = "–"

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("gymchurn", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Plot:
    """One embedded plot of the report."""

    id: str
    """The ``<img>`` element's id, also used in error messages."""
    src: str
    """``data:image/png;base64,...`` URI of the PNG."""
    alt: str
    caption: str


@dataclass(frozen=True)
class Table:
    """A table of preformatted cells, with numeric columns right-aligned."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]
    marked_rows: tuple[int, ...] = ()
    """Positions of rows shown highlighted, for example the chosen model."""


# ---------------------------------------------------------------------------
# Writing the report


def write_report(
    insights: MonthInsights,
    path: Path,
    *,
    run: dict,
    model: dict,
    quality: pd.DataFrame,
    findings: list,
    campaign=None,
) -> Path:
    """Render the month's report and write it to ``path`` atomically.

    The HTML is written to a temporary file in the same folder and then renamed,
    so a reader never sees half a report. Parent folders are created. The same
    arguments give the same bytes.

    Args:
        insights: the month's segments, drivers, target groups and findings.
        run: the run's facts, with the keys of ``RUN_KEYS``.
        model: the scoring model's registry entry, with the keys of ``MODEL_KEYS``.
            ``metrics["cross_validation"]`` and ``metrics["time_holdout"]`` may
            be missing, and the report then shows the metrics that are there.
        quality: the row rules of the run's validation, with the columns of
            ``QUALITY_COLUMNS``.
        findings: batch-level findings with ``rule``, ``severity`` and ``message``.
        campaign: the run's :class:`gymchurn.campaigns.Measurement`, whose
            previous month's results fill the section on last month's actions;
            None says that nothing was measured.

    Returns:
        ``path``.

    Raises:
        ValueError: a key of ``run`` or ``model`` or a column of ``quality`` is
            missing, or ``run["month"]`` is not the month of ``insights``.
    """
    started = time.perf_counter()
    document = render_report(
        insights, run=run, model=model, quality=quality, findings=findings, campaign=campaign
    )
    data = document.encode("utf-8")
    path = Path(path)
    _write_atomically(path, data)
    logger.info(
        "report: %s written, %.2f MB, in %.1f s",
        path,
        len(data) / 1_000_000,
        time.perf_counter() - started,
    )
    return path


# Parts a section may have, rendered in this order. Each section fills some of them.
_EMPTY_SECTION = {
    "facts": [],
    "bullets_title": "",
    "bullets": [],
    "notes": [],
    "tables": [],
    "plots": [],
}


def _listed(items: list[str], empty_note: str, title: str = "") -> dict:
    if not items:
        return {"bullets_title": title, "notes": [empty_note]}
    return {"bullets_title": title, "bullets": list(items)}


def render_report(
    insights: MonthInsights,
    *,
    run: dict,
    model: dict,
    quality: pd.DataFrame,
    findings: list,
    campaign=None,
) -> str:
    """Render the report's HTML. ``write_report`` documents the arguments and errors."""
    _check_inputs(insights, run, model, quality)
    sections = {
        "summary": _summary(insights, run, model),
        "data": _data_overview(insights),
        "distributions": _distributions(insights.reference),
        "correlations": _correlations(insights.reference),
        "model": _model_comparison(model),
        "drivers": _drivers(insights),
        "portraits": _portraits(insights),
        "targets": _targets(insights),
        "campaign": _campaign(campaign),
        "patterns": _listed(insights.patterns, "No other patterns were found this month."),
        "quality": _quality(run, quality, findings),
    }
    sections = {key: {**_EMPTY_SECTION, **parts} for key, parts in sections.items()}
    n_plots = sum(len(section["plots"]) for section in sections.values())
    return _TEMPLATES.get_template("report.html.j2").render(
        title=f"Churn report {format_month(insights.month)}",
        headings=SECTIONS,
        sections=sections,
        n_plots=n_plots,
    )


def _check_inputs(insights: MonthInsights, run: dict, model: dict, quality: pd.DataFrame) -> None:
    missing_run = [key for key in RUN_KEYS if key not in run]
    if missing_run:
        raise ValueError(f"run is missing the keys {missing_run}; expected all of {RUN_KEYS}")
    missing_model = [key for key in MODEL_KEYS if key not in model]
    if missing_model:
        raise ValueError(f"model is missing the keys {missing_model}; expected all of {MODEL_KEYS}")
    missing_columns = [column for column in QUALITY_COLUMNS if column not in quality.columns]
    if missing_columns:
        raise ValueError(
            f"quality is missing the columns {missing_columns}; expected {QUALITY_COLUMNS}"
        )
    if format_month(run["month"]) != format_month(insights.month):
        raise ValueError(
            f"run month {format_month(run['month'])} differs from the insights' month "
            f"{format_month(insights.month)}; pass the facts of the run that built them"
        )


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp creates the file readable by its owner only, but a report is for sharing.
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------
# Formatting


def _is_missing(value) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _count(value) -> str:
    if _is_missing(value):
        return _MISSING
    return f"{round(float(value)):,}"


def _percent(value) -> str:
    if _is_missing(value):
        return _MISSING
    return f"{100 * float(value):.1f}%"


def _decimal(value, digits: int = 2) -> str:
    if _is_missing(value):
        return _MISSING
    return f"{float(value):,.{digits}f}"


def _label(feature: str) -> str:
    return FEATURE_LABELS.get(feature, feature)


def _joined(items) -> str:
    if isinstance(items, str):
        return items
    return "; ".join(str(item) for item in items)


def _wrapped(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def _cluster_label(cluster_id, name: str) -> str:
    return f"{cluster_id}: {name}"


def _tier_counts(scores: pd.DataFrame) -> dict[str, int]:
    counts = scores["risk_tier"].value_counts()
    return {tier: int(counts.get(tier, 0)) for tier in ("high", "medium", "low")}


# ---------------------------------------------------------------------------
# Figures


def _new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    # A Figure with its own Agg canvas, not pyplot: nothing is registered
    # globally, no GUI backend is chosen, and the figure is freed with its
    # last reference.
    figure = Figure(figsize=(width, height), dpi=_DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _encoded_png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, metadata=_PNG_METADATA)
    figure.clear()
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _annotate_cells(axes, values: np.ndarray, limit: float, digits: int) -> None:
    """Write each cell's value on a heatmap, white on dark cells."""
    for row in range(values.shape[0]):
        for column in range(values.shape[1]):
            value = values[row, column]
            if np.isnan(value):
                continue
            colour = "white" if abs(value) > 0.6 * limit else "black"
            # Adding 0.0 turns a rounded -0.0 into 0.0.
            axes.text(
                column,
                row,
                f"{round(value, digits) + 0.0:.{digits}f}",
                ha="center",
                va="center",
                fontsize=7,
                color=colour,
            )


def _split_by_churn(reference: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    churned = reference[CHURNED].astype("float64") == 1.0
    return reference[~churned], reference[churned]


def _is_discrete(feature: str, values: pd.Series) -> bool:
    return feature in INTEGER_FEATURES and values.nunique() <= MAX_BAR_VALUES


def _draw_distribution(axes, feature: str, stayed: pd.Series, left: pd.Series) -> None:
    combined = pd.concat([stayed, left]).dropna()
    if _is_discrete(feature, combined):
        values = np.sort(combined.unique())
        positions = np.arange(len(values))
        for offset, group, colour, name in (
            (-0.2, stayed, _STAYED_COLOUR, "stayed"),
            (0.2, left, _LEFT_COLOUR, "left"),
        ):
            shares = group.value_counts(normalize=True).reindex(values, fill_value=0.0)
            axes.bar(positions + offset, shares.to_numpy(), width=0.4, color=colour, label=name)
        axes.set_xticks(positions, [f"{value:g}" for value in values])
        axes.set_ylabel("share of group", fontsize=8)
    else:
        edges = np.histogram_bin_edges(combined.to_numpy(dtype="float64"), bins=HISTOGRAM_BINS)
        for group, colour, name in (
            (stayed, _STAYED_COLOUR, "stayed"),
            (left, _LEFT_COLOUR, "left"),
        ):
            if group.notna().any():
                axes.hist(
                    group.dropna().to_numpy(dtype="float64"),
                    bins=edges,
                    density=True,
                    color=colour,
                    alpha=0.55,
                    label=name,
                )
        axes.set_ylabel("density", fontsize=8)
    axes.set_title(_wrapped(_label(feature), 34), fontsize=9)
    axes.tick_params(labelsize=7)


def _distributions_plot(reference: pd.DataFrame) -> Plot:
    stayed, left = _split_by_churn(reference)
    n_columns = 4
    n_rows = math.ceil(len(FEATURES) / n_columns)
    # A fixed layout: on a 2-core machine the constrained one took 1.2 s of this
    # figure's 1.5 s.
    figure = _new_figure(12.5, 2.6 * n_rows, layout=None)
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.04, top=0.96, wspace=0.3, hspace=0.4)
    grid = figure.subplots(n_rows, n_columns)
    for axes, feature in zip(grid.flat, FEATURES, strict=False):
        _draw_distribution(axes, feature, stayed[feature], left[feature])

    spare = list(grid.flat)[len(FEATURES) :]
    for axes in spare:
        axes.set_axis_off()
    handles, labels = grid.flat[0].get_legend_handles_labels()
    legend_place = spare[0] if spare else figure
    legend_place.legend(handles, labels, loc="center", fontsize=11, title="reference clients")

    return Plot(
        "plot-distributions",
        _encoded_png(figure),
        f"Distribution of each of the {len(FEATURES)} features among the "
        f"{len(stayed):,} clients who stayed and the {len(left):,} who left",
        "Each panel compares clients who stayed (blue) with those who left (orange). Features "
        f"with at most {MAX_BAR_VALUES} values, such as yes/no and contract features, show the "
        "share of each group at each value; the others show histograms scaled so that each "
        "group's bars cover the same area.",
    )


def _correlation_plot(reference: pd.DataFrame) -> Plot:
    columns = [*FEATURES, CHURNED]
    correlation = reference[columns].astype("float64").corr().to_numpy()
    labels = [_label(column) if column != CHURNED else "left the next month" for column in columns]
    figure = _new_figure(10, 8.5)
    axes = figure.subplots()
    image = axes.imshow(correlation, cmap="RdBu_r", vmin=-1, vmax=1)
    positions = np.arange(len(columns))
    axes.set_xticks(positions, labels, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(positions, labels, fontsize=8)
    _annotate_cells(axes, correlation, 1.0, 2)
    figure.colorbar(image, ax=axes, shrink=0.8, label="Pearson correlation")

    strongest = _strongest_churn_correlation(correlation, columns)

    return Plot(
        "plot-correlations",
        _encoded_png(figure),
        f"Heatmap of the Pearson correlations of the {len(FEATURES)} features and churn; "
        f"the strongest with churn: {strongest}",
        "Pearson correlation of every pair of features and of churn among the reference "
        "clients. Red cells move together, blue cells in opposite directions.",
    )


def _strongest_churn_correlation(correlation: np.ndarray, columns: list[str]) -> str:
    with_churn = pd.Series(correlation[-1, :-1], index=columns[:-1]).dropna()
    if with_churn.empty:
        return "none measurable"
    feature = with_churn.abs().idxmax()
    return f"{_label(feature)} ({with_churn[feature]:+.2f})"


def _importance_plot(influence: pd.DataFrame) -> Plot:
    ordered = influence.sort_values("rank", ascending=False)
    figure = _new_figure(9, 0.3 * len(ordered) + 1.0)
    axes = figure.subplots()
    positions = np.arange(len(ordered))
    axes.barh(
        positions,
        ordered["permutation_importance"].to_numpy(dtype="float64"),
        xerr=ordered["permutation_std"].to_numpy(dtype="float64"),
        color=_STAYED_COLOUR,
        ecolor="black",
        capsize=3,
    )
    axes.set_yticks(positions, [_wrapped(label, 40) for label in ordered["label"]])
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel("drop in held-out ROC-AUC when the feature is shuffled")
    axes.tick_params(labelsize=8)
    top = influence.sort_values("rank").iloc[0]

    return Plot(
        "plot-importance",
        _encoded_png(figure),
        f"Bar chart of permutation importance by feature; largest: {top['label']} "
        f"({top['permutation_importance']:.3f})",
        "How much the model's ROC-AUC on held-out clients falls when one feature's values are "
        "shuffled; the error bars are one standard deviation over the repeats.",
    )


def _coefficient_plot(influence: pd.DataFrame) -> Plot:
    ordered = influence.sort_values("rank", ascending=False)
    coefficients = ordered["lr_coefficient"].to_numpy(dtype="float64")
    colours = np.where(coefficients > 0, _LEFT_COLOUR, _STAYED_COLOUR)
    figure = _new_figure(9, 0.3 * len(ordered) + 1.0)
    axes = figure.subplots()
    positions = np.arange(len(ordered))
    axes.barh(positions, coefficients, color=colours)
    axes.set_yticks(positions, [_wrapped(label, 40) for label in ordered["label"]])
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel("standardised logistic-regression coefficient (positive raises churn)")
    axes.tick_params(labelsize=8)
    n_raising = int((coefficients > 0).sum())

    return Plot(
        "plot-coefficients",
        _encoded_png(figure),
        f"Bar chart of logistic-regression coefficients: {n_raising} features raise churn, "
        f"{len(coefficients) - n_raising} lower it",
        "Coefficients of a logistic regression on standardised features, in the order of the "
        "importance chart. Orange bars raise the churn probability, blue bars lower it.",
    )


def _churn_by_value_plot(churn_by_value: pd.DataFrame, top: list[str], overall: float) -> Plot:
    n_columns = 2
    n_rows = math.ceil(len(top) / n_columns)
    figure = _new_figure(12, 3.3 * n_rows)
    grid = np.atleast_1d(figure.subplots(n_rows, n_columns, squeeze=False))
    for axes, feature in zip(grid.flat, top, strict=False):
        bins = churn_by_value[churn_by_value["feature"] == feature].sort_values("bin_order")
        rates = bins["churn_rate"].to_numpy(dtype="float64")
        positions = np.arange(len(bins))
        axes.bar(positions, rates, color=_LEFT_COLOUR)
        for position, rate, clients in zip(positions, rates, bins["clients"], strict=True):
            axes.annotate(
                f"{100 * rate:.0f}%\n({_count(clients)})",
                (position, rate),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
            )
        if not _is_missing(overall):
            axes.axhline(overall, color="black", linestyle="--", linewidth=0.8)
        axes.set_xticks(
            positions,
            bins["bin_label"].astype(str),
            fontsize=7,
            rotation=30 if len(bins) > 6 else 0,
        )
        axes.set_ylim(0, min(1.0, max(float(np.nanmax(rates, initial=0.0)), 0.05) * 1.3))
        axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        axes.set_ylabel("churn rate", fontsize=8)
        axes.set_title(_label(feature), fontsize=9)
        axes.tick_params(labelsize=7)
    for axes in list(grid.flat)[len(top) :]:
        axes.set_axis_off()

    return Plot(
        "plot-churn-by-value",
        _encoded_png(figure),
        f"Bar charts of the churn rate by value or bin of the top {len(top)} drivers: "
        + ", ".join(_label(feature) for feature in top),
        "Churn rate of the reference clients in each value or bin of the strongest drivers, "
        "with the number of clients in brackets; the dashed line is the overall churn rate.",
    )


def _cluster_churn_plot(clusters: pd.DataFrame) -> Plot:
    ordered = clusters.sort_values("cluster_id", ascending=False)
    labels = [
        _wrapped(_cluster_label(row.cluster_id, row.name), 45)
        for row in ordered[["cluster_id", "name"]].itertuples(index=False)
    ]
    positions = np.arange(len(ordered))

    figure = _new_figure(10, 0.75 * len(ordered) + 1.3)
    axes = figure.subplots()
    axes.barh(
        positions + 0.2,
        ordered["churn_rate"].to_numpy(dtype="float64"),
        height=0.4,
        color=_LEFT_COLOUR,
        label="churn rate of the reference clients",
    )
    axes.barh(
        positions - 0.2,
        ordered["expected_churn_rate"].to_numpy(dtype="float64"),
        height=0.4,
        color="#8c8c8c",
        label="mean predicted probability this month",
    )
    axes.set_yticks(positions, labels, fontsize=8)
    axes.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes.set_xlabel("share of the segment's clients")
    axes.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2)

    rates = clusters["churn_rate"].astype("float64")
    detail = ""
    if rates.notna().any():
        highest = clusters.loc[rates.idxmax()]
        detail = f"; highest: {highest['name']} ({_percent(highest['churn_rate'])})"

    return Plot(
        "plot-cluster-churn",
        _encoded_png(figure),
        f"Bar chart of the churn rate of each of the {len(clusters)} segments{detail}",
        "Churn rate of each segment among the reference clients (orange) and the mean churn "
        "probability of the segment's clients this month (grey).",
    )


def _differences_plot(differences: pd.DataFrame, clusters: pd.DataFrame) -> Plot:
    names = clusters.set_index("cluster_id")["name"]
    columns = [feature for feature in FEATURES if feature in differences.columns]
    values = differences[columns].to_numpy(dtype="float64")
    limit = max(float(np.nanmax(np.abs(values), initial=0.0)), 0.5)

    figure = _new_figure(12.5, 0.65 * len(differences) + 3.2)
    axes = figure.subplots()
    image = axes.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    axes.set_xticks(
        np.arange(len(columns)),
        [_wrapped(_label(feature), 18) for feature in columns],
        rotation=60,
        ha="right",
        fontsize=8,
    )
    axes.set_yticks(
        np.arange(len(differences)),
        [_wrapped(_cluster_label(i, names.get(i, "")), 40) for i in differences.index],
        fontsize=8,
    )
    _annotate_cells(axes, values, limit, 1)
    figure.colorbar(image, ax=axes, label="standard deviations from the base mean")

    row, column = np.unravel_index(np.nanargmax(np.abs(values)), values.shape)

    return Plot(
        "plot-differences",
        _encoded_png(figure),
        f"Heatmap of each segment's mean against the base mean per feature; largest gap: "
        f"{_label(columns[column])} in segment {differences.index[row]} "
        f"({values[row, column]:+.1f})",
        "How far each segment's mean lies from the mean of all clients, in standard deviations. "
        "Red: the segment has more of the feature, blue: less.",
    )


def _silhouette_plot(silhouette: pd.DataFrame, n_clusters: int) -> Plot:
    ordered = silhouette.sort_values("n_clusters")
    counts = ordered["n_clusters"].to_numpy(dtype="int64")
    scores = ordered["silhouette"].to_numpy(dtype="float64")

    figure = _new_figure(8, 3.6)
    axes = figure.subplots()
    axes.plot(counts, scores, marker="o", color=_STAYED_COLOUR)
    chosen = counts == n_clusters
    axes.plot(
        counts[chosen],
        scores[chosen],
        marker="o",
        markersize=11,
        linestyle="none",
        markerfacecolor="none",
        markeredgecolor=_LEFT_COLOUR,
        markeredgewidth=2,
        label=f"chosen: {n_clusters} segments",
    )
    axes.set_xticks(counts)
    axes.set_xlabel("number of segments")
    axes.set_ylabel("silhouette score")
    axes.legend(fontsize=8)

    best = counts[int(np.nanargmax(scores))]

    return Plot(
        "plot-silhouette",
        _encoded_png(figure),
        f"Line chart of the silhouette score for {counts.min()} to {counts.max()} segments; "
        f"highest at {best}, {n_clusters} chosen",
        "Silhouette score of k-means for each number of segments tried: higher means "
        "segments that are more compact and better separated.",
    )


def _dendrogram_plot(linkage: np.ndarray, n_clusters: int) -> Plot:
    n_clients = linkage.shape[0] + 1
    leaves = min(DENDROGRAM_LEAVES, n_clients)
    # Colour the branches below the cut that leaves n_clusters groups.
    heights = np.sort(linkage[:, 2])
    threshold = heights[-(n_clusters - 1)] if 1 < n_clusters <= len(heights) else 0.0

    figure = _new_figure(12, 4.5)
    axes = figure.subplots()
    hierarchy.dendrogram(
        linkage,
        ax=axes,
        truncate_mode="lastp",
        p=leaves,
        show_leaf_counts=True,
        leaf_rotation=90,
        leaf_font_size=8,
        color_threshold=threshold * 0.999,
        above_threshold_color="#8c8c8c",
    )
    axes.set_ylabel("Ward distance")
    axes.set_xlabel("branches, with the number of clients in brackets")

    return Plot(
        "plot-dendrogram",
        _encoded_png(figure),
        f"Dendrogram of a Ward clustering of {n_clients:,} sampled clients, cut to "
        f"{leaves} branches",
        f"Hierarchical (Ward) clustering of a sample of {n_clients:,} clients on standardised "
        f"features, cut so that the last {leaves} clusters it formed are its leaves. Coloured "
        f"branches are the {n_clusters} groups the tree splits into at that number.",
    )


# ---------------------------------------------------------------------------
# Sections


def _summary(insights: MonthInsights, run: dict, model: dict) -> dict:
    reference = insights.reference
    churned = reference[CHURNED].astype("float64")
    probabilities = insights.scores["churn_probability"].astype("float64")
    tiers = _tier_counts(insights.scores)
    facts = [
        ("Month", format_month(insights.month)),
        ("Run", f"{run['run_id']} ({run['mode']})"),
        ("Questionnaires read", _count(run["rows_read"])),
        ("Quarantined", _count(run["rows_quarantined"])),
        ("Scored", _count(run["rows_scored"])),
        (
            "Churn rate of the reference",
            f"{_percent(churned.mean())} ({_count(churned.sum())} of "
            f"{_count(len(reference))} labelled clients left)",
        ),
        (
            "Expected churners next month",
            f"{_count(probabilities.sum())} of {_count(len(probabilities))} scored clients "
            f"({_percent(probabilities.mean())})",
        ),
        ("Risk tiers", ", ".join(f"{tier} {count:,}" for tier, count in tiers.items())),
        ("Model", f"{model['version']} ({model['algorithm']}, {model['decision']})"),
    ]
    if not _is_missing(run["realised_roc_auc"]):
        facts.append(("Realised ROC-AUC of this month", _decimal(run["realised_roc_auc"], 3)))
    conclusions = _listed(
        insights.conclusions, "No conclusions were computed for this month.", "Conclusions"
    )
    return {"facts": facts, **conclusions}


def _data_overview(insights: MonthInsights) -> dict:
    stayed, left = _split_by_churn(insights.reference)
    rows = []
    for feature in FEATURES:
        rows.append(
            (
                _label(feature),
                _decimal(insights.clients[feature].astype("float64").mean()),
                _decimal(stayed[feature].astype("float64").mean()),
                _decimal(left[feature].astype("float64").mean()),
            )
        )
    table = Table(
        ("feature", "this month's clients", "stayed", "left"),
        tuple(rows),
        (False, True, True, True),
    )
    facts = [
        ("Clients this month", _count(len(insights.clients))),
        ("Labelled reference clients", _count(len(insights.reference))),
        ("Of them stayed", _count(len(stayed))),
        ("Of them left", _count(len(left))),
    ]
    return {"facts": facts, "tables": [("Mean of each feature", table)]}


def _distributions(reference: pd.DataFrame) -> dict:
    if reference.empty:
        return {"notes": ["No labelled reference clients, so no distributions by churn."]}
    return {"plots": [_distributions_plot(reference)]}


def _correlations(reference: pd.DataFrame) -> dict:
    if len(reference) < 2:
        return {"notes": ["Fewer than two reference clients: no correlations to show."]}
    return {"plots": [_correlation_plot(reference)]}


def _metric_table(rows: dict[str, dict], chosen: str | None, extra: Sequence[str] = ()) -> Table:
    """Tabulate metrics by algorithm; the row of ``chosen``, if given, is marked and labelled."""
    keys = [key for key in METRIC_TITLES if any(key in metrics for metrics in rows.values())]
    body = []
    marked = []
    for position, (algorithm, metrics) in enumerate(rows.items()):
        cells = [str(algorithm)]
        if chosen is not None:
            cells.append("chosen" if algorithm == chosen else "")
            if algorithm == chosen:
                marked.append(position)
        cells += [str(metrics.get(key, _MISSING)) for key in extra]
        cells += [_decimal(metrics.get(key), 4) for key in keys]
        body.append(tuple(cells))
    marker = ("",) if chosen is not None else ()
    return Table(
        ("algorithm", *marker, *extra, *(METRIC_TITLES[key] for key in keys)),
        tuple(body),
        (False, *(False for _ in marker), *(True for _ in extra), *(True for _ in keys)),
        tuple(marked),
    )


def _model_comparison(model: dict) -> dict:
    metrics = model["metrics"] or {}
    chosen = model["algorithm"]
    facts = [
        ("Version", str(model["version"])),
        ("Algorithm", str(chosen)),
        ("Decision", str(model["decision"])),
        ("Reason", str(model["reason"])),
    ]
    for key, title in (
        ("selected_by", "Selected by"),
        ("threshold", "Decision threshold"),
        ("calibration", "Calibration"),
    ):
        if key in metrics:
            facts.append((title, str(metrics[key])))
    if "hyperparameters" in metrics:
        facts.append(("Hyperparameters", json.dumps(metrics["hyperparameters"], sort_keys=True)))

    tables = []
    notes = []
    cross_validation = metrics.get("cross_validation")
    if cross_validation:
        tables.append(
            (
                "Mean cross-validated metrics of each candidate",
                _metric_table(cross_validation, chosen),
            )
        )
    else:
        notes.append("The registry has no cross-validation results for this model.")
        own = {key: metrics[key] for key in METRIC_TITLES if key in metrics}
        if own:
            tables.append(("Metrics recorded for the model", _metric_table({chosen: own}, None)))
    holdout = metrics.get("time_holdout")
    if holdout:
        tables.append(
            (
                "Metrics on the latest labelled month, held out from training",
                _metric_table({chosen: holdout}, None, extra=("month", "rows")),
            )
        )
    else:
        notes.append("The registry has no time-holdout metrics for this model.")
    return {"facts": facts, "tables": tables, "notes": notes}


def _top_features(influence: pd.DataFrame) -> list[str]:
    return influence.sort_values("rank")["feature"].head(TOP_DRIVERS).tolist()


def _drivers(insights: MonthInsights) -> dict:
    drivers = insights.drivers
    influence = drivers.influence.sort_values("rank")
    rows = tuple(
        (
            str(row.rank),
            str(row.label),
            f"{row.permutation_importance:.4f} ± {row.permutation_std:.4f}",
            f"{row.lr_coefficient:+.3f}",
            str(row.direction),
        )
        for row in influence.itertuples(index=False)
    )
    table = Table(
        ("rank", "feature", "permutation importance", "LR coefficient", "direction"),
        rows,
        (True, False, True, True, False),
    )
    facts = [
        ("Held-out labelled clients", _count(drivers.holdout_rows)),
        ("ROC-AUC on them", _decimal(drivers.holdout_roc_auc, 3)),
    ]
    overall = insights.reference[CHURNED].astype("float64").mean()
    plots = [_importance_plot(influence), _coefficient_plot(influence)]
    top = [f for f in _top_features(influence) if (drivers.churn_by_value["feature"] == f).any()]
    if top:
        plots.append(_churn_by_value_plot(drivers.churn_by_value, top, overall))
    return {
        "facts": facts,
        "tables": [("Influence of each feature", table)],
        "notes": _sign_notes(influence, drivers.churn_by_value, insights.reference),
        "plots": plots,
    }


def _sign_notes(
    influence: pd.DataFrame, churn_by_value: pd.DataFrame, reference: pd.DataFrame
) -> list[str]:
    """Name each feature whose coefficient's sign differs from its churn rate alone.

    The coefficient holds the other features fixed, so a feature strongly
    correlated with another can take the opposite sign of its own trend.
    """
    correlation = reference[list(FEATURES)].astype("float64").corr()
    notes = []
    for row in influence.itertuples(index=False):
        rates = churn_by_value[churn_by_value["feature"] == row.feature]["churn_rate"]
        if len(rates) < 2 or row.lr_coefficient == 0:
            continue
        # Rates that read the same in whole percents show no trend to contradict.
        if f"{rates.iloc[0]:.0%}" == f"{rates.iloc[-1]:.0%}":
            continue
        rises = rates.iloc[-1] > rates.iloc[0]
        if rises == (row.lr_coefficient > 0):
            continue
        partners = correlation[row.feature].drop(row.feature).abs().dropna()
        text = (
            f"{_label(row.feature)}: the coefficient says it {row.direction} with the other "
            f"features held fixed, but alone churn {'rises' if rises else 'falls'} from "
            f"{rates.iloc[0]:.0%} to {rates.iloc[-1]:.0%} across its values"
        )
        if not partners.empty:
            partner = partners.idxmax()
            text += f"; it is {partners[partner]:.2f} correlated with {_label(partner)}"
        notes.append(text + ".")
    return notes


def _portraits(insights: MonthInsights) -> dict:
    clusters = insights.clusters.sort_values("cluster_id")
    key_features = _top_features(insights.drivers.influence)
    rows = []
    for _, row in clusters.iterrows():
        rows.append(
            (
                str(row["cluster_id"]),
                str(row["name"]),
                _count(row["size"]),
                _percent(row["share"]),
                _percent(row["churn_rate"]),
                _decimal(row["expected_churners"], 1),
                _percent(row["expected_churn_rate"]),
                *(_decimal(row[feature]) for feature in key_features),
                _joined(row["traits"]),
            )
        )

    columns = (
        "id",
        "segment",
        "clients",
        "share",
        "churn rate",
        "expected churners",
        "expected churn rate",
        *(f"mean: {_label(feature)}" for feature in key_features),
        "traits",
    )
    numeric = (True, False, True, True, True, True, True, *(True for _ in key_features), False)

    plots = [_cluster_churn_plot(clusters)]
    notes = []
    differences = insights.differences.sort_index()
    if np.isfinite(differences.to_numpy(dtype="float64")).any():
        plots.append(_differences_plot(differences, clusters))
    else:
        notes.append("No segment differences were computed for this month.")
    if not insights.silhouette.empty:
        plots.append(_silhouette_plot(insights.silhouette, len(clusters)))
    else:
        notes.append("No silhouette scores were computed for this month.")
    if insights.linkage.ndim == 2 and len(insights.linkage) > 0:
        plots.append(_dendrogram_plot(insights.linkage, len(clusters)))
    else:
        notes.append("No linkage matrix was computed for this month, so no dendrogram.")

    table = Table(columns, tuple(rows), numeric)
    return {"tables": [("Segments", table)], "plots": plots, "notes": notes}


def _targets(insights: MonthInsights) -> dict:
    groups = insights.target_groups.sort_values("rank")
    group_rows = tuple(
        (
            str(row["rank"]),
            _cluster_label(row["cluster_id"], row["name"]),
            _count(row["size"]),
            _decimal(row["expected_churners"], 1),
            _count(row["high"]),
            _count(row["medium"]),
            _count(row["low"]),
            _joined(row["traits"]),
        )
        for _, row in groups.iterrows()
    )
    measure_rows = tuple(
        (
            str(row["rank"]),
            _cluster_label(row["cluster_id"], row["group"]),
            str(row["measure"]),
            str(row["action"]),
            str(row["why"]),
            _count(row["clients"]),
            _decimal(row["expected_churners"], 1),
        )
        for _, row in insights.measures.iterrows()
    )
    notes = []
    if not group_rows:
        notes.append("No target groups were chosen this month.")
    if not measure_rows:
        notes.append("No recommended measure matched a target group this month.")
    tables = [
        (
            "Segments with the most expected churners",
            Table(
                (
                    "rank",
                    "segment",
                    "clients",
                    "expected churners",
                    "high",
                    "medium",
                    "low",
                    "traits",
                ),
                group_rows,
                (True, False, True, True, True, True, True, False),
            ),
        ),
        (
            "Recommended measures",
            Table(
                ("rank", "group", "measure", "action", "why", "clients", "expected churners"),
                measure_rows,
                (True, False, False, False, False, True, True),
            ),
        ),
    ]
    return {"tables": [(title, table) for title, table in tables if table.rows], "notes": notes}


def _interval(lower, upper) -> str:
    if _is_missing(lower) or _is_missing(upper):
        return _MISSING
    return f"{100 * float(lower):+.1f} to {100 * float(upper):+.1f} points"


def _points(value) -> str:
    if _is_missing(value):
        return _MISSING
    return f"{100 * float(value):+.1f} points"


def _campaign_verdict(overall: pd.Series) -> str:
    """Say in one sentence what the overall interval shows."""
    lower, upper = overall["ci_lower"], overall["ci_upper"]
    detectable = overall["min_detectable_effect"]
    if _is_missing(lower):
        return (
            "The effect cannot be measured: no risk tier has both "
            "contacted and held-out clients with a known outcome."
        )
    if lower > 0:
        return (
            f"The contacts kept clients: held-out clients like the contacted ones left more "
            f"often, by {_interval(lower, upper)} (95 % confidence), about "
            f"{_whole(overall['clients_kept'])} of "
            f"{_count(overall['contacted_measured'])} contacted clients kept."
        )
    if upper < 0:
        return (
            f"The contacted clients left more often than held-out clients like them, by "
            f"{_interval(-upper, -lower)}: the contacts did not keep clients."
        )
    smallest = (
        f"; at this list size only a fall of the churn rate of at least "
        f"{_percent(detectable)} would likely have been seen"
        if not _is_missing(detectable)
        else "; there are too few clients to detect any effect"
    )
    return (
        "The difference cannot be told from chance: its interval "
        f"({_interval(lower, upper)}) contains 0{smallest}."
    )


def _action(title) -> str:
    return title if isinstance(title, str) else "no measure"


def _result_label(row: pd.Series) -> str:
    if row["level"] == "overall":
        return "overall"
    if row["level"] == "tier":
        return f"{row['risk_tier']} tier"
    return f"{row['risk_tier']}, segment {row['cluster_id']}, {_action(row['suggested_action'])}"


def _campaign_plot(results: pd.DataFrame) -> Plot:
    shown = results[results["ci_lower"].notna()].iloc[::-1]
    labels = [_wrapped(_result_label(row), 45) for _, row in shown.iterrows()]
    figure = _new_figure(10, 0.45 * len(shown) + 1.4)
    axes = figure.subplots()
    positions = np.arange(len(shown))
    difference = 100 * shown["difference"].to_numpy(dtype="float64")
    errors = 100 * np.vstack(
        [
            shown["difference"].to_numpy(dtype="float64")
            - shown["ci_lower"].to_numpy(dtype="float64"),
            shown["ci_upper"].to_numpy(dtype="float64")
            - shown["difference"].to_numpy(dtype="float64"),
        ]
    )
    colours = [_LEFT_COLOUR if level != "stratum" else _STAYED_COLOUR for level in shown["level"]]
    for position, colour in enumerate(colours):
        axes.errorbar(
            difference[position],
            position,
            xerr=errors[:, position : position + 1],
            fmt="o",
            color=colour,
            capsize=3,
        )
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_yticks(positions, labels)
    axes.set_xlabel("churn of held-out clients minus churn of contacted clients, points")
    axes.tick_params(labelsize=8)
    return Plot(
        "plot-campaign",
        _encoded_png(figure),
        f"Measured effect of the contacts with 95 % intervals for {len(shown)} groups",
        "Each point is the held-out clients' churn rate minus the contacted clients' churn "
        "rate, in percentage points; the bars are 95 % confidence intervals. A bar right of "
        "0 means the contacts kept clients; a bar across 0 cannot be told from chance.",
    )


def _whole(value) -> str:
    """A number of clients rounded to whole clients, as in 1,234."""
    return _MISSING if _is_missing(value) else _count(round(float(value)))


def _tier_fact(row: pd.Series) -> tuple[str, str]:
    title = f"{str(row['risk_tier']).capitalize()} tier"
    counts = (
        f"{_count(row['listed'])} listed (held-out clients not counted), "
        f"{_count(row['contacted'])} of them contacted, {_count(row['held_out'])} held out"
    )
    if row["contacted_measured"] == 0:
        return title, f"{counts}; not measured, because nobody of the tier was contacted"
    return title, (
        f"{counts}; difference {_points(row['difference'])} "
        f"({_interval(row['ci_lower'], row['ci_upper'])}), about "
        f"{_whole(row['clients_kept'])} clients kept"
    )


def _stratum_note(row: pd.Series) -> str:
    if row["held_out"] == 0:
        return "not measured: nobody held out"
    if too_small_to_read(row):
        if _is_missing(row["min_detectable_effect"]):
            return "too few clients to read: too few clients to detect any effect"
        return (
            f"too few clients to read: interval wider than ±{100 * READABLE_HALF_WIDTH:.0f} points"
        )
    return f"detects a fall of {_points(row['min_detectable_effect']).lstrip('+')}"


def _campaign_facts(overall: pd.Series, tiers: pd.DataFrame, label: str) -> list:
    facts = [
        ("List measured", f"{label}, contacted in the month after it"),
        (
            "Contacted",
            f"{_count(overall['contacted'])} clients, "
            f"churn {_percent(overall['churn_rate_contacted'])}",
        ),
        (
            "Held-out clients like them",
            f"churn {_percent(overall['churn_rate_held_out_weighted'])}: "
            f"{_count(overall['held_out_measured'])} held-out clients of the "
            f"{_count(overall['strata_measured'])} risk tiers with contacts, "
            "weighted like the contacted clients",
        ),
        ("Difference (held out minus contacted)", _points(overall["difference"])),
        ("95 % confidence interval", _interval(overall["ci_lower"], overall["ci_upper"])),
        ("Clients kept", _whole(overall["clients_kept"])),
        (
            "Smallest detectable effect",
            _points(overall["min_detectable_effect"]).lstrip("+")
            if not _is_missing(overall["min_detectable_effect"])
            else "too few clients to detect any effect",
        ),
        (
            "Held out against every listed client of those tiers, contacted or not",
            f"difference {_points(overall['difference_listed'])} "
            f"({_interval(overall['ci_lower_listed'], overall['ci_upper_listed'])})",
        ),
    ]
    facts += [_tier_fact(row) for _, row in tiers.iterrows()]
    return facts


def _campaign_notes(overall: pd.Series) -> list:
    notes = [_campaign_verdict(overall)]
    left_out = overall["held_out"] - overall["held_out_measured"]
    if left_out:
        notes.append(
            f"{_count(left_out)} held-out clients are left out of the estimate: nobody of "
            "their risk tier was contacted (the medium tier is not on the call list), so "
            "they would compare unlike clients."
        )
    unmatched = overall["contacted"] - overall["contacted_measured"]
    if unmatched:
        notes.append(
            f"{_count(unmatched)} contacted clients are not measured: nobody of their risk "
            "tier was held out."
        )
    if overall["held_out_contacted"]:
        notes.append(
            f"{_count(overall['held_out_contacted'])} held-out clients were contacted all the "
            "same; they stay in the control group and make the measured effect smaller."
        )
    return notes


def _campaign(campaign) -> dict:
    if campaign is None:
        return {"notes": ["The effect of last month's contacts was not measured for this report."]}
    label = format_month(campaign.previous_month)
    if campaign.previous_note is not None:
        return {"notes": [campaign.previous_note]}
    results = rows_for_reading(campaign.previous_results())
    overall = results[results["level"] == "overall"].iloc[0]
    tiers = results[results["level"] == "tier"]
    strata = results[results["level"] == "stratum"]
    rows = tuple(
        (
            str(row["risk_tier"]),
            _cluster_label(row["cluster_id"], row["segment"]),
            _action(row["suggested_action"]),
            _count(row["contacted"]),
            _count(row["held_out"]),
            _percent(row["churn_rate_contacted"]),
            _percent(row["churn_rate_held_out"]),
            _points(row["difference"]),
            _interval(row["ci_lower"], row["ci_upper"]),
            _whole(row["clients_kept"]),
            _stratum_note(row),
        )
        for _, row in strata.iterrows()
    )
    table = Table(
        (
            "tier",
            "segment",
            "suggested action",
            "contacted",
            "held out",
            "churn contacted",
            "churn held out",
            "difference",
            "95 % interval",
            "clients kept",
            "reading",
        ),
        rows,
        (False, False, False, True, True, True, True, True, True, True, False),
    )
    plots = [_campaign_plot(results)] if results["ci_lower"].notna().any() else []
    title = "Segments and suggested actions with contacted clients"
    return {
        "facts": _campaign_facts(overall, tiers, label),
        "notes": _campaign_notes(overall),
        "tables": [(title, table)] if rows else [],
        "plots": plots,
    }


def _quality(run: dict, quality: pd.DataFrame, findings: list) -> dict:
    read = run["rows_read"]
    quarantined = run["rows_quarantined"]
    share = quarantined / read if read else float("nan")
    facts = [
        ("Questionnaires read", _count(read)),
        ("Quarantined", f"{_count(quarantined)} ({_percent(share)})"),
        ("Scored", _count(run["rows_scored"])),
        ("Row rules checked", _count(len(quality))),
    ]
    if run["data_docs_path"]:
        facts.append(("Data Docs", str(run["data_docs_path"])))

    failed = quality[quality["failed_rows"].astype("int64") > 0]
    tables = []
    notes = []
    if len(failed):
        rows = tuple(
            (
                str(row.dataset),
                str(row.rule),
                str(row.description),
                _count(row.failed_rows),
                str(row.examples),
            )
            for row in failed.itertuples(index=False)
        )
        tables.append(
            (
                "Row rules that failed",
                Table(
                    ("dataset", "rule", "description", "failed rows", "for example (client id)"),
                    rows,
                    (False, False, False, True, False),
                ),
            )
        )
    else:
        notes.append(f"Every row passed all {len(quality):,} row rules.")

    if findings:
        rows = tuple(
            (str(finding.severity), str(finding.rule), str(finding.message)) for finding in findings
        )
        tables.append(
            ("Batch findings", Table(("severity", "rule", "message"), rows, (False, False, False)))
        )
    else:
        notes.append("No batch-level findings.")
    if not run["data_docs_path"]:
        notes.append("No Data Docs were built for this run.")
    return {"facts": facts, "tables": tables, "notes": notes}


# ---------------------------------------------------------------------------
# Checking the report in a browser


class BrowserCheckError(RuntimeError):
    """The report did not render cleanly in Chromium, or Chromium could not run."""


class ChromiumNotFoundError(BrowserCheckError):
    """No Chromium executable was found."""


@dataclass(frozen=True)
class BrowserCheck:
    """Result of loading a report in headless Chromium."""

    screenshot: Path
    images: int
    """``<img>`` elements on the loaded page."""
    broken_images: tuple[str, ...]
    """Id (or alt text) of each image whose ``naturalWidth`` was 0 on load."""
    js_errors: tuple[str, ...]
    """Messages ``window.onerror`` received while the page loaded."""
    headings: tuple[str, ...]
    """Text of the page's ``<h2>`` section headings, in order."""
    seconds: float
    """Wall time of the whole check, both Chromium runs included."""


# Flags of every Chromium run: headless, without GPU, and without background
# traffic (component updates, sync, QUIC). As root, Chromium exits with an
# error unless --no-sandbox is given.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--hide-scrollbars",
)
SCREENSHOT_WIDTH = 1280
# Tallest screenshot taken, in pixels: a longer page is cut there, which keeps
# the PNG to a few MB.
MAX_SCREENSHOT_HEIGHT = 16_000
_GROUP_EXIT_SECONDS = 5.0
# Virtual milliseconds Chromium lets the page run before it dumps the DOM.
_VIRTUAL_TIME_BUDGET_MS = 5000


class _ReportDom(html.parser.HTMLParser):
    """Collect the ``<body>`` attributes, ``<img>`` count and ``<h2>`` texts of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str] = {}
        self.images = 0
        self.headings: list[str] = []
        self._heading: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.body = {name: value or "" for name, value in attrs}
        elif tag == "img":
            self.images += 1
        elif tag == "h2":
            self._heading = []

    def handle_endtag(self, tag):
        if tag == "h2" and self._heading is not None:
            self.headings.append(" ".join("".join(self._heading).split()))
            self._heading = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading.append(data)


def find_chromium(chromium: str | None = None) -> str:
    """Return the Chromium executable to run: ``chromium`` if given, else the one on PATH.

    Raises:
        ChromiumNotFoundError: when there is none.
    """
    found = shutil.which(chromium or "chromium")
    if found is None:
        raise ChromiumNotFoundError(
            f"Chromium not found (looked for {chromium or 'chromium'!r} on PATH); "
            "install it with `apt-get install chromium`"
        )
    return found


def _run_chromium(
    executable: str, arguments: list[str], *, deadline: float, report: Path
) -> subprocess.CompletedProcess:
    """Run Chromium in its own process group and kill the whole group when it returns.

    The group is killed in every case, so that no helper process (zygote,
    renderer, crash handler) survives a timeout or a crash of the browser.
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise BrowserCheckError(f"{report}: the browser check timed out before Chromium started")
    with tempfile.TemporaryDirectory(prefix="gymchurn-chromium-") as profile:
        command = [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=remaining)
        except subprocess.TimeoutExpired as error:
            _kill_group(process)
            process.communicate()
            raise BrowserCheckError(
                f"{report}: Chromium timed out after {remaining:.0f} s ({' '.join(arguments)})"
            ) from error
        finally:
            _kill_group(process)
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if result.returncode != 0:
        tail = result.stderr.decode("utf-8", "replace").strip()[-800:]
        raise BrowserCheckError(
            f"{report}: Chromium failed with exit code {result.returncode}: {tail}"
        )
    return result


def _kill_group(process: subprocess.Popen) -> None:
    """Kill Chromium's process group and wait up to ``_GROUP_EXIT_SECONDS`` until it has died.

    Chromium's helpers are reparented to init when the browser exits, so this
    process cannot reap them. They count as gone once they are zombies.
    """
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return  # The group has no process left.
    deadline = time.monotonic() + _GROUP_EXIT_SECONDS
    while _live_group_members(process.pid):
        if time.monotonic() >= deadline:
            logger.warning(
                "report check: Chromium processes %s still run %.0f s after SIGKILL",
                _live_group_members(process.pid),
                _GROUP_EXIT_SECONDS,
            )
            return
        time.sleep(0.05)


def _live_group_members(group: int) -> list[int]:
    """Return the ids of the processes of ``group`` that are not zombies, read from /proc.

    Without /proc (not Linux) this returns an empty list, so the caller does not wait.
    """
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # The process ended while the folder was listed.
        # Fields after the command name, which is in brackets and may contain spaces:
        # state, ppid, pgrp, ...
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _json_list(text: str | None, name: str, report: Path) -> tuple[str, ...]:
    try:
        values = json.loads(text) if text else []
    except json.JSONDecodeError as error:
        raise BrowserCheckError(
            f"{report}: invalid {name} recorded on the page: {text!r}"
        ) from error
    return tuple(str(value) for value in values)


def check_in_browser(
    path: Path, screenshot: Path, *, chromium: str | None = None, timeout: float = 60
) -> BrowserCheck:
    """Load a report in headless Chromium, read what its script recorded, and screenshot it.

    Chromium runs twice, each time with a new temporary profile. The first run
    uses ``--dump-dom`` to read the ``data-*`` attributes that the report's
    inline script writes on ``<body>`` at load. The second takes a screenshot
    ``SCREENSHOT_WIDTH`` pixels wide and as tall as the page, at most
    ``MAX_SCREENSHOT_HEIGHT``.

    Args:
        chromium: the executable, by default ``chromium`` on PATH.
        timeout: seconds both runs may take together.

    Raises:
        ChromiumNotFoundError: no Chromium executable.
        BrowserCheckError: the report is missing, Chromium failed or timed out,
            the script did not run, an image did not decode, fewer images are on
            the page than the report embedded, or a script error occurred.
    """
    started = time.monotonic()
    deadline = started + timeout
    path = Path(path)
    if not path.is_file():
        raise BrowserCheckError(f"report {path} not found")
    executable = find_chromium(chromium)
    url = path.resolve().as_uri()

    dumped = _run_chromium(
        executable,
        [
            f"--virtual-time-budget={_VIRTUAL_TIME_BUDGET_MS}",
            # The same width as the screenshot, so the recorded page height fits it.
            f"--window-size={SCREENSHOT_WIDTH},800",
            "--dump-dom",
            url,
        ],
        deadline=deadline,
        report=path,
    )
    dom = _ReportDom()
    dom.feed(dumped.stdout.decode("utf-8", "replace"))
    dom.close()
    body = dom.body
    if body.get("data-checked") != "true":
        raise BrowserCheckError(
            f"{path}: the report's check script did not run in Chromium, so its images and "
            "errors are unknown; was the file written by gymchurn.report?"
        )
    broken = _json_list(body.get("data-broken-images"), "broken image list", path)
    errors = _json_list(body.get("data-js-errors"), "script error list", path)
    images = int(body.get("data-images", dom.images))
    expected = int(body.get("data-plots", images))
    problems = []
    if broken:
        problems.append(f"{len(broken)} image(s) did not decode: {', '.join(broken)}")
    if images < expected:
        problems.append(f"{images} image(s) on the page, but the report embedded {expected}")
    if errors:
        problems.append(f"{len(errors)} script error(s): {'; '.join(errors)}")
    if problems:
        raise BrowserCheckError(f"{path} did not render cleanly in Chromium: {'; '.join(problems)}")

    screenshot = Path(screenshot)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.unlink(missing_ok=True)
    height = min(max(int(body.get("data-page-height", 0) or 0), 800), MAX_SCREENSHOT_HEIGHT)
    _run_chromium(
        executable,
        [
            f"--virtual-time-budget={_VIRTUAL_TIME_BUDGET_MS}",
            f"--window-size={SCREENSHOT_WIDTH},{height}",
            f"--screenshot={screenshot.resolve()}",
            url,
        ],
        deadline=deadline,
        report=path,
    )
    if not screenshot.is_file() or screenshot.stat().st_size == 0:
        raise BrowserCheckError(f"{path}: Chromium exited but wrote no screenshot to {screenshot}")
    return BrowserCheck(
        screenshot, images, broken, errors, tuple(dom.headings), time.monotonic() - started
    )
