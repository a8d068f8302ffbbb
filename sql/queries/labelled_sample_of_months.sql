-- The labelled questionnaires of the months %(months)s with the %(n_rows)s lowest
-- sample keys. The key hashes the client id with a seed derived from %(seed)s and
-- the month, so the rows drawn do not depend on the table's physical order, and
-- each month draws other clients. hashint8extended is the bigint hash of hash
-- partitioning (PostgreSQL 11 and later). Its source (hashfunc.c) folds the value
-- into 32 bits and mixes them with the seed as numbers, not as bytes in memory.
-- The draw ranks the narrow outcome rows and reads only the drawn questionnaires,
-- rather than joining every questionnaire to its outcome first.
-- NOTE: an outcome without a questionnaire of the same client and month takes a
-- place in the draw and is then dropped, so fewer rows come back. The loader and
-- the simulator write none.
WITH drawn AS (
    SELECT
        client_id,
        month,
        churned,
        hashint8extended(client_id, hashint8extended(month - DATE '1970-01-01', %(seed)s))
            AS sample_key
    FROM crm.churn_outcomes
    WHERE month = ANY(%(months)s::date[])
    ORDER BY sample_key, month, client_id
    LIMIT %(n_rows)s
)
SELECT
    q.client_id, q.month, q.gender, q.near_location, q.partner,
    q.promo_friends, q.phone, q.contract_period, q.group_visits, q.age,
    q.avg_additional_charges_total, q.month_to_end_contract, q.lifetime,
    q.avg_class_frequency_total, q.avg_class_frequency_current_month,
    d.churned, d.sample_key
FROM drawn AS d
JOIN crm.questionnaires AS q USING (client_id, month)
ORDER BY d.sample_key, q.month, q.client_id
