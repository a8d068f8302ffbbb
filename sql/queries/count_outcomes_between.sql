SELECT count(*) FROM crm.churn_outcomes WHERE month BETWEEN %(first)s AND %(last)s
