SELECT churn.index_scores_partition(%(month)s)
