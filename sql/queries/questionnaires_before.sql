SELECT
    q.client_id, q.month, q.gender, q.near_location, q.partner,
    q.promo_friends, q.phone, q.contract_period, q.group_visits, q.age,
    q.avg_additional_charges_total, q.month_to_end_contract, q.lifetime,
    q.avg_class_frequency_total, q.avg_class_frequency_current_month,
    o.churned
FROM crm.questionnaires AS q
LEFT JOIN crm.churn_outcomes AS o USING (client_id, month)
WHERE q.month < %(month)s
ORDER BY q.month, q.client_id
