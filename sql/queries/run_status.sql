SELECT status FROM churn.runs WHERE run_id = %(run_id)s
