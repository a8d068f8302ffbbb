UPDATE churn.model_versions
SET artifact_path = %(artifact_path)s, artifact_sha256 = %(artifact_sha256)s,
    sklearn_version = %(sklearn_version)s
WHERE version = %(version)s
