SELECT
    s.risk_tier,
    s.cluster_id,
    c.name AS segment,
    s.suggested_action,
    count(*) FILTER (WHERE NOT s.holdout AND o.churned IS NOT NULL) AS listed,
    count(*) FILTER (
        WHERE NOT s.holdout AND k.client_id IS NOT NULL AND o.churned IS NOT NULL
    ) AS contacted,
    count(*) FILTER (WHERE s.holdout AND o.churned IS NOT NULL) AS held_out,
    count(*) FILTER (
        WHERE s.holdout AND k.client_id IS NOT NULL AND o.churned IS NOT NULL
    ) AS held_out_contacted,
    count(*) FILTER (WHERE NOT s.holdout AND o.churned) AS churned_listed,
    count(*) FILTER (WHERE NOT s.holdout AND k.client_id IS NOT NULL AND o.churned)
        AS churned_contacted,
    count(*) FILTER (WHERE s.holdout AND o.churned) AS churned_held_out
FROM churn.scores AS s
LEFT JOIN churn.clusters AS c
    ON c.month = s.month AND c.cluster_id = s.cluster_id
LEFT JOIN (
    SELECT DISTINCT client_id FROM crm.contacts WHERE month = %(month)s
) AS k ON k.client_id = s.client_id
LEFT JOIN crm.churn_outcomes AS o
    ON o.month = s.month AND o.client_id = s.client_id
WHERE s.month = %(month)s AND s.risk_tier IN ('high', 'medium')
GROUP BY s.risk_tier, s.cluster_id, c.name, s.suggested_action
ORDER BY s.risk_tier, s.cluster_id, s.suggested_action NULLS LAST
