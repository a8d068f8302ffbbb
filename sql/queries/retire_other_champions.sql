UPDATE churn.model_versions SET status = 'retired'
WHERE status = 'champion' AND version <> %(version)s
