SELECT version, status, algorithm, calibration, params, features, metrics, training_months,
    training_rows, sklearn_version, artifact_path, artifact_sha256, created_at,
    promoted_at, status_reason
FROM churn.model_versions
WHERE version = %(version)s
