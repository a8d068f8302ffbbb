-- Counts and the lowest updated client id, not a row a changed client: a
-- load of a million new clients would otherwise send a million rows back.
-- A row written here takes the file's load and line; rows whose answers did
-- not change get theirs from move_questionnaire_lines.sql.
WITH changed AS (
    INSERT INTO crm.questionnaires AS q (
        client_id, month, gender, near_location, partner, promo_friends, phone,
        contract_period, group_visits, age, avg_additional_charges_total,
        month_to_end_contract, lifetime, avg_class_frequency_total,
        avg_class_frequency_current_month, load_id, line
    )
    SELECT
        client_id,
        %(month)s,
        NULLIF(gender, 'NaN'),
        NULLIF(near_location, 'NaN'),
        NULLIF(partner, 'NaN'),
        NULLIF(promo_friends, 'NaN'),
        NULLIF(phone, 'NaN'),
        NULLIF(contract_period, 'NaN'),
        NULLIF(group_visits, 'NaN'),
        NULLIF(age, 'NaN'),
        NULLIF(avg_additional_charges_total, 'NaN'),
        NULLIF(month_to_end_contract, 'NaN'),
        NULLIF(lifetime, 'NaN'),
        NULLIF(avg_class_frequency_total, 'NaN'),
        NULLIF(avg_class_frequency_current_month, 'NaN'),
        %(load_id)s,
        line
    FROM questionnaires_staging
    ON CONFLICT (client_id, month) DO UPDATE SET
        gender = excluded.gender,
        near_location = excluded.near_location,
        partner = excluded.partner,
        promo_friends = excluded.promo_friends,
        phone = excluded.phone,
        contract_period = excluded.contract_period,
        group_visits = excluded.group_visits,
        age = excluded.age,
        avg_additional_charges_total = excluded.avg_additional_charges_total,
        month_to_end_contract = excluded.month_to_end_contract,
        lifetime = excluded.lifetime,
        avg_class_frequency_total = excluded.avg_class_frequency_total,
        avg_class_frequency_current_month = excluded.avg_class_frequency_current_month,
        load_id = excluded.load_id,
        line = excluded.line
    WHERE (
        q.gender, q.near_location, q.partner, q.promo_friends, q.phone,
        q.contract_period, q.group_visits, q.age, q.avg_additional_charges_total,
        q.month_to_end_contract, q.lifetime, q.avg_class_frequency_total,
        q.avg_class_frequency_current_month
    ) IS DISTINCT FROM (
        excluded.gender, excluded.near_location, excluded.partner,
        excluded.promo_friends, excluded.phone, excluded.contract_period,
        excluded.group_visits, excluded.age, excluded.avg_additional_charges_total,
        excluded.month_to_end_contract, excluded.lifetime,
        excluded.avg_class_frequency_total, excluded.avg_class_frequency_current_month
    )
    RETURNING (xmax = 0) AS inserted, client_id
)
SELECT
    count(*) FILTER (WHERE inserted) AS inserted,
    count(*) FILTER (WHERE NOT inserted) AS updated,
    min(client_id) FILTER (WHERE NOT inserted) AS first_updated
FROM changed
