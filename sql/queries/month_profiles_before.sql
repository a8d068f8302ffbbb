-- One row per month before %(month)s: what the batch rules compare a month with
-- (gymchurn.batch_rules.MonthProfile). <feature>_nulls counts the null cells of each
-- feature. <column>_bits has bit v set when the category column contains the value
-- v, for v from 0 to 62. <column>_min and <column>_max show whether it contains
-- values outside that range, which gymchurn.history then reads separately. No
-- DISTINCT aggregate, so that PostgreSQL hashes the months instead of sorting rows.
-- n_labelled and n_churned count the month's outcomes. Questionnaires and outcomes
-- are aggregated apart and joined by month, which takes half the time of joining
-- their rows.
-- NOTE: an outcome without a questionnaire of the same client and month counts as
-- labelled here. The loader and the simulator write none.
SELECT
    q.*,
    coalesce(o.n_labelled, 0) AS n_labelled,
    coalesce(o.n_churned, 0) AS n_churned
FROM (
    SELECT
        month,
        count(*) AS n_rows,
        count(*) - count(gender) AS gender_nulls,
        count(*) - count(near_location) AS near_location_nulls,
        count(*) - count(partner) AS partner_nulls,
        count(*) - count(promo_friends) AS promo_friends_nulls,
        count(*) - count(phone) AS phone_nulls,
        count(*) - count(contract_period) AS contract_period_nulls,
        count(*) - count(group_visits) AS group_visits_nulls,
        count(*) - count(age) AS age_nulls,
        count(*) - count(avg_additional_charges_total)
            AS avg_additional_charges_total_nulls,
        count(*) - count(month_to_end_contract) AS month_to_end_contract_nulls,
        count(*) - count(lifetime) AS lifetime_nulls,
        count(*) - count(avg_class_frequency_total) AS avg_class_frequency_total_nulls,
        count(*) - count(avg_class_frequency_current_month)
            AS avg_class_frequency_current_month_nulls,
        bit_or(1::bigint << gender) FILTER (WHERE gender BETWEEN 0 AND 62) AS gender_bits,
        min(gender) AS gender_min,
        max(gender) AS gender_max,
        bit_or(1::bigint << near_location) FILTER (WHERE near_location BETWEEN 0 AND 62)
            AS near_location_bits,
        min(near_location) AS near_location_min,
        max(near_location) AS near_location_max,
        bit_or(1::bigint << partner) FILTER (WHERE partner BETWEEN 0 AND 62)
            AS partner_bits,
        min(partner) AS partner_min,
        max(partner) AS partner_max,
        bit_or(1::bigint << promo_friends) FILTER (WHERE promo_friends BETWEEN 0 AND 62)
            AS promo_friends_bits,
        min(promo_friends) AS promo_friends_min,
        max(promo_friends) AS promo_friends_max,
        bit_or(1::bigint << phone) FILTER (WHERE phone BETWEEN 0 AND 62) AS phone_bits,
        min(phone) AS phone_min,
        max(phone) AS phone_max,
        bit_or(1::bigint << group_visits) FILTER (WHERE group_visits BETWEEN 0 AND 62)
            AS group_visits_bits,
        min(group_visits) AS group_visits_min,
        max(group_visits) AS group_visits_max,
        bit_or(1::bigint << contract_period) FILTER (WHERE contract_period BETWEEN 0 AND 62)
            AS contract_period_bits,
        min(contract_period) AS contract_period_min,
        max(contract_period) AS contract_period_max
    FROM crm.questionnaires
    WHERE month < %(month)s
    GROUP BY month
) AS q
LEFT JOIN (
    SELECT month, count(*) AS n_labelled, count(*) FILTER (WHERE churned) AS n_churned
    FROM crm.churn_outcomes
    WHERE month < %(month)s
    GROUP BY month
) AS o USING (month)
ORDER BY q.month
