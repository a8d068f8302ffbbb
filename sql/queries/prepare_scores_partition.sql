SELECT churn.prepare_scores_partition(%(month)s, %(run_id)s, %(model_version)s)
