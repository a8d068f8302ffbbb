UPDATE churn.runs SET data_docs_path = %(path)s WHERE run_id = %(run_id)s
