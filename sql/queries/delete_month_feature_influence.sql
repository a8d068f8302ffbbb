DELETE FROM churn.feature_influence WHERE month = %(month)s
