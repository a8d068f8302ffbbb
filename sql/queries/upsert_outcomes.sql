INSERT INTO crm.churn_outcomes AS o (client_id, month, churned)
SELECT client_id, month, churned FROM outcomes_staging
ON CONFLICT (client_id, month) DO UPDATE SET churned = excluded.churned
WHERE o.churned IS DISTINCT FROM excluded.churned
RETURNING (xmax = 0) AS inserted
