-- The file line of one client of the file being loaded.
SELECT line FROM questionnaires_staging WHERE client_id = %(client_id)s
