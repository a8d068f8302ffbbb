-- One row per month before %(month)s: what the batch rules compare a month with
-- (gymchurn.batch_rules.MonthProfile). <feature>_nulls counts the null cells of each
-- feature. <column>_bits has bit v set when the category column holds the value v,
-- for v from 0 to 62; <column>_min and <column>_max tell whether it holds values
-- outside that range, which gymchurn.history then reads separately. No DISTINCT
-- aggregate, so that PostgreSQL hashes the months instead of sorting every row.
SELECT
    q.month,
    count(*) AS n_rows,
    count(*) - count(q.gender) AS gender_nulls,
    count(*) - count(q.near_location) AS near_location_nulls,
    count(*) - count(q.partner) AS partner_nulls,
    count(*) - count(q.promo_friends) AS promo_friends_nulls,
    count(*) - count(q.phone) AS phone_nulls,
    count(*) - count(q.contract_period) AS contract_period_nulls,
    count(*) - count(q.group_visits) AS group_visits_nulls,
    count(*) - count(q.age) AS age_nulls,
    count(*) - count(q.avg_additional_charges_total) AS avg_additional_charges_total_nulls,
    count(*) - count(q.month_to_end_contract) AS month_to_end_contract_nulls,
    count(*) - count(q.lifetime) AS lifetime_nulls,
    count(*) - count(q.avg_class_frequency_total) AS avg_class_frequency_total_nulls,
    count(*) - count(q.avg_class_frequency_current_month)
        AS avg_class_frequency_current_month_nulls,
    bit_or(1::bigint << q.gender) FILTER (WHERE q.gender BETWEEN 0 AND 62) AS gender_bits,
    min(q.gender) AS gender_min,
    max(q.gender) AS gender_max,
    bit_or(1::bigint << q.near_location) FILTER (WHERE q.near_location BETWEEN 0 AND 62)
        AS near_location_bits,
    min(q.near_location) AS near_location_min,
    max(q.near_location) AS near_location_max,
    bit_or(1::bigint << q.partner) FILTER (WHERE q.partner BETWEEN 0 AND 62) AS partner_bits,
    min(q.partner) AS partner_min,
    max(q.partner) AS partner_max,
    bit_or(1::bigint << q.promo_friends) FILTER (WHERE q.promo_friends BETWEEN 0 AND 62)
        AS promo_friends_bits,
    min(q.promo_friends) AS promo_friends_min,
    max(q.promo_friends) AS promo_friends_max,
    bit_or(1::bigint << q.phone) FILTER (WHERE q.phone BETWEEN 0 AND 62) AS phone_bits,
    min(q.phone) AS phone_min,
    max(q.phone) AS phone_max,
    bit_or(1::bigint << q.group_visits) FILTER (WHERE q.group_visits BETWEEN 0 AND 62)
        AS group_visits_bits,
    min(q.group_visits) AS group_visits_min,
    max(q.group_visits) AS group_visits_max,
    bit_or(1::bigint << q.contract_period) FILTER (WHERE q.contract_period BETWEEN 0 AND 62)
        AS contract_period_bits,
    min(q.contract_period) AS contract_period_min,
    max(q.contract_period) AS contract_period_max,
    count(o.churned) AS n_labelled,
    count(*) FILTER (WHERE o.churned) AS n_churned
FROM crm.questionnaires AS q
LEFT JOIN crm.churn_outcomes AS o USING (client_id, month)
WHERE q.month < %(month)s
GROUP BY q.month
ORDER BY q.month
