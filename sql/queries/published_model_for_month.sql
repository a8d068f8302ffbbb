SELECT model_version FROM churn.runs WHERE month = %(month)s AND status = 'succeeded'
