DELETE FROM churn.scores WHERE month = %(month)s
