"""The churn model of a run: the registry, retraining, and the champion's challenger.

:func:`fit_or_load` decides which model scores the month. It trains a
challenger when the retrain policy and the evidence call for it, compares it
with the champion on the same held-out rows, and reads and writes the
registry in ``churn.model_versions``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import sklearn
from sklearn.metrics import roc_auc_score
from sqlalchemy.engine import Engine

from gymchurn import db, lifecycle, model
from gymchurn.schema import CHURNED, CLIENT_ID, FEATURES, MONTH, format_month
from gymchurn.settings import Settings

if TYPE_CHECKING:
    from gymchurn.steps import CheckedData

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChosenModel:
    """The model that scores the month, and how it was chosen."""

    version: str
    algorithm: str
    pipeline: object
    metrics: dict
    out_of_fold: pd.Series | None
    """Backtest only: out-of-fold probability by ``client_id``."""
    decision: str
    """``loaded champion``, ``promoted challenger``, ``kept champion`` or
    ``loaded model of the month`` (a rerun of an earlier month)."""
    reason: str
    """Sentence naming the model that scores the month, whether a new model was trained
    and why, and the challenger's comparison with the champion."""
    policy: str
    promote: bool = False
    """Publishing makes this version the champion and retires the others."""
    drift: dict = field(default_factory=dict)
    """PSI of each feature of the month's clients against the latest month the model
    trained on."""
    last_month: tuple | None = None
    """(month, metrics, model version) of the latest labelled month's published scores
    against its outcomes."""
    training_months: tuple[dt.date, ...] | None = None
    """Months a loaded or kept champion trained on; None for any other model."""
    trained: bool = False
    """This run fitted a model on its training rows: the chosen model, or a challenger
    the champion beat. False when it loaded a saved model, including the one an earlier
    run fitted on the same rows."""


def _registered(engine: Engine, version: str) -> dict | None:
    with engine.connect() as conn:
        row = db.execute(conn, "model_version_by_name", {"version": version}).mappings().first()
    return dict(row) if row else None


def _champion(engine: Engine) -> dict | None:
    with engine.connect() as conn:
        row = db.execute(conn, "champion_model_version").mappings().first()
    return dict(row) if row else None


def _simple_params(pipeline) -> dict:
    params = pipeline.get_params(deep=True)
    return {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool, type(None)))}


def _register(engine: Engine, trained: model.TrainedModel, path: Path, sha256: str) -> bool:
    """Record a trained model as a challenger.

    Returns:
        False when another run registered the same version first; that
        version's file then serves, and this run's file is deleted.
    """
    row = {
        "version": trained.version,
        "algorithm": trained.algorithm,
        "params": json.dumps(_simple_params(trained.pipeline)),
        "features": list(FEATURES),
        "metrics": json.dumps(trained.metrics),
        "training_months": trained.training_months,
        "training_rows": trained.training_rows,
        "sklearn_version": sklearn.__version__,
        "artifact_path": str(path.resolve()),
        "artifact_sha256": sha256,
        "calibration": trained.calibration,
    }
    with engine.begin() as conn:
        inserted = db.execute(conn, "insert_model_version", row).first() is not None
    if not inserted:
        path.unlink(missing_ok=True)
    return inserted


def promote(conn, version: str, reason: str) -> None:
    """Make ``version`` the champion and retire the others, inside the caller's transaction."""
    db.execute(
        conn,
        "retire_other_champions",
        {"version": version, "retired_reason": f"replaced by {version}"},
    )
    if (
        db.execute(conn, "promote_model_version", {"version": version, "reason": reason}).first()
        is None
    ):
        raise LookupError(f"model version {version} not found in churn.model_versions")


def _load_registered(registered: dict):
    return model.load(
        Path(registered["artifact_path"]),
        registered["artifact_sha256"],
        registered["sklearn_version"],
    )


def _missing_file_error(registered: dict, role: str) -> model.ModelFileMissingError:
    """Build the error of ``--retrain never`` when a model it must load has no file.

    That policy never trains, so the run cannot rebuild the file as the other
    policies do.
    """
    return model.ModelFileMissingError(
        f"model file {registered['artifact_path']} of {role} {registered['version']} "
        "not found, and --retrain never does not train a replacement. Restore the file, "
        "promote another version with `gymchurn models promote VERSION`, or run with "
        "--retrain auto or --retrain always to train a new champion."
    )


def _months_of(frame: pd.DataFrame, months) -> pd.DataFrame:
    selected = {dt.date.fromisoformat(str(m)[:10]) for m in months}
    return frame[frame[MONTH].isin(selected)]


def _drift_reference(checked: CheckedData, champion: dict | None) -> pd.DataFrame:
    """Return the rows drift is measured against: the latest month the champion trained on.

    The latest month, not all of them, because a chain's clients change
    slowly (memberships lengthen), so against all training months any month
    would look drifted. In a backtest, or without a champion trained on
    these months, the reference is the run's own training rows.
    """
    training = checked.training
    if champion is not None:
        trained = _months_of(training, champion["training_months"])
        if not trained.empty:
            training = trained
    return training[training[MONTH] == max(training[MONTH])]


def _last_month_metrics(engine: Engine, checked: CheckedData, settings: Settings):
    """Compare the latest labelled month's published scores with its outcomes."""
    if checked.mode != "forward":
        return None
    last = max(checked.training[MONTH])
    with engine.connect() as conn:
        rows = db.read_frame(conn, "scores_with_outcomes", {"month": last})
    if rows.empty:
        return None
    labels = rows[CHURNED].map({"t": True, "f": False, True: True, False: False})
    metrics = lifecycle.realised_metrics(
        labels.to_numpy(), rows["churn_probability"].to_numpy(), rows["risk_tier"] == "high"
    )
    return last, metrics, rows["model_version"].iloc[0]


def _train_or_reuse(
    engine: Engine, settings: Settings, checked: CheckedData, rebuild_changed: bool = False
):
    """Train on the run's labelled rows, or load the version already trained on them.

    A registered file that fails a check of :func:`gymchurn.model.load` (its
    sha256, scikit-learn version or types) raises ModelIntegrityError, unless
    ``rebuild_changed`` is set. Then the version is trained again into a new
    file, and the failing file is left where it is, unloaded.

    Returns:
        The version, the algorithm, the fitted pipeline, its metrics, the
        backtest's out-of-fold scores by client id (None in a forward run), and
        whether this call fitted the model (False when it loaded the saved one).
    """
    started = time.perf_counter()
    training = checked.training
    fingerprint = model.training_fingerprint(
        training, seed=settings.random_seed, folds=settings.cv_folds
    )
    version = model.version_name(training, fingerprint)
    registered = _registered(engine, version)
    missing_file = registered is not None and not Path(registered["artifact_path"]).is_file()
    if registered is not None and checked.mode == "forward" and not missing_file:
        try:
            pipeline = _load_registered(registered)
        except model.ModelFileMissingError as error:
            logger.warning("model: %s; training %s again to rebuild it", error, version)
            missing_file = True
        except model.ModelIntegrityError as error:
            if not rebuild_changed:
                raise
            logger.warning("model: %s; --retrain always trains %s again", error, version)
            missing_file = True
    if registered is not None and checked.mode == "forward" and not missing_file:
        logger.info(
            "model: loaded %s (%s), already trained on these rows, from %s (%.1f s)",
            version,
            registered["algorithm"],
            registered["artifact_path"],
            time.perf_counter() - started,
        )
        return version, registered["algorithm"], pipeline, registered["metrics"], None, False

    trained = model.train(
        training,
        seed=settings.random_seed,
        folds=settings.cv_folds,
        threshold=settings.risk_high_threshold,
        time_holdout=checked.mode == "forward",
    )
    holdout = trained.metrics.get("time_holdout")
    if holdout is not None:
        logger.info(
            "model: %s trained on the months before %s scores it at ROC-AUC %.4f, Brier %.4f",
            trained.algorithm,
            holdout["month"],
            holdout["roc_auc"],
            holdout["brier"],
        )
    if missing_file:
        path, sha256 = model.save(trained, settings.model_dir)
        with engine.begin() as conn:
            db.execute(
                conn,
                "update_model_artifact",
                {
                    "version": version,
                    "artifact_path": str(path.resolve()),
                    "artifact_sha256": sha256,
                    "sklearn_version": sklearn.__version__,
                },
            )
        logger.info("model: rebuilt %s at %s", version, path)
    elif registered is None:
        path, sha256 = model.save(trained, settings.model_dir)
        if not _register(engine, trained, path, sha256):
            path = Path(_registered(engine, version)["artifact_path"])
        logger.info(
            "model: trained %s (%s) on %d rows, saved to %s (%.1f s)",
            trained.version,
            trained.algorithm,
            trained.training_rows,
            path,
            time.perf_counter() - started,
        )
    else:
        logger.info(
            "model: cross-validated %s again for the backtest's out-of-fold scores (%.1f s)",
            version,
            time.perf_counter() - started,
        )
    out_of_fold = None
    if checked.mode == "backtest":
        out_of_fold = pd.Series(trained.out_of_fold, index=training[CLIENT_ID].to_numpy())
    return (
        trained.version,
        trained.algorithm,
        trained.pipeline,
        trained.metrics,
        out_of_fold,
        True,
    )


def _compare_on_holdout(
    checked: CheckedData, metrics: dict, out_of_fold, champion_pipeline
) -> tuple[float, float, str] | None:
    """Return the ROC-AUC of challenger and champion on the same held-out rows.

    In a backtest the held-out rows are the month's labelled clients, scored
    by the challenger out of fold. Otherwise they are the latest labelled
    month, scored by the challenger refitted on the months before it (its
    ``time_holdout`` metrics), so that neither model has seen the held-out
    labels unless the champion did. Returns None when there is no such month.
    """
    training = checked.training
    if out_of_fold is not None:
        labels = training[CHURNED].to_numpy()
        challenger = out_of_fold.reindex(training[CLIENT_ID].to_numpy()).to_numpy()
        champion_scores = model.predict(champion_pipeline, training)
        return (
            float(roc_auc_score(labels, challenger)),
            float(roc_auc_score(labels, champion_scores)),
            f"the backtest's {len(training)} labelled rows",
        )
    holdout = metrics.get("time_holdout")
    if holdout is None:
        return None
    _, latest, _ = model.split_latest_month(training)
    labels = latest[CHURNED].to_numpy()
    return (
        float(holdout["roc_auc"]),
        float(roc_auc_score(labels, model.predict(champion_pipeline, latest))),
        f"{holdout['month']}, {holdout['rows']} rows held out",
    )


def fit_or_load(
    engine: Engine, settings: Settings, checked: CheckedData, retrain: str = "auto"
) -> ChosenModel:
    """Choose the model that scores the month; see :func:`_choose_model`.

    The drift kept for ``churn.monitoring`` is measured against the chosen
    model's latest training month, so that a rerun that loads the model an
    earlier attempt promoted records the same figures.
    """
    champion = _champion(engine)
    chosen = _model_of_earlier_month(engine, settings, checked, retrain, champion)
    if chosen is None:
        chosen = _choose_model(engine, settings, checked, retrain, champion)
    same = champion is not None and chosen.version == champion["version"]
    if same and chosen.drift:
        # _choose_model measured it against the champion's latest training month.
        return chosen
    reference = _drift_reference(checked, champion if same else None)
    return replace(chosen, drift=lifecycle.feature_drift(reference, checked.scoring.valid))


def _model_of_earlier_month(
    engine: Engine, settings: Settings, checked: CheckedData, retrain: str, champion: dict | None
) -> ChosenModel | None:
    """Score a month that the champion's training has already passed, as it was scored.

    A rerun of an earlier month must not use a model trained on that month's
    own outcomes or later ones. A forward month loads the model of its
    published run, or else the model trained on exactly the months before it.
    A backtest month cross-validates on its own rows again, so that it
    publishes the same out-of-fold scores. Neither changes the registry.

    Returns:
        None when the champion was trained only on months before this one.
    """
    if champion is None:
        return None
    trained_until = max(lifecycle.training_months(champion))
    if trained_until < checked.month:
        return None
    reached = (
        "this month included"
        if trained_until == checked.month
        else f"past {format_month(checked.month)}"
    )
    reason = (
        f"{format_month(checked.month)} is not after the champion's training: "
        f"{champion['version']} was trained on months up to {format_month(trained_until)}, "
        f"{reached}"
    )
    out_of_fold = None
    if checked.mode == "backtest":
        # Comparing that champion on the month's rows would measure it on
        # clients it learned from, so the out-of-fold scores are computed again.
        version, algorithm, pipeline, metrics, out_of_fold, trained = _train_or_reuse(
            engine, settings, checked, rebuild_changed=retrain == "always"
        )
        reason += (
            f", so the backtest publishes the out-of-fold scores of {version}, "
            "cross-validated on the month's own rows"
        )
    else:
        version, algorithm, pipeline, metrics, how, trained = _model_of_published_run(
            engine,
            settings,
            checked,
            rebuild_changed=retrain == "always",
            never_train=retrain == "never",
        )
        reason += how
    logger.info("model: %s", reason)
    return ChosenModel(
        version,
        algorithm,
        pipeline,
        metrics,
        out_of_fold,
        "loaded model of the month",
        reason,
        retrain,
        last_month=_last_month_metrics(engine, checked, settings),
        trained=trained,
    )


def _model_of_published_run(
    engine: Engine,
    settings: Settings,
    checked: CheckedData,
    rebuild_changed: bool = False,
    never_train: bool = False,
):
    """Load the model of the month's published run, or train on the months before it.

    With ``rebuild_changed``, a changed file of the published run's model is
    left unloaded and the model is trained again, as :func:`_train_or_reuse` does.
    With ``never_train`` (``--retrain never``), a missing file of that model
    raises ModelFileMissingError instead of training.

    Returns:
        (version, algorithm, pipeline, metrics, the clause the run's reason ends with,
        whether this call fitted the model).
    """
    with engine.connect() as conn:
        published = db.execute(conn, "published_model_for_month", {"month": checked.month})
        version = published.scalar_one_or_none()
    registered = _registered(engine, version) if version else None
    if registered is not None:
        try:
            pipeline = _load_registered(registered)
        except model.ModelFileMissingError as error:
            if never_train:
                raise _missing_file_error(registered, "the month's published model") from None
            logger.warning("model: %s", error)
        except model.ModelIntegrityError as error:
            if not rebuild_changed:
                raise
            logger.warning("model: %s; --retrain always trains the month's model again", error)
        else:
            how = f", so the month is scored again with {version}, the model of its published run"
            return version, registered["algorithm"], pipeline, registered["metrics"], how, False
    version, algorithm, pipeline, metrics, _, fitted = _train_or_reuse(
        engine, settings, checked, rebuild_changed
    )
    how = f", so the month is scored with {version}, trained on the months before it"
    return version, algorithm, pipeline, metrics, how, fitted


def _choose_model(
    engine: Engine,
    settings: Settings,
    checked: CheckedData,
    retrain: str,
    champion: dict | None,
) -> ChosenModel:
    """Choose the model that scores the month, training a challenger when the policy requires.

    A challenger replaces the champion only when its ROC-AUC on held-out rows
    is at least the champion's on the same rows. A backtest always runs the
    cross-validation, because its scores are the out-of-fold probabilities.
    """
    started = time.perf_counter()
    labelled_months = sorted(set(checked.training[MONTH]))
    drift = lifecycle.feature_drift(_drift_reference(checked, champion), checked.scoring.valid)
    last_month = _last_month_metrics(engine, checked, settings)
    decision = lifecycle.decide_retrain(
        retrain,
        champion=champion,
        labelled_months=labelled_months,
        drift=drift,
        drift_features=settings.drift_features,
        drift_threshold=settings.drift_psi_threshold,
        last_month=None if last_month is None else last_month[:2],
        min_roc_auc=settings.min_realised_roc_auc,
        max_calibration_gap=settings.max_calibration_gap,
    )
    common = {"policy": retrain, "drift": drift, "last_month": last_month}
    champion_pipeline = None
    if champion is not None:
        try:
            champion_pipeline = _load_registered(champion)
        except model.ModelFileMissingError as error:
            if retrain == "never":
                raise _missing_file_error(champion, "the champion") from None
            logger.warning("model: champion %s: %s", champion["version"], error)
            decision = lifecycle.RetrainDecision(True, f"the champion's file is missing: {error}")
        except model.ModelIntegrityError as error:
            # A changed file may have been tampered with: only an explicit
            # --retrain always goes on, with a new model and without loading it.
            if retrain != "always":
                raise
            logger.warning("model: champion %s not loaded: %s", champion["version"], error)
            decision = lifecycle.RetrainDecision(
                True, f"the champion's file failed its check: {error}"
            )
    month = format_month(checked.month)
    if not decision.retrain and checked.mode == "forward":
        pipeline = champion_pipeline
        loaded_reason = (
            f"champion {champion['version']} scores {month}; "
            f"no new model was trained ({decision.reason})"
        )
        logger.info(
            "model: %s; the %s model loaded in %.1f s",
            loaded_reason,
            champion["algorithm"],
            time.perf_counter() - started,
        )
        return ChosenModel(
            champion["version"],
            champion["algorithm"],
            pipeline,
            champion["metrics"],
            None,
            "loaded champion",
            loaded_reason,
            training_months=lifecycle.training_months(champion),
            **common,
        )

    if decision.retrain:
        reason = decision.reason
    else:
        reason = f"the month is a backtest, which always trains ({decision.reason})"
    version, algorithm, pipeline, metrics, out_of_fold, fitted = _train_or_reuse(
        engine, settings, checked, rebuild_changed=retrain == "always"
    )
    if fitted:
        challenger_origin = f"new model {version} was trained because {reason}"
    else:
        challenger_origin = (
            f"no new model was trained: challenger {version}, trained on these rows by an "
            f"earlier run, was loaded because {reason}"
        )

    def promoted(text: str) -> ChosenModel:
        return ChosenModel(
            version,
            algorithm,
            pipeline,
            metrics,
            out_of_fold,
            "promoted challenger",
            text,
            promote=True,
            trained=fitted,
            **common,
        )

    if champion is None or champion_pipeline is None:
        first_reason = f"{challenger_origin}, and is now the champion that scores {month}"
        logger.info("model: %s", first_reason)
        return promoted(first_reason)
    if champion["version"] == version:
        same_model_reason = (
            f"champion {version} scores {month} and no new model replaces it: {reason}, "
            "but the model of these training rows is the champion itself"
        )
        logger.info("model: %s", same_model_reason)
        return ChosenModel(
            version,
            algorithm,
            pipeline,
            metrics,
            out_of_fold,
            "loaded champion",
            same_model_reason,
            trained=fitted,
            **common,
        )

    compared = _compare_on_holdout(checked, metrics, out_of_fold, champion_pipeline)
    if compared is None:
        challenger_auc = metrics["roc_auc"]
        champion_auc = champion["metrics"]["roc_auc"]
        basis = "cross-validated ROC-AUC"
    else:
        challenger_auc, champion_auc, basis = compared
    shown_challenger, shown_champion = lifecycle.format_compared(
        challenger_auc, champion_auc, decimals=4
    )
    verdict = (
        f"challenger {version} ROC-AUC {shown_challenger}, champion {champion['version']} "
        f"{shown_champion} on {basis}"
    )
    if challenger_auc == champion_auc:
        verdict += "; a tie goes to the challenger, trained on more months"
    if challenger_auc >= champion_auc:
        replaced_reason = (
            f"{challenger_origin}, and replaces champion {champion['version']} "
            f"to score {month}: {verdict}"
        )
        logger.info("model: %s", replaced_reason)
        return promoted(replaced_reason)
    kept_reason = (
        f"champion {champion['version']} kept and scores {month}; {challenger_origin}, "
        f"but not promoted: {verdict}"
    )
    logger.info("model: %s", kept_reason)
    if out_of_fold is not None:
        # The backtest publishes the champion's scores, not the challenger's.
        out_of_fold = None
    return ChosenModel(
        champion["version"],
        champion["algorithm"],
        champion_pipeline,
        champion["metrics"],
        out_of_fold,
        "kept champion",
        kept_reason,
        training_months=lifecycle.training_months(champion),
        trained=fitted,
        **common,
    )
