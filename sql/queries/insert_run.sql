INSERT INTO churn.runs (run_id, month, status, started_at, retrain_policy)
VALUES (%(run_id)s, %(month)s, 'running', now(), %(retrain_policy)s)
ON CONFLICT (run_id) DO UPDATE SET status = 'running', started_at = now(), finished_at = NULL,
    message = NULL, retrain_policy = EXCLUDED.retrain_policy
