DELETE FROM churn.findings WHERE month = %(month)s
