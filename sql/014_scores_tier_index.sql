-- One index on (month, risk_tier, cluster_id) serves the filters of churn.scores
-- by risk tier and by tier and segment. It replaces (month, risk_tier) and
-- (month, cluster_id, risk_tier): each month's publish builds every index of
-- its new partition, and this saves one build. A filter by segment alone reads
-- the month's partition whole; at a million clients that took 53 ms against
-- 38 ms through the index.

DO $block$
BEGIN
    IF to_regclass('churn.scores_month_tier') IS NOT NULL
        AND pg_get_indexdef('churn.scores_month_tier'::regclass)
            NOT LIKE '%(month, risk_tier, cluster_id)' THEN
        DROP INDEX churn.scores_month_tier;
    END IF;
END
$block$;

DROP INDEX IF EXISTS churn.scores_month_cluster_tier;
CREATE INDEX IF NOT EXISTS scores_month_tier ON churn.scores (month, risk_tier, cluster_id);
