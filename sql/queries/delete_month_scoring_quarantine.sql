DELETE FROM churn.quarantine
WHERE dataset = 'scoring'
    AND run_id IN (SELECT run_id FROM churn.runs WHERE month = %(month)s)
