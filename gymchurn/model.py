"""Train, compare, save and load the churn model.

Three candidates (logistic regression on spline features, a random forest and
gradient boosting) are compared by stratified k-fold cross-validation on the
labelled questionnaires; the one with the lowest mean Brier score is kept.
Each candidate picks its hyperparameters and its probability calibration by an
inner cross-validation on the rows it is fitted on, so the outer folds measure
the whole procedure. The same outer folds give every labelled client an
out-of-fold probability, which is what a backtest publishes: no client is
scored by a model that saw its label.
"""

import datetime as dt
import hashlib
import json
import logging
import math
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
import skops.io as sio
from joblib import Parallel, delayed
from joblib.externals.loky.backend.process import LokyProcess
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import SplineTransformer, StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from gymchurn.features import ENGINEERED_FEATURES, BehaviourFeatures
from gymchurn.schema import BINARY_FEATURES, CHURNED, CLIENT_ID, FEATURES, MONTH, format_month

logger = logging.getLogger(__name__)

# Probabilities are kept inside [PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR]:
# a score of exactly 0 or 1 would claim a certainty no model of this data has.
PROBABILITY_FLOOR = 1e-4

# Types a saved model may contain beyond those skops trusts by default: exactly
# the names that skops.io.get_untrusted_types (skops 0.16, scikit-learn 1.9,
# scipy 1.17) lists for a fitted candidate of candidate_models. The two scipy
# names come from SplineTransformer, whose BSpline objects each store scipy's
# asarray function.
# NOTE: the scipy names are private paths. If a scipy release moves them, load()
# rejects files written before the upgrade, and the job retrains.
_TRUSTED_TYPES = [
    "gymchurn.features.BehaviourFeatures",
    "gymchurn.model.TunedCalibratedClassifier",
    "scipy._lib.array_api_compat.numpy._aliases.asarray",
    "scipy.interpolate._bsplines.BSpline",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
]

# Bump when the saved file's layout or the candidates change, so that an old
# file is never taken for a model trained by this code.
_MODEL_FORMAT = 2

# Folds of the inner cross-validation that picks a candidate's hyperparameters
# and calibration. Each setting costs this many fits per outer fold.
INNER_FOLDS = 3

# Most rows a candidate's hyperparameter search cross-validates on. Larger
# training sets are searched on a stratified sample of this size, so the search
# costs at most settings x INNER_FOLDS fits on 2/3 of it. The chosen setting is
# then cross-validated once on all rows to fit its calibrator, unless the
# search chose none: on 50,000 simulated rows the logistic regression and the
# gradient boosting chose none, and the random forest a sigmoid.
MAX_SEARCH_ROWS = 10_000

# Probability calibrations a candidate chooses from, simplest first: ties go to
# the earlier one.
CALIBRATIONS = ("none", "sigmoid", "isotonic")

# Folds of a cross-validation fitted at once, each in a worker process of
# joblib's pool. Threads share the GIL, which the fits hold for part of their
# work: on 50,000 simulated rows on two idle cores the 15 folds of the three
# candidates took 19.7 s in two threads and 15.9 s in two processes, the
# workers' start included.
FOLD_WORKERS = os.cpu_count() or 1

# Bins of the expected calibration error: equal-width over [0, 1].
ECE_BINS = 10

# Rows each random forest tree is grown on, drawn with replacement. Bounding it
# keeps the cost of a tree flat in the number of training rows. On the real
# file's 4,000 rows, forests of such trees reached the out-of-fold ROC-AUC of
# trees grown on bootstrap samples of all rows (0.986 both).
_FOREST_BOOTSTRAP_ROWS = 1000


class ModelIntegrityError(RuntimeError):
    """A saved model that must not be loaded: missing, changed or incompatible."""


class TrainingDataError(ValueError):
    """The labelled rows are too few to train on."""


class ModelFileMissingError(ModelIntegrityError):
    """A registered model whose file is gone; a run trains a replacement unless --retrain never."""


class TunedCalibratedClassifier(ClassifierMixin, BaseEstimator):
    """Binary classifier that picks its settings and calibration by inner cross-validation.

    ``fit`` scores every entry of ``settings`` (parameters set on a clone of
    ``estimator``) with ``inner_folds`` stratified folds of the search rows:
    all rows it is given, or a stratified sample of ``max_search_rows`` of
    them. Each setting's out-of-fold probabilities are calibrated with every
    method in ``CALIBRATIONS``, each calibrator being fitted on other inner
    folds than the one it scores. The (setting, calibration) pair with the
    lowest held-out Brier score is kept. The estimator is then refitted with
    that setting on all rows, and the calibrator, if any, on out-of-fold
    probabilities of all rows (those of the search when it used all rows).

    Attributes set by ``fit``:
        best_params_: the chosen entry of ``settings``.
        calibration_: the chosen method, one of ``CALIBRATIONS``.
        estimator_: the estimator with ``best_params_``, fitted on all rows.
        calibrator_: ``None``, or the fitted ``LogisticRegression`` (sigmoid,
            on the log-odds) or ``IsotonicRegression``.
        search_results_: one dict per setting and calibration with its
            held-out ``brier`` and ``log_loss``.
    """

    def __init__(
        self,
        estimator,
        settings,
        *,
        inner_folds=INNER_FOLDS,
        max_search_rows=MAX_SEARCH_ROWS,
        random_state=None,
    ):
        self.estimator = estimator
        self.settings = settings
        self.inner_folds = inner_folds
        self.max_search_rows = max_search_rows
        self.random_state = random_state

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype="float64")
        classes = np.unique(y)
        if len(classes) != 2:
            raise ValueError(
                f"TunedCalibratedClassifier needs labels of exactly 2 classes, got {classes}"
            )
        if not self.settings:
            raise ValueError("TunedCalibratedClassifier needs at least one entry in settings")
        # Inner estimators are fitted on 0/1 labels, so column 1 of their
        # predict_proba is always the probability of classes[1].
        positive = (y == classes[1]).astype("int64")

        search_rows = np.arange(len(positive))
        if len(positive) > self.max_search_rows:
            search_rows, _ = train_test_split(
                search_rows,
                train_size=self.max_search_rows,
                stratify=positive,
                random_state=self.random_state,
            )
            search_rows = np.sort(search_rows)
        index, method, held_out = self._search(X[search_rows], positive[search_rows])

        self.classes_ = classes
        self.best_params_ = dict(self.settings[index])
        self.calibration_ = method
        # A calibrator is fitted on out-of-fold probabilities of all rows;
        # without calibration they are not needed.
        if len(search_rows) < len(positive) and method != "none":
            splits = self._inner_splits(positive)
            held_out = self._held_out_probabilities(X, positive, self.best_params_, splits)
        self.estimator_ = clone(self.estimator).set_params(**self.best_params_)
        self.estimator_.fit(X, positive)
        self.calibrator_ = _fit_calibrator(method, held_out, positive)
        return self

    def _inner_splits(self, labels: np.ndarray) -> list:
        splitter = StratifiedKFold(
            n_splits=self.inner_folds, shuffle=True, random_state=self.random_state
        )
        return list(splitter.split(np.zeros(len(labels)), labels))

    def _held_out_probabilities(self, X, labels, params, splits) -> np.ndarray:
        held_out = np.empty(len(labels), dtype="float64")
        for train_rows, test_rows in splits:
            fitted = clone(self.estimator).set_params(**params)
            fitted.fit(X[train_rows], labels[train_rows])
            held_out[test_rows] = fitted.predict_proba(X[test_rows])[:, 1]
        return held_out

    def _search(self, X, labels) -> tuple[int, str, np.ndarray]:
        """Return the best setting's index, its calibration and its held-out probabilities.

        Also sets ``search_results_``.
        """
        splits = self._inner_splits(labels)
        self.search_results_ = []
        best = None
        for index, params in enumerate(self.settings):
            held_out = self._held_out_probabilities(X, labels, params, splits)
            for method in CALIBRATIONS:
                calibrated = _cross_fit_calibration(method, held_out, labels, splits)
                brier = float(brier_score_loss(labels, calibrated))
                self.search_results_.append(
                    {
                        "setting": index,
                        "calibration": method,
                        "brier": brier,
                        "log_loss": float(log_loss(labels, clip(calibrated), labels=[0, 1])),
                    }
                )
                if best is None or brier < best[0]:
                    best = (brier, index, method, held_out)
        _, index, method, held_out = best
        return index, method, held_out

    def predict_proba(self, X):
        check_is_fitted(self, "estimator_")
        X = validate_data(self, X, dtype="float64", reset=False)
        positive = self.calibrate(self.estimator_.predict_proba(X)[:, 1])
        return np.column_stack([1.0 - positive, positive])

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Apply the chosen calibration to the estimator's probabilities of ``classes_[1]``."""
        return _apply_calibrator(self.calibration_, self.calibrator_, raw)

    def predict(self, X):
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype("int64")]


def _log_odds(probabilities: np.ndarray) -> np.ndarray:
    bounded = clip(probabilities)
    return np.log(bounded / (1.0 - bounded)).reshape(-1, 1)


def _fit_calibrator(method: str, probabilities: np.ndarray, labels: np.ndarray):
    """Fit the calibrator of ``method`` on held-out probabilities and their labels."""
    if method == "none":
        return None
    if method == "sigmoid":
        # Platt scaling: a logistic regression on the log-odds, nearly unpenalised.
        return LogisticRegression(C=1e4).fit(_log_odds(probabilities), labels)
    if method == "isotonic":
        calibrator = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        return calibrator.fit(probabilities, labels)
    raise ValueError(f"invalid calibration {method!r}: expected one of {CALIBRATIONS}")


def _apply_calibrator(method: str, calibrator, probabilities: np.ndarray) -> np.ndarray:
    if method == "none":
        return probabilities
    if method == "sigmoid":
        return calibrator.predict_proba(_log_odds(probabilities))[:, 1]
    return calibrator.predict(probabilities)


def _cross_fit_calibration(
    method: str, probabilities: np.ndarray, labels: np.ndarray, splits
) -> np.ndarray:
    """Calibrate each fold's probabilities with a calibrator fitted on the other folds."""
    calibrated = np.empty_like(probabilities)
    for train_rows, test_rows in splits:
        calibrator = _fit_calibrator(method, probabilities[train_rows], labels[train_rows])
        calibrated[test_rows] = _apply_calibrator(method, calibrator, probabilities[test_rows])
    return calibrated


# Column positions in the output of BehaviourFeatures: the questionnaire
# features, then the engineered features.
_MODEL_COLUMNS = [*FEATURES, *ENGINEERED_FEATURES]
_FLAG_COLUMNS = [_MODEL_COLUMNS.index(name) for name in BINARY_FEATURES]
_NUMERIC_COLUMNS = [i for i, name in enumerate(_MODEL_COLUMNS) if name not in BINARY_FEATURES]


def _logistic_regression(seed: int) -> TunedCalibratedClassifier:
    # Cubic splines let the linear model bend each numeric feature, for example
    # the churn rate that falls steeply over the first months of membership.
    splines = ColumnTransformer(
        [
            ("flags", "passthrough", _FLAG_COLUMNS),
            ("splines", SplineTransformer(n_knots=5, degree=3), _NUMERIC_COLUMNS),
        ]
    )
    pipeline = Pipeline(
        [
            ("splines", splines),
            ("scale", StandardScaler()),
            ("classify", LogisticRegression(max_iter=5000)),
        ]
    )
    settings = [{"classify__C": c} for c in (0.3, 1.0, 3.0)]
    return TunedCalibratedClassifier(pipeline, settings, random_state=seed)


def _random_forest(seed: int) -> TunedCalibratedClassifier:
    forest = RandomForestClassifier(
        n_estimators=60, max_samples=_FOREST_BOOTSTRAP_ROWS, n_jobs=1, random_state=seed
    )
    settings = [{"min_samples_leaf": leaf} for leaf in (1, 3)]
    return TunedCalibratedClassifier(forest, settings, random_state=seed)


def _hist_gradient_boosting(seed: int) -> TunedCalibratedClassifier:
    boosting = HistGradientBoostingClassifier(
        learning_rate=0.1, l2_regularization=1.0, early_stopping=False, random_state=seed
    )
    # On the real file the inner search preferred trees of 3 to 7 leaves to 15.
    settings = [
        {"max_iter": 200, "max_leaf_nodes": 3},
        {"max_iter": 150, "max_leaf_nodes": 4},
        {"max_iter": 100, "max_leaf_nodes": 7},
    ]
    return TunedCalibratedClassifier(boosting, settings, random_state=seed)


def candidate_models(seed: int) -> dict[str, Pipeline]:
    """Return the candidate pipelines, by algorithm name, unfitted.

    Each takes the 13 questionnaire features in ``FEATURES`` order, appends the behaviour
    features, and ends in a ``TunedCalibratedClassifier`` with its own
    preprocessing and a small list of settings to choose from.
    """
    tuned = {
        "logistic_regression": _logistic_regression(seed),
        "random_forest": _random_forest(seed),
        "hist_gradient_boosting": _hist_gradient_boosting(seed),
    }
    return {
        algorithm: Pipeline([("features", BehaviourFeatures()), ("classify", classifier)])
        for algorithm, classifier in tuned.items()
    }


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Compute the expected calibration error over ``ECE_BINS`` equal-width bins.

    Each bin adds the absolute gap between its churn rate and its mean
    probability, weighted by its share of the rows. A probability of exactly 1
    falls into the last bin.
    """
    labels = np.asarray(labels, dtype="float64")
    probabilities = np.asarray(probabilities, dtype="float64")
    bins = np.minimum((probabilities * ECE_BINS).astype("int64"), ECE_BINS - 1)
    error = 0.0
    for index in np.unique(bins):
        members = bins == index
        gap = abs(labels[members].mean() - probabilities[members].mean())
        error += members.mean() * gap
    return float(error)


def probability_metrics(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float
) -> dict[str, float]:
    """Measure ranking, calibration, and the decisions at ``threshold``."""
    predicted = probabilities >= threshold
    return {
        "roc_auc": float(roc_auc_score(labels, probabilities)),
        "pr_auc": float(average_precision_score(labels, probabilities)),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "brier": float(brier_score_loss(labels, probabilities)),
        "log_loss": float(log_loss(labels, probabilities, labels=[0, 1])),
        "ece": expected_calibration_error(labels, probabilities),
    }


@dataclass(frozen=True)
class CandidateResult:
    """Cross-validation of one candidate."""

    algorithm: str
    fold_metrics: list[dict[str, float]]
    out_of_fold: np.ndarray
    """Out-of-fold churn probability of every training row, in row order."""
    fit_seconds: float = 0.0
    """Seconds of fitting and scoring summed over the folds, which may overlap in time."""

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
    result = cross_validate_all(
        {"model": model}, features, labels, folds=folds, seed=seed, threshold=threshold
    )["model"]
    return result.fold_metrics, result.out_of_fold


def _in_worker_processes(calls: list) -> list:
    """Run joblib's delayed ``calls`` in up to ``FOLD_WORKERS`` worker processes.

    A call that fails or an interrupt stops every worker. An interrupt that
    lands while joblib starts a worker can leave that worker out of joblib's
    pool, idle, and Python's exit would then wait for it for ever.
    """
    try:
        return Parallel(n_jobs=min(FOLD_WORKERS, len(calls)), prefer="processes")(calls)
    except BaseException:
        for worker in multiprocessing.active_children():
            if isinstance(worker, LokyProcess):
                # Process.kill() fails on a loky process: its Popen has no kill().
                os.kill(worker.pid, signal.SIGKILL)
                worker.join(timeout=10)
        raise


def cross_validate_all(
    models: dict[str, Pipeline],
    features: np.ndarray,
    labels: np.ndarray,
    *,
    folds: int,
    seed: int,
    threshold: float,
) -> dict[str, CandidateResult]:
    """Cross-validate each of ``models`` on the same stratified folds.

    The folds of every model share one pool of ``FOLD_WORKERS`` worker
    processes, so that a core left idle by one model's last fold takes a fold
    of the next. Each fold is fitted with its own seeds: the probabilities are
    the same, bit for bit, with any number of workers.

    Returns:
        Each model's fold metrics (at ``threshold`` for precision and
        recall) and out-of-fold probabilities, by the keys of ``models``.
    """
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = list(splitter.split(features, labels))

    jobs = [(name, fold) for name in models for fold in range(len(splits))]
    fitted = _in_worker_processes(
        [delayed(_fit_fold)(models[name], features, labels, *splits[fold]) for name, fold in jobs]
    )
    results = {}
    for name in models:
        out_of_fold = np.empty(len(labels), dtype="float64")
        fold_metrics = []
        seconds = 0.0
        for (job_name, fold), (probabilities, fold_seconds) in zip(jobs, fitted, strict=True):
            if job_name != name:
                continue
            test_rows = splits[fold][1]
            out_of_fold[test_rows] = probabilities
            fold_metrics.append(probability_metrics(labels[test_rows], probabilities, threshold))
            seconds += fold_seconds
        results[name] = CandidateResult(name, fold_metrics, out_of_fold, seconds)
    return results


def _fit_fold(model: Pipeline, features, labels, train_rows, test_rows):
    """Return the held-out probabilities of one fold and the seconds taken."""
    started = time.perf_counter()
    fitted = clone(model).fit(features[train_rows], labels[train_rows])
    probabilities = clip(fitted.predict_proba(features[test_rows])[:, 1])
    return probabilities, time.perf_counter() - started


def clip(probabilities: np.ndarray) -> np.ndarray:
    """Keep probabilities strictly inside (0, 1)."""
    return np.clip(probabilities, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)


def settled_clone(pipeline: Pipeline) -> Pipeline:
    """Return an unfitted clone of ``pipeline`` that keeps the setting its search chose.

    When ``pipeline`` is fitted and ends in a :class:`TunedCalibratedClassifier`,
    the clone's search tries that one setting, not all of them again. Its
    calibration is still chosen on the rows it is fitted on. An unfitted
    pipeline is cloned as it is.
    """
    settled = clone(pipeline)
    final = pipeline[-1]
    if isinstance(final, TunedCalibratedClassifier) and hasattr(final, "best_params_"):
        settled[-1].set_params(settings=[final.best_params_])
    return settled


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
    calibration: str
    """Calibration the fitted pipeline chose, one of ``CALIBRATIONS``."""
    hyperparameters: dict
    """Setting the fitted pipeline chose from its candidate's list."""


def _minimum_class_rows(folds: int) -> int:
    """Return the fewest rows of a class that outer and inner cross-validation both need.

    Each outer training part keeps at least ``n - ceil(n / folds)`` of a class's
    ``n`` rows, and its inner cross-validation needs ``INNER_FOLDS`` of them.
    """
    rows = folds
    while rows - math.ceil(rows / folds) < INNER_FOLDS:
        rows += 1
    return rows


def train(
    training: pd.DataFrame,
    *,
    seed: int,
    folds: int,
    threshold: float,
    time_holdout: bool = False,
) -> TrainedModel:
    """Compare the candidates and fit the best one on all labelled rows.

    Args:
        training: one row a labelled client-month, with the 13 features and
            ``churned``.
        threshold: probability at which precision, recall and accuracy are
            measured.
        time_holdout: also fit the best candidate on the months before the
            latest labelled one, beside the final fit, and score that month:
            the metrics get a ``time_holdout`` entry (see
            :func:`time_holdout_metrics`) when the split is possible.

    Raises:
        TrainingDataError: when a class has too few rows for the outer and inner folds
            (5 with 5 outer folds).
    """
    # Folds follow row order: sort, so the same rows in any order give the same
    # model, as their fingerprint promises.
    order = np.lexsort((training[CLIENT_ID].to_numpy(), pd.to_datetime(training[MONTH])))
    training = training.iloc[order]
    labels = training[CHURNED].to_numpy(dtype="int64")
    n_churned = int(labels.sum())
    minimum = _minimum_class_rows(folds)
    if min(n_churned, len(labels) - n_churned) < minimum:
        raise TrainingDataError(
            f"training needs at least {minimum} churned and {minimum} retained clients; "
            f"found {n_churned} churned of {len(labels)} labelled rows. Load more labelled "
            "questionnaires (a larger file or more months with outcomes) and run again"
        )
    features = feature_matrix(training)
    started = time.perf_counter()
    validated = cross_validate_all(
        candidate_models(seed), features, labels, folds=folds, seed=seed, threshold=threshold
    )
    results = list(validated.values())
    for result in results:
        logger.info(
            "candidate %s: cross-validated ROC-AUC %.4f, PR-AUC %.4f, Brier %.4f, ECE %.4f "
            "(%.1f s of fitting)",
            result.algorithm,
            *(result.mean_metrics[k] for k in ("roc_auc", "pr_auc", "brier", "ece")),
            result.fit_seconds,
        )
    logger.info(
        "candidates: %d folds each cross-validated in %.1f s",
        folds,
        time.perf_counter() - started,
    )
    # The first candidate wins ties: it is the simplest model.
    best = min(results, key=lambda r: round(r.mean_metrics["brier"], 4))
    candidate = candidate_models(seed)[best.algorithm]
    fits = [np.arange(len(labels))]
    earlier, latest, month = split_latest_month(training)
    if time_holdout and _holdout_possible(earlier, latest):
        fits.append(np.flatnonzero((training[MONTH] < month).to_numpy()))
    # The final fit and the fit on the earlier months run side by side.
    pipeline, *refitted = _in_worker_processes(
        [delayed(_fitted)(candidate, features[rows], labels[rows]) for rows in fits]
    )
    tuned = pipeline.named_steps["classify"]
    fingerprint = training_fingerprint(training, seed=seed, folds=folds)
    metrics = {
        "selected_by": f"mean Brier score over {folds} stratified folds",
        "threshold": threshold,
        "calibration": tuned.calibration_,
        "hyperparameters": tuned.best_params_,
        "cross_validation": {r.algorithm: r.mean_metrics for r in results},
        **best.mean_metrics,
    }
    if refitted:
        metrics["time_holdout"] = time_holdout_metrics(refitted[0], latest, month, threshold)
    months = sorted(pd.to_datetime(training[MONTH]).dt.date.unique())
    return TrainedModel(
        version_name(training, fingerprint),
        best.algorithm,
        pipeline,
        metrics,
        months,
        len(training),
        _unsort(best.out_of_fold, order),
        tuned.calibration_,
        tuned.best_params_,
    )


def _fitted(model: Pipeline, features: np.ndarray, labels: np.ndarray) -> Pipeline:
    return clone(model).fit(features, labels)


def split_latest_month(training: pd.DataFrame):
    """Return the rows before the latest labelled month, the rows of it, and that month."""
    latest = max(training[MONTH])
    return training[training[MONTH] < latest], training[training[MONTH] == latest], latest


def _holdout_possible(earlier: pd.DataFrame, latest: pd.DataFrame) -> bool:
    return not earlier.empty and latest[CHURNED].nunique() == 2 and earlier[CHURNED].nunique() == 2


def time_holdout_metrics(refitted: Pipeline, latest: pd.DataFrame, month, threshold: float) -> dict:
    """Score the latest labelled month with a model fitted on the months before it.

    Returns:
        The metrics of :func:`probability_metrics` with ``month`` and ``rows``.
    """
    labels = latest[CHURNED].to_numpy(dtype="int64")
    metrics = probability_metrics(labels, predict(refitted, latest), threshold)
    return {**metrics, "month": format_month(month), "rows": len(latest)}


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
        raise ModelFileMissingError(
            f"model file {path} not found; the next run that needs it trains it again"
        )
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise ModelIntegrityError(
            f"model file {path} has sha256 {actual}, but the registry recorded "
            f"{expected_sha256}: the file changed after it was written and is not loaded. "
            "Restore the original file, promote another version with `gymchurn models "
            "promote VERSION`, or train a new champion with `gymchurn run --retrain always`."
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
