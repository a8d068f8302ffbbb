INSERT INTO churn.model_versions (
    version, algorithm, params, features, metrics, training_months,
    training_rows, sklearn_version, artifact_path, artifact_sha256, calibration, status
)
VALUES (
    %(version)s, %(algorithm)s, %(params)s, %(features)s, %(metrics)s,
    %(training_months)s, %(training_rows)s, %(sklearn_version)s,
    %(artifact_path)s, %(artifact_sha256)s, %(calibration)s, 'challenger'
)
ON CONFLICT (version) DO NOTHING
RETURNING version
