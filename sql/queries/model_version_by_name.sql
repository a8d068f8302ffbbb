SELECT version, algorithm, metrics, training_months, training_rows, sklearn_version,
    artifact_path, artifact_sha256, status
FROM churn.model_versions
WHERE version = %(version)s
