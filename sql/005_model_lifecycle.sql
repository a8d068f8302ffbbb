-- When and why each model version got its status, and why each run trained
-- or loaded the model it used.
ALTER TABLE churn.model_versions ADD COLUMN IF NOT EXISTS promoted_at timestamptz;
ALTER TABLE churn.model_versions ADD COLUMN IF NOT EXISTS status_reason text;
ALTER TABLE churn.model_versions ADD COLUMN IF NOT EXISTS calibration text;

ALTER TABLE churn.runs ADD COLUMN IF NOT EXISTS retrain_policy text;
ALTER TABLE churn.runs ADD COLUMN IF NOT EXISTS model_decision text;
ALTER TABLE churn.runs ADD COLUMN IF NOT EXISTS decision_reason text;

CREATE TABLE IF NOT EXISTS churn.monitoring (
    month date NOT NULL,
    metric text NOT NULL,
    feature text NOT NULL DEFAULT '',
    value double precision,
    model_version text NOT NULL REFERENCES churn.model_versions (version),
    run_id uuid NOT NULL REFERENCES churn.runs (run_id),
    PRIMARY KEY (month, metric, feature)
);

COMMENT ON TABLE churn.monitoring IS
    'Per month: population stability index of each feature against the model''s training rows (metric psi), the score distribution, and realised ROC-AUC, precision and recall of the published scores once outcomes are known.';
