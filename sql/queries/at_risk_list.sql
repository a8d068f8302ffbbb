-- The files people read get churn_probability rounded to 4 decimals. The rank
-- and the probability filter use the full value stored in churn.scores. The
-- rounded value is cast back to double precision, so COPY writes 0.5 as pandas does.
SELECT rank, client_id,
    CAST(round(CAST(churn_probability AS numeric), 4) AS double precision) AS churn_probability,
    risk_tier, cluster_id, segment,
    array_to_string(reasons, '; ') AS reasons, suggested_action, has_phone
FROM (
    SELECT
        row_number() OVER (ORDER BY s.churn_probability DESC, s.client_id) AS rank,
        s.client_id,
        s.churn_probability,
        s.risk_tier,
        s.cluster_id,
        c.name AS segment,
        s.reasons,
        s.suggested_action,
        q.phone = 1 AS has_phone
    FROM churn.scores AS s
    LEFT JOIN churn.clusters AS c
        ON c.month = s.month AND c.cluster_id = s.cluster_id
    LEFT JOIN crm.questionnaires AS q
        ON q.month = s.month AND q.client_id = s.client_id
    WHERE s.month = %(month)s AND s.risk_tier = %(risk_tier)s AND NOT s.holdout
) AS tier_list
WHERE (CAST(%(cluster_id)s AS integer) IS NULL OR tier_list.cluster_id = %(cluster_id)s)
    AND tier_list.churn_probability >= %(min_probability)s
ORDER BY rank
LIMIT %(limit)s
