DELETE FROM churn.recommendations WHERE month = %(month)s
