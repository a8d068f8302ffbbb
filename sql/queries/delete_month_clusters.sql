DELETE FROM churn.clusters WHERE month = %(month)s
