-- The outcomes of the file's clients whose label the file leaves unknown.
DELETE FROM crm.churn_outcomes
WHERE month = %(month)s
    AND client_id IN (SELECT client_id FROM unlabelled_staging)
