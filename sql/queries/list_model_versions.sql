SELECT version, status, algorithm, calibration, training_rows, training_months, metrics,
    created_at, promoted_at, status_reason
FROM churn.model_versions
ORDER BY created_at, version
