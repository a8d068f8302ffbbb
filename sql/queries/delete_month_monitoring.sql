DELETE FROM churn.monitoring WHERE month = %(month)s AND metric NOT LIKE 'realised_%%'
