-- The outcomes of the file's clients whose label the file leaves unknown.
DELETE FROM crm.churn_outcomes AS o
USING questionnaires_staging AS q
WHERE o.month = %(month)s
    AND o.client_id = q.client_id
    AND NOT EXISTS (SELECT FROM outcomes_staging AS s WHERE s.client_id = q.client_id)
