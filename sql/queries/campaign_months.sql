SELECT k.month
FROM (SELECT DISTINCT month FROM crm.contacts WHERE month < %(before)s) AS k
WHERE EXISTS (SELECT FROM churn.scores AS s WHERE s.month = k.month)
    AND EXISTS (SELECT FROM crm.churn_outcomes AS o WHERE o.month = k.month)
ORDER BY k.month
