UPDATE churn.runs
SET status = %(status)s, finished_at = now(), message = %(message)s,
    rows_read = coalesce(%(rows_read)s, rows_read),
    rows_quarantined = coalesce(%(rows_quarantined)s, rows_quarantined)
WHERE run_id = %(run_id)s AND status = 'running'
RETURNING run_id
