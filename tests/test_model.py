"""Tests of training, scoring, saving and loading the churn model on the real questionnaires."""

import dataclasses
import datetime as dt
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from threadpoolctl import threadpool_limits

from gymchurn import model
from gymchurn.features import (
    ENGINEERED_FEATURES,
    FREQUENCY_RATIO_CAP,
    BehaviourFeatures,
    behaviour_features,
)
from gymchurn.loader import read_questionnaire_csv
from gymchurn.model import ModelIntegrityError, TunedCalibratedClassifier
from gymchurn.schema import CHURNED, FEATURES, MONTH

SEED = 42
FOLDS = 5
THRESHOLD = 0.5
CANDIDATES = {"logistic_regression", "random_forest", "hist_gradient_boosting"}

# Out-of-fold figures of the kept model on the real file, measured with
# benchmarks/bench_model_quality.py (scikit-learn 1.9.1, seed 42, 5 folds):
# ROC-AUC 0.9903, PR-AUC 0.9796, Brier 0.0297, ECE 0.0070. The bounds leave a
# small margin for other library versions.
MIN_ROC_AUC = 0.988
MIN_PR_AUC = 0.975
MAX_BRIER = 0.032
MAX_ECE = 0.015


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


@pytest.fixture(scope="module")
def labels(training):
    return training[CHURNED].to_numpy(dtype="int64")


def test_train_cross_validated_roc_auc(trained):
    selected = trained.metrics["cross_validation"][trained.algorithm]

    assert trained.metrics["roc_auc"] >= MIN_ROC_AUC
    assert trained.metrics["roc_auc"] == selected["roc_auc"]
    assert trained.training_rows == 4000
    assert trained.training_months == [dt.date(2026, 10, 1)]


def test_train_out_of_fold_roc_auc(trained, labels):
    assert trained.out_of_fold.shape == (4000,)
    assert roc_auc_score(labels, trained.out_of_fold) >= MIN_ROC_AUC


def test_train_out_of_fold_pr_auc(trained, labels):
    assert average_precision_score(labels, trained.out_of_fold) >= MIN_PR_AUC


def test_train_out_of_fold_brier(trained, labels):
    assert brier_score_loss(labels, trained.out_of_fold) <= MAX_BRIER
    assert trained.metrics["brier"] <= MAX_BRIER


def test_train_out_of_fold_ece(trained, labels):
    assert model.expected_calibration_error(labels, trained.out_of_fold) <= MAX_ECE
    # Each fold has 800 rows, so its ECE is noisier than that of all 4,000.
    assert trained.metrics["ece"] <= 2 * MAX_ECE


def test_train_out_of_fold_accuracy(trained, labels):
    accuracy = np.mean((trained.out_of_fold >= THRESHOLD) == labels)

    # 73.5 % of the clients stayed: always predicting "stays" scores 0.735.
    assert accuracy >= 0.95
    assert trained.metrics["accuracy"] == pytest.approx(accuracy, abs=1e-9)


def test_train_metrics_all_candidates(trained):
    cross_validation = trained.metrics["cross_validation"]

    assert set(cross_validation) == CANDIDATES
    for algorithm in CANDIDATES:
        assert 0.98 < cross_validation[algorithm]["roc_auc"] <= 1.0
        assert 0.0 < cross_validation[algorithm]["brier"] < 0.04
        assert 0.0 <= cross_validation[algorithm]["ece"] < 0.05
    best = min(cross_validation[a]["brier"] for a in CANDIDATES)
    assert cross_validation[trained.algorithm]["brier"] == best
    assert trained.metrics["selected_by"] == "mean Brier score over 5 stratified folds"


def test_train_records_calibration_and_setting(trained):
    tuned = trained.pipeline.named_steps["classify"]
    candidate = model.candidate_models(SEED)[trained.algorithm].named_steps["classify"]

    assert trained.calibration in model.CALIBRATIONS
    assert trained.metrics["calibration"] == trained.calibration
    assert tuned.calibration_ == trained.calibration
    assert trained.hyperparameters in candidate.settings
    assert trained.metrics["hyperparameters"] == trained.hyperparameters
    assert len(tuned.search_results_) == len(candidate.settings) * len(model.CALIBRATIONS)


def test_train_search_keeps_lowest_brier(trained):
    tuned = trained.pipeline.named_steps["classify"]
    candidate = model.candidate_models(SEED)[trained.algorithm].named_steps["classify"]
    best = min(tuned.search_results_, key=lambda result: result["brier"])

    assert candidate.settings[best["setting"]] == trained.hyperparameters
    assert best["calibration"] == trained.calibration


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


def test_train_too_few_churned_for_inner_folds_raises(training):
    # With 2 outer folds, 5 churned clients leave 2 in one training half, too
    # few for 3 inner folds: 6 are needed.
    churned = training[training[CHURNED]].head(5)
    retained = training[~training[CHURNED]]
    few = pd.concat([retained, churned], ignore_index=True)

    with pytest.raises(ValueError, match="needs at least 6 churned and 6 retained clients"):
        model.train(few, seed=SEED, folds=2, threshold=THRESHOLD)


def test_train_too_few_churned_raises(training):
    churned = training[training[CHURNED]].head(FOLDS - 1)
    retained = training[~training[CHURNED]]
    few = pd.concat([retained, churned], ignore_index=True)

    with pytest.raises(ValueError, match=f"found {FOLDS - 1} churned of {len(few)} labelled rows"):
        model.train(few, seed=SEED, folds=FOLDS, threshold=THRESHOLD)
    with pytest.raises(ValueError, match="Load more labelled questionnaires"):
        model.train(few, seed=SEED, folds=FOLDS, threshold=THRESHOLD)


def feature_row(**values) -> np.ndarray:
    """Return one questionnaire row in FEATURES order: a typical client, changed by ``values``."""
    typical = {
        "gender": 1,
        "near_location": 1,
        "partner": 0,
        "promo_friends": 0,
        "phone": 1,
        "contract_period": 12,
        "group_visits": 0,
        "age": 29,
        "avg_additional_charges_total": 100.0,
        "month_to_end_contract": 3,
        "lifetime": 4,
        "avg_class_frequency_total": 2.0,
        "avg_class_frequency_current_month": 1.5,
    }
    typical.update(values)
    return np.array([[float(typical[name]) for name in FEATURES]])


def engineered(**values) -> dict[str, float]:
    row = behaviour_features(feature_row(**values))[0]
    return dict(zip(ENGINEERED_FEATURES, row.tolist(), strict=True))


def test_behaviour_features_hand_made_row():
    features = engineered()

    assert features["frequency_change"] == pytest.approx(-0.5)
    assert features["frequency_ratio"] == pytest.approx(0.75)
    # 9 of the 12 contract months are used.
    assert features["contract_share_used"] == pytest.approx(0.75)
    assert features["log_lifetime"] == pytest.approx(math.log(5))
    assert features["charges_per_month"] == pytest.approx(25.0)


def test_behaviour_features_last_month_of_contract():
    features = engineered(contract_period=1, month_to_end_contract=1)

    assert features["contract_share_used"] == 0.0


def test_behaviour_features_first_month_of_membership():
    features = engineered(lifetime=0, avg_additional_charges_total=40.0)

    assert features["log_lifetime"] == 0.0
    assert features["charges_per_month"] == pytest.approx(40.0)


@pytest.mark.parametrize(
    ("total", "current", "ratio"),
    [(0.0, 0.0, 1.0), (0.0, 0.4, FREQUENCY_RATIO_CAP), (0.5, 2.5, FREQUENCY_RATIO_CAP)],
)
def test_behaviour_features_frequency_ratio_guarded(total, current, ratio):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        features = engineered(
            avg_class_frequency_total=total, avg_class_frequency_current_month=current
        )

    assert features["frequency_ratio"] == ratio
    assert features["frequency_change"] == pytest.approx(current - total)


def test_behaviour_features_zero_contract_guarded():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        features = engineered(contract_period=0, month_to_end_contract=1)

    assert features["contract_share_used"] == 0.0


def test_behaviour_features_finite_on_real_rows(training):
    features = behaviour_features(model.feature_matrix(training))

    assert features.shape == (4000, len(ENGINEERED_FEATURES))
    assert np.isfinite(features).all()
    assert features[:, ENGINEERED_FEATURES.index("contract_share_used")].min() >= 0.0
    assert features[:, ENGINEERED_FEATURES.index("contract_share_used")].max() <= 1.0


def test_behaviour_transformer_appends_columns():
    transformer = BehaviourFeatures().fit(feature_row())

    transformed = transformer.transform(feature_row(lifetime=9))

    assert transformed.shape == (1, len(FEATURES) + len(ENGINEERED_FEATURES))
    np.testing.assert_array_equal(transformed[:, : len(FEATURES)], feature_row(lifetime=9))
    assert transformed[0, len(FEATURES) + 3] == pytest.approx(math.log(10))
    assert list(transformer.get_feature_names_out()) == [*FEATURES, *ENGINEERED_FEATURES]


def test_behaviour_transformer_wrong_columns_raises():
    with pytest.raises(ValueError, match="expects the 13 feature columns"):
        BehaviourFeatures().fit(feature_row()[:, :12])


def test_behaviour_transformer_wrong_names_raises(training):
    swapped = training[FEATURES].rename(columns={"age": "years"})

    with pytest.raises(ValueError, match="expects the columns"):
        BehaviourFeatures().fit(swapped)


def test_expected_calibration_error_hand_made():
    # Bin [0.1, 0.2): 10 rows at 0.1, 1 churned, gap 0. Bin [0.9, 1.0]: 10 rows
    # at 0.9 and 1.0 (mean 0.95), 5 churned, gap 0.45. Each bin is half the rows.
    labels = np.array([1] + [0] * 9 + [1] * 5 + [0] * 5)
    probabilities = np.array([0.1] * 10 + [0.9] * 5 + [1.0] * 5)

    assert model.expected_calibration_error(labels, probabilities) == pytest.approx(0.225)


def test_expected_calibration_error_perfect():
    labels = np.array([0, 0, 0, 1] * 5)
    probabilities = np.full(20, 0.25)

    assert model.expected_calibration_error(labels, probabilities) == pytest.approx(0.0)


def test_tuned_classifier_calibrates_overconfident_model(training, labels):
    features = BehaviourFeatures().fit_transform(model.feature_matrix(training))
    train_rows, test_rows = np.arange(0, 4000, 2), np.arange(1, 4000, 2)
    raw = GaussianNB().fit(features[train_rows], labels[train_rows])
    tuned = TunedCalibratedClassifier(GaussianNB(), [{}], random_state=SEED)

    tuned.fit(features[train_rows], labels[train_rows])

    raw_brier = brier_score_loss(labels[test_rows], raw.predict_proba(features[test_rows])[:, 1])
    tuned_brier = brier_score_loss(
        labels[test_rows], tuned.predict_proba(features[test_rows])[:, 1]
    )
    # Naive Bayes treats the correlated features as independent, so its
    # probabilities pile up near 0 and 1.
    assert tuned.calibration_ in {"sigmoid", "isotonic"}
    assert tuned_brier < 0.8 * raw_brier


def test_tuned_classifier_sampled_search(training, labels):
    pipeline = model.candidate_models(SEED)["logistic_regression"]
    pipeline.set_params(classify__max_search_rows=1500)

    _, out_of_fold = model.cross_validate(
        pipeline,
        model.feature_matrix(training),
        labels,
        folds=FOLDS,
        seed=SEED,
        threshold=THRESHOLD,
    )

    tuned = pipeline.fit(model.feature_matrix(training), labels).named_steps["classify"]
    assert roc_auc_score(labels, out_of_fold) >= MIN_ROC_AUC
    assert brier_score_loss(labels, out_of_fold) <= MAX_BRIER
    assert tuned.estimator_.named_steps["scale"].n_samples_seen_ == 4000


def test_tuned_classifier_one_class_raises(training):
    features = model.feature_matrix(training)

    with pytest.raises(ValueError, match="exactly 2 classes"):
        model.candidate_models(SEED)["logistic_regression"].fit(features, np.zeros(4000))


@pytest.mark.parametrize("algorithm", sorted(CANDIDATES))
def test_save_load_each_candidate(algorithm, trained, training, labels, tmp_path):
    rows = np.arange(0, 4000, 4)
    pipeline = model.candidate_models(SEED)[algorithm]
    pipeline.fit(model.feature_matrix(training.iloc[rows]), labels[rows])
    candidate = dataclasses.replace(trained, algorithm=algorithm, pipeline=pipeline)

    path, sha256 = model.save(candidate, tmp_path)
    loaded = model.load(path, sha256, sklearn.__version__)

    np.testing.assert_array_equal(
        model.predict(loaded, training), model.predict(pipeline, training)
    )


def _double(values):
    return 2 * values


def test_load_type_not_on_allow_list_raises(trained, training, tmp_path):
    untrusted = FunctionTransformer(_double).fit(model.feature_matrix(training))
    pipeline = Pipeline([("untrusted", untrusted), *trained.pipeline.steps])
    path, sha256 = model.save(dataclasses.replace(trained, pipeline=pipeline), tmp_path)

    with pytest.raises(ModelIntegrityError, match=r"not on the allow-list: \[.*_double'\]"):
        model.load(path, sha256, sklearn.__version__)


@pytest.mark.parametrize("algorithm", ["logistic_regression", "hist_gradient_boosting"])
def test_threaded_folds_match_serial(training, monkeypatch, algorithm):
    candidate = model.candidate_models(SEED)[algorithm]
    features = model.feature_matrix(training)
    labels = training[CHURNED].to_numpy(dtype="int64")

    def run(threads):
        monkeypatch.setattr(model, "FOLD_WORKERS", threads)
        return model.cross_validate(
            candidate, features, labels, folds=FOLDS, seed=SEED, threshold=0.5
        )

    serial_metrics, serial = run(1)
    threaded_metrics, threaded = run(2)

    assert np.array_equal(threaded, serial)
    assert threaded_metrics == serial_metrics
    assert len(serial_metrics) == FOLDS
    assert 0.9 < np.mean([m["roc_auc"] for m in serial_metrics]) < 1.0


def test_settled_clone_refits_the_chosen_setting_alone(training, labels):
    features = model.feature_matrix(training)
    fitted = model.candidate_models(SEED)["logistic_regression"].fit(features, labels)
    chosen = fitted.named_steps["classify"].best_params_

    settled = model.settled_clone(fitted).fit(features, labels)
    refitted = settled.named_steps["classify"]

    assert refitted.settings == [chosen]
    assert len(refitted.search_results_) == len(model.CALIBRATIONS)
    assert refitted.calibration_ == fitted.named_steps["classify"].calibration_
    np.testing.assert_array_equal(settled.predict_proba(features), fitted.predict_proba(features))
    # An unfitted pipeline keeps its whole list.
    unfitted = model.candidate_models(SEED)["logistic_regression"]
    assert model.settled_clone(unfitted).named_steps["classify"].settings == (
        unfitted.named_steps["classify"].settings
    )


class _CountingNB(GaussianNB):
    """GaussianNB that counts its fits, each with the number of rows."""

    fits: list[int] = []

    def fit(self, X, y, sample_weight=None):
        type(self).fits.append(len(X))
        return super().fit(X, y, sample_weight)


@pytest.mark.parametrize(("copies", "calibration"), [(0, "none"), (4, "sigmoid")])
def test_calibrator_folds_only_when_calibrated(copies, calibration):
    rng = np.random.default_rng(11)
    X = rng.normal(size=(3000, 3))
    y = (X[:, 0] + rng.normal(scale=0.5, size=3000) > 0).astype("int64")
    # Copies of the deciding column make naive Bayes overconfident, which a
    # calibration corrects.
    X = np.column_stack([X] + [X[:, :1]] * copies)
    _CountingNB.fits = []
    tuned = TunedCalibratedClassifier(
        _CountingNB(), [{}], inner_folds=3, max_search_rows=1000, random_state=0
    ).fit(X, y)

    assert tuned.calibration_ == calibration
    search, rest = _CountingNB.fits[:3], _CountingNB.fits[3:]
    assert all(rows in (666, 667) for rows in search)
    if calibration == "none":
        assert rest == [3000]
    else:
        # Three folds of all rows for the calibrator's probabilities, then the final fit.
        assert rest == [2000, 2000, 2000, 3000]
