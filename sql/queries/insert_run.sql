INSERT INTO churn.runs (run_id, month, status, started_at)
VALUES (%(run_id)s, %(month)s, 'running', now())
ON CONFLICT (run_id) DO UPDATE SET status = 'running', started_at = now(), finished_at = NULL, message = NULL
