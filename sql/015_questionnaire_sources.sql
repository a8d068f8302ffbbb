-- The file and line of each questionnaire, so that a quarantined row names
-- where to correct it. A load of a file records the file's resolved
-- path for the month in crm.questionnaire_loads, once: loading the same path
-- again reuses the row. Every questionnaire of the file keeps that load's id
-- and its own line, also when its answers did not change. A questionnaire
-- that a later version of the same file no longer has keeps the load but
-- loses its line, where another row is now. Questionnaires loaded before
-- this file was applied, or written by gymchurn simulate, have neither.
CREATE TABLE IF NOT EXISTS crm.questionnaire_loads (
    load_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    month date NOT NULL CHECK (month = date_trunc('month', month)::date),
    source_file text NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (month, source_file)
);

COMMENT ON TABLE crm.questionnaire_loads IS
    'One row a load of a questionnaire file (gymchurn load-csv).';
COMMENT ON COLUMN crm.questionnaire_loads.load_id IS 'Id of the load, in the order loads were made.';
COMMENT ON COLUMN crm.questionnaire_loads.month IS 'Month the file was loaded for (first day).';
COMMENT ON COLUMN crm.questionnaire_loads.source_file IS 'Resolved path of the loaded file.';
COMMENT ON COLUMN crm.questionnaire_loads.loaded_at IS 'When the file was last loaded.';

-- No foreign key on load_id: its check took 3.9 s against 0.6 s for a
-- million inserted rows. The load's row is written in the same transaction
-- as its questionnaires, and no code deletes loads.
ALTER TABLE crm.questionnaires
    ADD COLUMN IF NOT EXISTS load_id bigint,
    ADD COLUMN IF NOT EXISTS line integer CHECK (line > 0);

COMMENT ON COLUMN crm.questionnaires.load_id IS
    'Load that stored the answers (crm.questionnaire_loads); NULL for rows loaded before loads were recorded, and for simulated ones.';
COMMENT ON COLUMN crm.questionnaires.line IS 'Line of the questionnaire in the file of that load; NULL when the file was loaded again without it.';

ALTER TABLE churn.quarantine
    ADD COLUMN IF NOT EXISTS source_file text,
    ADD COLUMN IF NOT EXISTS line integer;

COMMENT ON COLUMN churn.quarantine.source_file IS
    'Resolved path of the file the questionnaire was loaded from; NULL when its load was not recorded.';
COMMENT ON COLUMN churn.quarantine.line IS 'Line of the questionnaire in that file.';

DO $source_grants$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'churn_job') THEN
        GRANT SELECT ON crm.questionnaire_loads TO churn_job;
    END IF;
END
$source_grants$;
