"""Train, compare, save and load the churn model.

Two candidates are compared by stratified k-fold cross-validation on the
labelled questionnaires; the one with the higher mean ROC-AUC is kept. The
same folds give every labelled client an out-of-fold probability, which is
what a backtest publishes: no client is scored by a model that saw its label.
"""

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
import skops.io as sio
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from gymchurn.schema import CHURNED, CLIENT_ID, FEATURES, MONTH

logger = logging.getLogger(__name__)

# Probabilities are kept inside [PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR]:
# a score of exactly 0 or 1 would claim a certainty no model of this data has.
PROBABILITY_FLOOR = 1e-4

# Types a saved model may contain beyond those skops trusts by default.
_TRUSTED_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]

# Bump when the saved file's layout or the candidates change, so that an old
# file is never taken for a model trained by this code.
_MODEL_FORMAT = 1


class ModelIntegrityError(RuntimeError):
    """A saved model that must not be loaded: missing, changed or incompatible."""


def candidate_models(seed: int) -> dict[str, Pipeline]:
    """Return the candidate pipelines, by algorithm name, unfitted."""
    return {
        "logistic_regression": Pipeline(
            [("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=2000))]
        ),
        "hist_gradient_boosting": Pipeline(
            [("classify", HistGradientBoostingClassifier(random_state=seed))]
        ),
    }


def _metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = probabilities >= threshold
    return {
        "roc_auc": float(roc_auc_score(labels, probabilities)),
        "pr_auc": float(average_precision_score(labels, probabilities)),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "brier": float(brier_score_loss(labels, probabilities)),
    }


@dataclass(frozen=True)
class CandidateResult:
    """Cross-validation of one candidate."""

    algorithm: str
    fold_metrics: list[dict[str, float]]
    out_of_fold: np.ndarray
    """Out-of-fold churn probability of every training row, in row order."""

    @property
    def mean_metrics(self) -> dict[str, float]:
        keys = self.fold_metrics[0]
        return {k: float(np.mean([m[k] for m in self.fold_metrics])) for k in keys}


def cross_validate(
    model: Pipeline,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    folds: int,
    seed: int,
    threshold: float,
) -> tuple[list[dict[str, float]], np.ndarray]:
    """Fit ``model`` on each stratified fold and score the held-out rows.

    Returns:
        The metrics of each fold (at ``threshold`` for precision and recall)
        and the out-of-fold probability of every row.
    """
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    out_of_fold = np.empty(len(labels), dtype="float64")
    fold_metrics = []
    for train_rows, test_rows in splitter.split(features, labels):
        fitted = clone(model).fit(features[train_rows], labels[train_rows])
        probabilities = clip(fitted.predict_proba(features[test_rows])[:, 1])
        out_of_fold[test_rows] = probabilities
        fold_metrics.append(_metrics(labels[test_rows], probabilities, threshold))
    return fold_metrics, out_of_fold


def clip(probabilities: np.ndarray) -> np.ndarray:
    """Keep probabilities strictly inside (0, 1)."""
    return np.clip(probabilities, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)


def feature_matrix(questionnaires: pd.DataFrame) -> np.ndarray:
    """Return the 13 features in model order as a float matrix."""
    return questionnaires.loc[:, FEATURES].to_numpy(dtype="float64")


def training_fingerprint(training: pd.DataFrame, *, seed: int, folds: int) -> str:
    """Hash the training rows and everything else that decides the fitted model."""
    ordered = training.sort_values([MONTH, CLIENT_ID])
    digest = hashlib.sha256()
    digest.update(json.dumps([_MODEL_FORMAT, seed, folds, sklearn.__version__]).encode())
    digest.update(
        pd.util.hash_pandas_object(
            ordered[[CLIENT_ID, *FEATURES, CHURNED]].astype("float64"), index=False
        )
        .to_numpy()
        .tobytes()
    )
    digest.update(",".join(str(m) for m in ordered[MONTH].unique()).encode())
    return digest.hexdigest()


def version_name(training: pd.DataFrame, fingerprint: str) -> str:
    """Name a model version after its last training month and its fingerprint."""
    last_month = max(pd.to_datetime(training[MONTH])).date()
    return f"v{last_month:%Y%m}-{fingerprint[:10]}"


@dataclass(frozen=True)
class TrainedModel:
    """The kept candidate, fitted on all training rows, with its facts."""

    version: str
    algorithm: str
    pipeline: Pipeline
    metrics: dict
    training_months: list[dt.date]
    training_rows: int
    out_of_fold: np.ndarray
    """Out-of-fold probabilities of the training rows, in training row order."""


def train(training: pd.DataFrame, *, seed: int, folds: int, threshold: float) -> TrainedModel:
    """Compare the candidates and fit the better one on all labelled rows.

    Args:
        training: one row a labelled client-month, with the 13 features and
            ``churned``.
        threshold: probability at which precision and recall are measured.

    Raises:
        ValueError: when a class has fewer rows than there are folds.
    """
    # Folds follow row order: sort, so the same rows in any order give the same
    # model, as their fingerprint promises.
    order = np.lexsort((training[CLIENT_ID].to_numpy(), pd.to_datetime(training[MONTH])))
    training = training.iloc[order]
    labels = training[CHURNED].to_numpy(dtype="int64")
    n_churned = int(labels.sum())
    if min(n_churned, len(labels) - n_churned) < folds:
        raise ValueError(
            f"training needs at least {folds} churned and {folds} retained clients; "
            f"found {n_churned} churned of {len(labels)} labelled rows"
        )
    features = feature_matrix(training)
    results = []
    for algorithm, model in candidate_models(seed).items():
        fold_metrics, out_of_fold = cross_validate(
            model, features, labels, folds=folds, seed=seed, threshold=threshold
        )
        results.append(CandidateResult(algorithm, fold_metrics, out_of_fold))
        logger.info(
            "candidate %s: cross-validated ROC-AUC %.4f, PR-AUC %.4f, Brier %.4f",
            algorithm,
            *(results[-1].mean_metrics[k] for k in ("roc_auc", "pr_auc", "brier")),
        )
    # The first candidate wins ties: it is the simpler model.
    best = max(results, key=lambda r: round(r.mean_metrics["roc_auc"], 4))
    fingerprint = training_fingerprint(training, seed=seed, folds=folds)
    metrics = {
        "selected_by": f"mean ROC-AUC over {folds} stratified folds",
        "threshold": threshold,
        "cross_validation": {r.algorithm: r.mean_metrics for r in results},
        **best.mean_metrics,
    }
    pipeline = candidate_models(seed)[best.algorithm].fit(features, labels)
    months = sorted(pd.to_datetime(training[MONTH]).dt.date.unique())
    return TrainedModel(
        version_name(training, fingerprint),
        best.algorithm,
        pipeline,
        metrics,
        months,
        len(training),
        _unsort(best.out_of_fold, order),
    )


def _unsort(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    restored = np.empty_like(values)
    restored[order] = values
    return restored


def predict(pipeline: Pipeline, questionnaires: pd.DataFrame) -> np.ndarray:
    """Return each client's churn probability, strictly inside (0, 1)."""
    return clip(pipeline.predict_proba(feature_matrix(questionnaires))[:, 1])


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(model: TrainedModel, model_dir: Path) -> tuple[Path, str]:
    """Write the pipeline as a skops file named after the version and its hash.

    Two databases can train the same version into one folder, and skops files
    of the same model differ byte for byte, so the hash in the name keeps one
    database's file from replacing the other's.

    Returns:
        The file's path and its sha256.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    partial = model_dir / f".{model.version}.skops.partial"
    sio.dump(model.pipeline, partial)
    sha256 = file_sha256(partial)
    path = model_dir / f"{model.version}-{sha256[:12]}.skops"
    partial.replace(path)
    return path, sha256


def load(path: Path, expected_sha256: str, expected_sklearn: str) -> Pipeline:
    """Load a saved pipeline after checking its hash and scikit-learn version.

    Raises:
        ModelIntegrityError: the file is missing, was changed after it was
            written, was written by another scikit-learn, or contains types that
            are not on the allow-list.
    """
    if not path.is_file():
        raise ModelIntegrityError(
            f"model file {path} not found; rerun with retraining to rebuild it"
        )
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise ModelIntegrityError(
            f"model file {path} has sha256 {actual}, but the registry recorded "
            f"{expected_sha256}: the file changed after it was written. Restore the "
            "original file, or delete it and its churn.model_versions row to retrain."
        )
    if expected_sklearn != sklearn.__version__:
        raise ModelIntegrityError(
            f"model file {path} was written by scikit-learn {expected_sklearn}, "
            f"this process runs {sklearn.__version__}; retrain the model"
        )
    untrusted = [t for t in sio.get_untrusted_types(file=path) if t not in _TRUSTED_TYPES]
    if untrusted:
        raise ModelIntegrityError(
            f"model file {path} contains types not on the allow-list: {untrusted}; "
            "retrain the model"
        )
    return sio.load(path, trusted=_TRUSTED_TYPES)
