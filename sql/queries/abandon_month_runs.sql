UPDATE churn.runs
SET status = 'failed', finished_at = now(), message = %(message)s
WHERE month = %(month)s AND status = 'running' AND run_id <> %(run_id)s
RETURNING run_id, started_at
