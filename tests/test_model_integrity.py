"""A model file changed on disk is never loaded, and the run message tells what to do."""

from pathlib import Path

import sqlalchemy as sa

from gymchurn import model
from tests.test_run_safety import (
    FEBRUARY,
    _runs,
    _scores_digest,
    _start_job,
    _stderr,
    published_february,  # noqa: F401 (a fixture)
)


def _champion(engine) -> tuple[str, str, str]:
    query = """
        SELECT version, artifact_path, artifact_sha256 FROM churn.model_versions
        WHERE status = 'champion'
    """
    with engine.connect() as conn:
        return tuple(conn.execute(sa.text(query)).one())


def test_changed_model_file_rejected_then_rebuilt(published_february, tmp_path):  # noqa: F811
    engine = published_february
    version, path, _ = _champion(engine)
    before = _scores_digest(engine, FEBRUARY)
    with open(path, "ab") as handle:
        handle.write(b"\x00changed")

    rejected = _start_job(tmp_path, FEBRUARY, "never")
    assert rejected.wait(timeout=600) == 1
    _, status, message = _runs(engine, FEBRUARY)[-1]

    assert status == "failed"
    assert message.startswith("ModelIntegrityError")
    assert path in message
    assert "changed after it was written" in message
    assert "gymchurn models promote VERSION" in message
    assert "--retrain always" in message
    assert path in _stderr(tmp_path, "never")
    assert _scores_digest(engine, FEBRUARY) == before

    rebuilt = _start_job(tmp_path, FEBRUARY, "always", retrain="always")
    assert rebuilt.wait(timeout=600) == 0, _stderr(tmp_path, "always")[-3000:]
    new_version, new_path, new_sha256 = _champion(engine)

    assert new_version == version
    assert new_path != path
    assert model.file_sha256(Path(new_path)) == new_sha256
    assert _runs(engine, FEBRUARY)[-1][1] == "succeeded"
