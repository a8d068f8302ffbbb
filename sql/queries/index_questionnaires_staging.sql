-- Built once the file is staged. The deletes that join the staging table with
-- a month's rows look each client up here, whatever the server expects of the
-- month's size.
CREATE INDEX ON questionnaires_staging (client_id)
