UPDATE churn.runs SET report_path = %(path)s WHERE run_id = %(run_id)s
