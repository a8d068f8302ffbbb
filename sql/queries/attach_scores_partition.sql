SELECT churn.attach_scores_partition(%(month)s)
