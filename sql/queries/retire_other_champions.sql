UPDATE churn.model_versions
SET status = 'retired', status_reason = %(retired_reason)s
WHERE status = 'champion' AND version <> %(version)s
