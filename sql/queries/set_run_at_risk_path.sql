-- The at-risk list is the run's last output, so the run ends here, after its publish.
UPDATE churn.runs SET at_risk_path = %(path)s, finished_at = clock_timestamp()
WHERE run_id = %(run_id)s
