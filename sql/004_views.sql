CREATE OR REPLACE VIEW churn.at_risk AS
SELECT
    s.month,
    row_number() OVER (
        PARTITION BY s.month ORDER BY s.churn_probability DESC, s.client_id
    ) AS rank,
    s.client_id,
    s.churn_probability,
    s.risk_tier,
    s.cluster_id,
    s.model_version,
    s.reasons
FROM churn.scores AS s
WHERE s.risk_tier = 'high';

COMMENT ON VIEW churn.at_risk IS
    'Clients in the high risk tier, ranked per month from the highest churn probability.';
