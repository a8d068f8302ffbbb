-- Counts and the lowest updated client id, not a row a changed client: a
-- load of a million new clients would otherwise send a million rows back.
WITH changed AS (
    INSERT INTO crm.churn_outcomes AS o (client_id, month, churned)
    SELECT client_id, %(month)s, churned FROM outcomes_staging
    ON CONFLICT (client_id, month) DO UPDATE SET churned = excluded.churned
    WHERE o.churned IS DISTINCT FROM excluded.churned
    RETURNING (xmax = 0) AS inserted, client_id
)
SELECT
    count(*) FILTER (WHERE inserted) AS inserted,
    count(*) FILTER (WHERE NOT inserted) AS updated,
    min(client_id) FILTER (WHERE NOT inserted) AS first_updated
FROM changed
