UPDATE churn.model_versions
SET status = 'champion', promoted_at = now(), status_reason = %(reason)s
WHERE version = %(version)s
RETURNING version
