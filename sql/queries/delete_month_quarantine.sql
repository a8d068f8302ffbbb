DELETE FROM churn.quarantine
WHERE run_id IN (SELECT run_id FROM churn.runs WHERE month = %(month)s)
