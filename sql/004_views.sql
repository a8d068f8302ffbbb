-- Later schema files append columns to this view. CREATE OR REPLACE here
-- would try to drop them on every upgrade, which PostgreSQL rejects, so the
-- view is created only when it is missing.
DO $$
BEGIN
IF to_regclass('churn.at_risk') IS NULL THEN
CREATE VIEW churn.at_risk AS
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
END IF;
END
$$;

COMMENT ON VIEW churn.at_risk IS
    'Clients in the high risk tier, ranked per month from the highest churn probability.';
