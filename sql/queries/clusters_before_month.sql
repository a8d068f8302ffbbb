SELECT c.cluster_id, c.gender, c.near_location, c.partner, c.promo_friends, c.phone,
    c.contract_period, c.group_visits, c.age, c.avg_additional_charges_total,
    c.month_to_end_contract, c.lifetime, c.avg_class_frequency_total,
    c.avg_class_frequency_current_month
FROM churn.clusters AS c
WHERE c.month = (SELECT max(month) FROM churn.clusters WHERE month < %(month)s)
    AND c.size > 0
ORDER BY c.cluster_id
