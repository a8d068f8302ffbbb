SELECT s.client_id, s.churn_probability, s.risk_tier, s.model_version, o.churned
FROM churn.scores AS s
JOIN crm.churn_outcomes AS o USING (client_id, month)
WHERE s.month = %(month)s
