"""Measure each churn model candidate's out-of-fold quality and training time.

For every candidate of ``gymchurn.model.candidate_models`` the script runs the
stratified k-fold cross-validation that ``model.train`` runs, and prints the
pooled out-of-fold ROC-AUC, PR-AUC, Brier score, expected calibration error,
accuracy at 0.5 and the cross-validation time. Then it times one whole
``model.train`` call and prints the winner, its calibration and its setting.
All fits use one thread.

    python benchmarks/bench_model_quality.py [--data PATH] [--rows N] [--train-only]

With ``--rows`` larger than the file, the file's rows are repeated with a few
percent of noise on the spending and visit-frequency features until there are
N rows. Such copies are near-duplicates across folds, so only their times are
meaningful, not their quality figures.
"""

import argparse
import datetime as dt
import logging
import os
import time
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from gymchurn import model  # noqa: E402
from gymchurn.loader import read_questionnaire_csv  # noqa: E402
from gymchurn.schema import CHURNED, CLIENT_ID, MONTH  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "gym_churn_us.csv"

# Features that get multiplicative noise in the enlarged copies.
_JITTERED = [
    "avg_additional_charges_total",
    "avg_class_frequency_total",
    "avg_class_frequency_current_month",
]
_JITTER_SCALE = 0.03


def labelled_rows(path: Path) -> pd.DataFrame:
    """Read a questionnaire CSV with its churn labels, as one month."""
    loaded = read_questionnaire_csv(path)
    frame = loaded.questionnaires.merge(loaded.outcomes, on=CLIENT_ID)
    return frame.assign(**{MONTH: dt.date(2026, 10, 1)})


def enlarge(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """Repeat the rows with noise on ``_JITTERED`` until there are ``rows`` rows."""
    rng = np.random.default_rng(seed)
    picked = frame.iloc[np.arange(rows) % len(frame)].reset_index(drop=True)
    noise = rng.normal(1.0, _JITTER_SCALE, size=(rows, len(_JITTERED)))
    picked[_JITTERED] = np.maximum(picked[_JITTERED].to_numpy() * noise, 0.0)
    picked[CLIENT_ID] = np.arange(1, rows + 1)
    return picked


def measure_candidates(frame: pd.DataFrame, *, folds: int, seed: int) -> None:
    features = model.feature_matrix(frame)
    labels = frame[CHURNED].to_numpy(dtype="int64")
    header = f"{'candidate':<24}{'ROC-AUC':>9}{'PR-AUC':>9}{'Brier':>9}{'ECE':>9}"
    print(f"{header}{'accuracy':>10}{'CV time':>10}")
    for algorithm, pipeline in model.candidate_models(seed).items():
        started = time.perf_counter()
        _, out_of_fold = model.cross_validate(
            pipeline, features, labels, folds=folds, seed=seed, threshold=0.5
        )
        seconds = time.perf_counter() - started
        metrics = model.probability_metrics(labels, out_of_fold, threshold=0.5)
        print(
            f"{algorithm:<24}{metrics['roc_auc']:>9.4f}{metrics['pr_auc']:>9.4f}"
            f"{metrics['brier']:>9.4f}{metrics['ece']:>9.4f}{metrics['accuracy']:>10.4f}"
            f"{seconds:>9.1f}s"
        )


def measure_train(frame: pd.DataFrame, *, folds: int, seed: int) -> None:
    started = time.perf_counter()
    trained = model.train(frame, seed=seed, folds=folds, threshold=0.5)
    seconds = time.perf_counter() - started
    labels = frame[CHURNED].to_numpy(dtype="int64")
    pooled = model.probability_metrics(labels, trained.out_of_fold, threshold=0.5)
    print(f"model.train: {seconds:.1f} s for {trained.training_rows} rows")
    print(
        f"winner: {trained.algorithm} ({trained.metrics['selected_by']}), "
        f"calibration {trained.calibration}, setting {trained.hyperparameters}"
    )
    print(
        f"winner out-of-fold: ROC-AUC {pooled['roc_auc']:.4f}, PR-AUC {pooled['pr_auc']:.4f}, "
        f"Brier {pooled['brier']:.4f}, ECE {pooled['ece']:.4f}, "
        f"accuracy {pooled['accuracy']:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="questionnaire CSV")
    parser.add_argument("--rows", type=int, default=None, help="enlarge the file to this many rows")
    parser.add_argument("--folds", type=int, default=5, help="outer cross-validation folds")
    parser.add_argument("--seed", type=int, default=42, help="random seed of folds and models")
    parser.add_argument(
        "--train-only", action="store_true", help="time model.train only, skip the candidates"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    frame = labelled_rows(args.data)
    if args.rows is not None and args.rows > len(frame):
        frame = enlarge(frame, args.rows, args.seed)
    print(
        f"{len(frame)} rows from {args.data}, {args.folds} outer folds, "
        f"{model.INNER_FOLDS} inner folds, seed {args.seed}, one thread"
    )
    with threadpool_limits(limits=1):
        if not args.train_only:
            measure_candidates(frame, folds=args.folds, seed=args.seed)
        measure_train(frame, folds=args.folds, seed=args.seed)


if __name__ == "__main__":
    main()
