"""The rescorers of the reasons give model.predict's probabilities bit for bit."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from gymchurn import model, reasons, rescoring
from gymchurn.loader import read_questionnaire_csv
from gymchurn.schema import CHURNED, CLIENT_ID

ALGORITHMS = ["logistic_regression", "hist_gradient_boosting"]


@pytest.fixture(scope="module")
def loaded(real_data):
    return read_questionnaire_csv(real_data)


@pytest.fixture(scope="module")
def clients(loaded):
    return loaded.questionnaires


@pytest.fixture(scope="module")
def pipelines(loaded):
    """Each candidate fitted on all real rows, with one OpenMP thread."""
    reference = loaded.questionnaires.merge(loaded.outcomes, on=CLIENT_ID)
    labels = reference[CHURNED].to_numpy(dtype="int64")
    fitted = {}
    with threadpool_limits(limits=1):
        for algorithm in ALGORITHMS:
            pipeline = model.candidate_models(seed=0)[algorithm]
            fitted[algorithm] = pipeline.fit(model.feature_matrix(reference), labels)
    return fitted


@pytest.fixture(scope="module")
def reference_values(loaded):
    return reasons.reference_values(loaded.questionnaires.merge(loaded.outcomes, on=CLIENT_ID))


def test_rescorer_for_logistic_regression_reuses_splines(pipelines, clients):
    chosen = rescoring.rescorer(pipelines["logistic_regression"], clients)

    assert type(chosen) is rescoring.SplineRescorer
    assert type(rescoring.rescorer(pipelines["hist_gradient_boosting"], clients)) is (
        rescoring.MatrixRescorer
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_rescorer_score_equals_predict(pipelines, clients, algorithm):
    pipeline = pipelines[algorithm]

    scored = rescoring.rescorer(pipeline, clients).score()

    assert np.array_equal(scored, model.predict(pipeline, clients))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("factor", list(reasons.FACTORS))
def test_rescorer_replaced_equals_predict(pipelines, clients, reference_values, algorithm, factor):
    pipeline = pipelines[algorithm]
    columns = reasons.FACTORS[factor]
    values = {column: reference_values[column] for column in columns}
    rows = np.arange(3, len(clients), 7)

    replaced = rescoring.rescorer(pipeline, clients).score_replaced(rows, values)

    changed = clients.iloc[rows].astype({column: "float64" for column in columns})
    for column, value in values.items():
        changed[column] = float(value)
    expected = model.predict(pipeline, changed)
    assert np.array_equal(replaced, expected)
    assert (changed[list(columns)] != clients.iloc[rows][list(columns)]).any(axis=None)
