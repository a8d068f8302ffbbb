SELECT count(*) FROM churn.scores WHERE month = %(month)s
