SELECT run_id, started_at FROM churn.runs
WHERE month = %(month)s AND status = 'running'
ORDER BY started_at DESC
LIMIT 1
