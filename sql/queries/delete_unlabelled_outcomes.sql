-- The outcomes of the file's clients whose label the file leaves unknown.
-- EXCEPT compares the two lists by hashing or sorting them: a NOT EXISTS
-- over the unindexed staging tables was planned as a nested loop, which took
-- minutes at 200,000 rows.
DELETE FROM crm.churn_outcomes
WHERE month = %(month)s
    AND client_id IN (
        SELECT client_id FROM questionnaires_staging
        EXCEPT
        SELECT client_id FROM outcomes_staging
    )
