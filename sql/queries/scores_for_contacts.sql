SELECT client_id, risk_tier, holdout
FROM churn.scores
WHERE month = %(month)s
