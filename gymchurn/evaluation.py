"""Evaluate the model candidates on a labelled file, with a reliability plot."""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gymchurn import model
from gymchurn.schema import CHURNED

# Columns of the metrics table, in print order.
TABLE_METRICS = ["roc_auc", "pr_auc", "brier", "log_loss", "ece", "accuracy", "precision", "recall"]


@dataclass(frozen=True)
class Evaluation:
    """Out-of-fold metrics of every candidate on one labelled set of rows."""

    table: pd.DataFrame
    """One row a candidate: the pooled out-of-fold metrics and the seconds taken."""
    out_of_fold: dict[str, np.ndarray]
    """Out-of-fold probabilities by candidate, in the order of the rows."""
    labels: np.ndarray


def evaluate_candidates(
    rows: pd.DataFrame, *, folds: int, seed: int, threshold: float
) -> Evaluation:
    """Cross-validate every candidate as training does and pool its out-of-fold scores.

    Precision, recall and accuracy are those of the decision at ``threshold``.
    """
    features = model.feature_matrix(rows)
    labels = rows[CHURNED].to_numpy(dtype="int64")
    records, out_of_fold = [], {}
    for algorithm, pipeline in model.candidate_models(seed).items():
        started = time.perf_counter()
        _, probabilities = model.cross_validate(
            pipeline, features, labels, folds=folds, seed=seed, threshold=threshold
        )
        metrics = model.probability_metrics(labels, probabilities, threshold)
        records.append(
            {
                "candidate": algorithm,
                **{name: metrics[name] for name in TABLE_METRICS},
                "seconds": time.perf_counter() - started,
            }
        )
        out_of_fold[algorithm] = probabilities
    return Evaluation(pd.DataFrame(records), out_of_fold, labels)


def reliability_plot(evaluation: Evaluation, path: Path, bins: int = 10) -> Path:
    """Draw each candidate's reliability curve (observed against predicted churn) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import CalibrationDisplay

    figure, axes = plt.subplots(figsize=(6, 6))
    for algorithm, probabilities in evaluation.out_of_fold.items():
        CalibrationDisplay.from_predictions(
            evaluation.labels, probabilities, n_bins=bins, name=algorithm, ax=axes
        )
    axes.set_title(f"Reliability of out-of-fold churn probabilities ({bins} bins)")
    axes.set_xlabel("mean predicted probability")
    axes.set_ylabel("share of clients who left")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path
