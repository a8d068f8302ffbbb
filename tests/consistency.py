"""Checks that published months, run records and the model registry agree.

Used by the soak test and ``benchmarks/bench_soak.py`` after many months run
back to back on one database.
"""

import hashlib
from pathlib import Path

import sqlalchemy as sa

_MONTH_FIGURES = """
SELECT to_char(q.month, 'YYYY-MM') AS month,
       q.n AS questionnaires,
       (SELECT count(*) FROM churn.scores s WHERE s.month = q.month) AS scores,
       (SELECT count(DISTINCT s.run_id) FROM churn.scores s WHERE s.month = q.month)
           AS score_runs,
       (SELECT count(*) FROM churn.runs r WHERE r.month = q.month AND r.status = 'succeeded')
           AS succeeded,
       (SELECT count(*) FROM churn.runs r WHERE r.month = q.month AND r.status = 'running')
           AS running
FROM (SELECT month, count(*) AS n FROM crm.questionnaires GROUP BY month) AS q
ORDER BY q.month
"""

_PUBLISHED_RUNS = """
SELECT to_char(r.month, 'YYYY-MM') AS month, r.run_id, r.rows_read, r.rows_scored,
       r.rows_quarantined, r.model_version,
       (SELECT count(*) FROM churn.scores s WHERE s.run_id = r.run_id) AS scores,
       (SELECT count(*) FROM churn.quarantine q
        WHERE q.run_id = r.run_id AND q.dataset = 'scoring') AS quarantined
FROM churn.runs r WHERE r.status = 'succeeded' ORDER BY r.month
"""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find_inconsistencies(engine: sa.Engine) -> list[str]:
    """Return one line for each disagreement between crm, churn.runs, scores and the registry."""
    problems = []
    with engine.connect() as conn:
        months = conn.execute(sa.text(_MONTH_FIGURES)).mappings().all()
        runs = conn.execute(sa.text(_PUBLISHED_RUNS)).mappings().all()
        versions = {
            row.version: row
            for row in conn.execute(
                sa.text(
                    "SELECT version, status, artifact_path, artifact_sha256 "
                    "FROM churn.model_versions"
                )
            )
        }
        running = conn.execute(
            sa.text("SELECT count(*) FROM churn.runs WHERE status = 'running'")
        ).scalar_one()
    for month in months:
        if month["succeeded"] != 1:
            problems.append(f"{month['month']}: {month['succeeded']} succeeded runs, expected 1")
        if month["score_runs"] > 1:
            problems.append(f"{month['month']}: scores of {month['score_runs']} runs")
    for run in runs:
        label = f"{run['month']} run {run['run_id']}"
        if run["rows_read"] != run["rows_scored"] + run["rows_quarantined"]:
            problems.append(f"{label}: read {run['rows_read']} != scored + quarantined")
        if run["scores"] != run["rows_scored"]:
            problems.append(f"{label}: {run['scores']} scores, run says {run['rows_scored']}")
        if run["quarantined"] != run["rows_quarantined"]:
            problems.append(
                f"{label}: {run['quarantined']} quarantined, run says {run['rows_quarantined']}"
            )
        questionnaires = next(m["questionnaires"] for m in months if m["month"] == run["month"])
        if run["rows_read"] != questionnaires:
            problems.append(f"{label}: read {run['rows_read']} of {questionnaires} questionnaires")
        registered = versions.get(run["model_version"])
        if registered is None:
            problems.append(f"{label}: model {run['model_version']} not registered")
            continue
        path = Path(registered.artifact_path)
        if not path.is_file():
            problems.append(f"{label}: model file {path} not found")
        elif _sha256(path) != registered.artifact_sha256:
            problems.append(f"{label}: model file {path} does not match its sha256")
    champions = [v for v, row in versions.items() if row.status == "champion"]
    if len(champions) != 1:
        problems.append(f"{len(champions)} champion models, expected 1: {champions}")
    if running:
        problems.append(f"{running} runs still marked running")
    return problems
