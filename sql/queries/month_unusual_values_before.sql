-- Values outside 0 to 62 of the category columns in the months before %(month)s,
-- one row a month, column and value. month_profiles_before.sql records the values
-- from 0 to 62 as bits, and gymchurn.history runs this query only when a month's
-- min or max shows a value outside that range.
SELECT DISTINCT month, 'gender' AS column_name, gender AS value
FROM crm.questionnaires WHERE month < %(month)s AND gender NOT BETWEEN 0 AND 62
UNION ALL
SELECT DISTINCT month, 'near_location', near_location
FROM crm.questionnaires WHERE month < %(month)s AND near_location NOT BETWEEN 0 AND 62
UNION ALL
SELECT DISTINCT month, 'partner', partner
FROM crm.questionnaires WHERE month < %(month)s AND partner NOT BETWEEN 0 AND 62
UNION ALL
SELECT DISTINCT month, 'promo_friends', promo_friends
FROM crm.questionnaires WHERE month < %(month)s AND promo_friends NOT BETWEEN 0 AND 62
UNION ALL
SELECT DISTINCT month, 'phone', phone
FROM crm.questionnaires WHERE month < %(month)s AND phone NOT BETWEEN 0 AND 62
UNION ALL
SELECT DISTINCT month, 'group_visits', group_visits
FROM crm.questionnaires WHERE month < %(month)s AND group_visits NOT BETWEEN 0 AND 62
UNION ALL
SELECT DISTINCT month, 'contract_period', contract_period
FROM crm.questionnaires WHERE month < %(month)s AND contract_period NOT BETWEEN 0 AND 62
