INSERT INTO unlabelled_staging (client_id)
SELECT client_id FROM questionnaires_staging
EXCEPT
SELECT client_id FROM outcomes_staging
