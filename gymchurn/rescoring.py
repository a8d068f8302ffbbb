"""Score a chunk of clients, then rows of it with a few features replaced, as the reasons need.

:func:`gymchurn.reasons.attribute_rescored` scores each client once and then,
for each factor, the clients whose values differ from the reference with the
factor's features set to the reference values. The rescorers here give the
probabilities of :func:`gymchurn.model.predict` on those rows, bit for bit,
with less work:

- every model gets the 13 features as one float matrix, built once a chunk,
  rather than a DataFrame a factor;
- the logistic-regression candidate keeps the scaled spline features of the
  whole chunk and recomputes, for the replaced rows, only the columns of the
  features that changed. The spline features are most of the cost of its
  model call: on 100,000 simulated clients the ten replaced-row calls took
  0.32 s this way and 1.06 s through the whole pipeline.
"""

import copy
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, SplineTransformer, StandardScaler

from gymchurn import model
from gymchurn.features import BehaviourFeatures, behaviour_features
from gymchurn.schema import FEATURES

_POSITION = {name: index for index, name in enumerate(FEATURES)}


class MatrixRescorer:
    """Rescorer of any fitted candidate: the pipeline on the rows of one float matrix."""

    def __init__(self, pipeline: Pipeline, clients: pd.DataFrame):
        self._pipeline = pipeline
        self._questionnaires = model.feature_matrix(clients)

    def score(self) -> np.ndarray:
        """Return each client's churn probability."""
        return self._probability(self._questionnaires)

    def score_replaced(self, rows: np.ndarray, values: Mapping[str, float]) -> np.ndarray:
        """Return the probability of each client of ``rows`` with the features of ``values`` set."""
        return self._probability(_replaced(self._questionnaires, rows, values))

    def _probability(self, questionnaires: np.ndarray) -> np.ndarray:
        return model.clip(self._pipeline.predict_proba(questionnaires)[:, 1])


class SplineRescorer(MatrixRescorer):
    """Rescorer of the logistic-regression candidate that reuses its unchanged spline features.

    The candidate is the behaviour features, then a column transformer that
    passes the yes/no features through and expands each numeric feature into
    its own block of B-spline columns, a scaler, a logistic regression and a
    calibration. Each spline block depends on one feature only, so a replaced
    row keeps the blocks of the features that did not change. The changed ones
    are computed by a copy of the fitted SplineTransformer that holds only
    their splines, so they come from scikit-learn's own code.
    """

    def __init__(self, pipeline: Pipeline, clients: pd.DataFrame):
        super().__init__(pipeline, clients)
        classifier = pipeline[-1]
        columns, self._scaler, self._logistic = classifier.estimator_
        self._classifier = classifier
        (_, _, self._flag_columns), (_, self._splines, self._spline_columns) = [
            entry for entry in columns.transformers_ if entry[0] != "remainder"
        ]
        self._flag_start = columns.output_indices_["flags"].start
        self._spline_start = columns.output_indices_["splines"].start
        self._n_splines = self._splines.bsplines_[0].c.shape[1]
        self._model_features = pipeline[0].transform(self._questionnaires)
        # The scaler works column by column, so the replaced rows start from
        # the chunk's scaled columns and scale only the columns they change.
        self._scaled = self._scaler.transform(columns.transform(self._model_features))

    @staticmethod
    def fits(pipeline) -> bool:
        """Return whether ``pipeline`` has the layout this rescorer supports."""
        if not (
            isinstance(pipeline, Pipeline)
            and len(pipeline) == 2
            and isinstance(pipeline[0], BehaviourFeatures)
            and isinstance(pipeline[-1], model.TunedCalibratedClassifier)
        ):
            return False
        estimator = getattr(pipeline[-1], "estimator_", None)
        if not (isinstance(estimator, Pipeline) and len(estimator) == 3):
            return False
        columns, scaler, logistic = estimator
        if not (
            isinstance(columns, ColumnTransformer)
            and isinstance(scaler, StandardScaler)
            and isinstance(logistic, LogisticRegression)
            and not columns.sparse_output_
        ):
            return False
        used = [entry for entry in columns.transformers_ if entry[0] != "remainder"]
        if [name for name, _, _ in used] != ["flags", "splines"]:
            return False
        (_, flags, _), (_, splines, _) = used
        return (
            isinstance(flags, FunctionTransformer)
            and flags.func is None
            and isinstance(splines, SplineTransformer)
            and splines.include_bias
            and not splines.sparse_output
        )

    def score(self) -> np.ndarray:
        return self._finish(self._scaled)

    def score_replaced(self, rows: np.ndarray, values: Mapping[str, float]) -> np.ndarray:
        questionnaires = _replaced(self._questionnaires, rows, values)
        # BehaviourFeatures.transform without its input checks, which the whole
        # chunk passed and the reference values pass.
        features = np.column_stack([questionnaires, behaviour_features(questionnaires)])
        changed = np.flatnonzero((features != self._model_features[rows]).any(axis=0))
        scaled = self._scaled[rows]
        for position, column in enumerate(self._flag_columns):
            if column in changed:
                start = self._flag_start + position
                scaled[:, start : start + 1] = self._scale(features[:, [column]], start)
        blocks = [k for k, column in enumerate(self._spline_columns) if column in changed]
        if blocks:
            splines = self._splines_of(blocks)
            expanded = splines.transform(features[:, [self._spline_columns[k] for k in blocks]])
            width = self._n_splines
            for index, k in enumerate(blocks):
                start = self._spline_start + k * width
                scaled[:, start : start + width] = self._scale(
                    expanded[:, index * width : (index + 1) * width], start
                )
        return self._finish(scaled)

    def _scale(self, block: np.ndarray, start: int) -> np.ndarray:
        """Scale ``block``, the columns from ``start`` on, in place as StandardScaler does."""
        stop = start + block.shape[1]
        if self._scaler.with_mean:
            block -= self._scaler.mean_[start:stop]
        if self._scaler.with_std:
            block /= self._scaler.scale_[start:stop]
        return block

    def _splines_of(self, blocks: list[int]) -> SplineTransformer:
        splines = copy.copy(self._splines)
        splines.bsplines_ = [self._splines.bsplines_[k] for k in blocks]
        splines.n_features_in_ = len(blocks)
        splines.n_features_out_ = len(blocks) * self._n_splines
        return splines

    def _finish(self, scaled: np.ndarray) -> np.ndarray:
        # The rest of TunedCalibratedClassifier.predict_proba and model.predict.
        raw = self._logistic.predict_proba(scaled)[:, 1]
        return model.clip(self._classifier.calibrate(raw))


def rescorer(pipeline: Pipeline, clients: pd.DataFrame) -> MatrixRescorer:
    """Return the fastest rescorer of ``clients`` that gives ``pipeline``'s probabilities."""
    if SplineRescorer.fits(pipeline):
        return SplineRescorer(pipeline, clients)
    return MatrixRescorer(pipeline, clients)


def _replaced(
    questionnaires: np.ndarray, rows: np.ndarray, values: Mapping[str, float]
) -> np.ndarray:
    chosen = questionnaires[rows]
    for name, value in values.items():
        chosen[:, _POSITION[name]] = value
    return chosen
