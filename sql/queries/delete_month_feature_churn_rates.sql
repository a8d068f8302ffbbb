DELETE FROM churn.feature_churn_rates WHERE month = %(month)s
