CREATE TEMPORARY TABLE outcomes_staging (
    client_id bigint NOT NULL,
    churned boolean NOT NULL
) ON COMMIT DROP
