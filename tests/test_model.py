"""Tests of training, scoring, saving and loading the churn model on the real questionnaires."""

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from gymchurn import model
from gymchurn.loader import read_questionnaire_csv
from gymchurn.model import ModelIntegrityError
from gymchurn.schema import CHURNED, MONTH

SEED = 42
FOLDS = 5
THRESHOLD = 0.5
CANDIDATES = {"logistic_regression", "hist_gradient_boosting"}


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Fit with one OpenMP thread.

    With both cores of a 2-core machine busy with other processes, the spinning
    OpenMP workers of HistGradientBoosting made one fit on the 4,000 rows take
    about 45 s instead of about 1 s (measured with scikit-learn 1.9.1).
    """
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def training(real_data):
    """The real questionnaires with their outcomes, as October 2026."""
    loaded = read_questionnaire_csv(real_data)
    frame = loaded.questionnaires.merge(loaded.outcomes, on="client_id")
    return frame.assign(**{MONTH: dt.date(2026, 10, 1)})


@pytest.fixture(scope="module")
def trained(training, single_thread):
    return model.train(training, seed=SEED, folds=FOLDS, threshold=THRESHOLD)


def test_train_cross_validated_roc_auc(trained):
    selected = trained.metrics["cross_validation"][trained.algorithm]

    assert trained.metrics["roc_auc"] >= 0.97
    assert trained.metrics["roc_auc"] == selected["roc_auc"]
    assert trained.training_rows == 4000
    assert trained.training_months == [dt.date(2026, 10, 1)]


def test_train_out_of_fold_roc_auc(trained, training):
    labels = training[CHURNED].to_numpy(dtype="int64")

    assert trained.out_of_fold.shape == (4000,)
    assert roc_auc_score(labels, trained.out_of_fold) >= 0.97


def test_train_metrics_both_candidates(trained):
    cross_validation = trained.metrics["cross_validation"]

    assert set(cross_validation) == CANDIDATES
    for algorithm in CANDIDATES:
        assert 0.9 < cross_validation[algorithm]["roc_auc"] <= 1.0
        assert 0.0 < cross_validation[algorithm]["brier"] < 0.1
    best = max(cross_validation[a]["roc_auc"] for a in CANDIDATES)
    assert cross_validation[trained.algorithm]["roc_auc"] == best


def test_predict_inside_unit_interval(trained, training):
    probabilities = model.predict(trained.pipeline, training)

    assert probabilities.shape == (4000,)
    assert probabilities.min() > 0
    assert probabilities.max() < 1
    # 1,061 of the 4,000 clients left (0.27), so the mean score should be near that share.
    assert 0.18 < probabilities.mean() < 0.35


def test_cross_validate_one_result_per_fold(training):
    pipeline = model.candidate_models(SEED)["logistic_regression"]
    labels = training[CHURNED].to_numpy(dtype="int64")

    fold_metrics, out_of_fold = model.cross_validate(
        pipeline,
        model.feature_matrix(training),
        labels,
        folds=FOLDS,
        seed=SEED,
        threshold=THRESHOLD,
    )

    assert len(fold_metrics) == FOLDS
    assert min(m["roc_auc"] for m in fold_metrics) > 0.95
    assert out_of_fold.min() >= model.PROBABILITY_FLOOR
    assert out_of_fold.max() <= 1 - model.PROBABILITY_FLOOR


def test_train_same_data_same_model(trained, training):
    again = model.train(training, seed=SEED, folds=FOLDS, threshold=THRESHOLD)

    assert again.version == trained.version
    assert again.algorithm == trained.algorithm
    np.testing.assert_array_equal(
        model.predict(again.pipeline, training), model.predict(trained.pipeline, training)
    )
    np.testing.assert_array_equal(again.out_of_fold, trained.out_of_fold)


def test_version_name_month_and_fingerprint(training):
    fingerprint = model.training_fingerprint(training, seed=SEED, folds=FOLDS)

    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint)
    assert model.version_name(training, fingerprint) == f"v202610-{fingerprint[:10]}"


def test_training_fingerprint_changes_with_inputs(training):
    base = model.training_fingerprint(training, seed=SEED, folds=FOLDS)
    changed = training.copy()
    changed.loc[0, "age"] += 1

    assert model.training_fingerprint(changed, seed=SEED, folds=FOLDS) != base
    assert model.training_fingerprint(training, seed=SEED + 1, folds=FOLDS) != base
    assert model.training_fingerprint(training, seed=SEED, folds=FOLDS - 1) != base


def test_save_load_same_predictions(trained, training, tmp_path):
    path, sha256 = model.save(trained, tmp_path)

    pipeline = model.load(path, sha256, sklearn.__version__)

    assert path.parent == tmp_path
    assert path.name.startswith(trained.version)
    assert path.suffix == ".skops"
    assert sha256 == model.file_sha256(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    np.testing.assert_array_equal(
        model.predict(pipeline, training), model.predict(trained.pipeline, training)
    )


def test_load_changed_byte_raises(trained, tmp_path):
    path, sha256 = model.save(trained, tmp_path)
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))

    with pytest.raises(ModelIntegrityError, match=f"model file {re.escape(str(path))} has sha256"):
        model.load(path, sha256, sklearn.__version__)


def test_load_other_sklearn_version_raises(trained, tmp_path):
    path, sha256 = model.save(trained, tmp_path)

    with pytest.raises(ModelIntegrityError, match="written by scikit-learn 1.0.2"):
        model.load(path, sha256, "1.0.2")


def test_load_missing_file_raises(tmp_path):
    path = tmp_path / "v202610-0000000000.skops"

    with pytest.raises(ModelIntegrityError, match=f"{re.escape(str(path))} not found"):
        model.load(path, "0" * 64, sklearn.__version__)


def test_train_too_few_churned_raises(training):
    churned = training[training[CHURNED]].head(FOLDS - 1)
    retained = training[~training[CHURNED]]
    few = pd.concat([retained, churned], ignore_index=True)

    with pytest.raises(ValueError, match=f"found {FOLDS - 1} churned of {len(few)} labelled rows"):
        model.train(few, seed=SEED, folds=FOLDS, threshold=THRESHOLD)
