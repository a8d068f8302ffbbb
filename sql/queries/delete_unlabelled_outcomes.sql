DELETE FROM crm.churn_outcomes
WHERE month = %(month)s AND client_id = ANY(%(client_ids)s)
