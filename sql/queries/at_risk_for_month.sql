SELECT month, rank, client_id, churn_probability, risk_tier, cluster_id, model_version,
    array_to_string(reasons, '; ') AS reasons
FROM churn.at_risk
WHERE month = %(month)s
ORDER BY rank
