DELETE FROM crm.churn_outcomes WHERE month = %(month)s
