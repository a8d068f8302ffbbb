UPDATE churn.runs SET at_risk_path = %(path)s WHERE run_id = %(run_id)s
