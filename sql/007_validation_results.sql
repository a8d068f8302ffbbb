-- Every rule a run checked and every batch finding, kept per run like
-- churn.runs, and where the run's Data Docs are.
CREATE TABLE IF NOT EXISTS churn.validation_results (
    run_id uuid NOT NULL REFERENCES churn.runs (run_id),
    month date NOT NULL,
    dataset text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('row', 'batch')),
    rule text NOT NULL,
    severity text NOT NULL,
    n_failed integer,
    share double precision,
    message text,
    examples jsonb,
    numbers jsonb
);

CREATE INDEX IF NOT EXISTS validation_results_run ON churn.validation_results (run_id);

COMMENT ON TABLE churn.validation_results IS
    'Outcome of every validation rule and batch rule of each run: failed rows, share, examples of failing clients and values.';

ALTER TABLE churn.runs ADD COLUMN IF NOT EXISTS data_docs_path text;

-- The value each broken rule found in each column, with the raw text of a
-- cell the loader could not read.
ALTER TABLE churn.quarantine ADD COLUMN IF NOT EXISTS failed_values jsonb;
