CREATE TABLE IF NOT EXISTS churn.runs (
    run_id uuid PRIMARY KEY,
    month date NOT NULL,
    status text NOT NULL
        CHECK (status IN ('running', 'succeeded', 'superseded', 'failed', 'failed_validation')),
    mode text CHECK (mode IN ('forward', 'backtest')),
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    rows_read integer,
    rows_quarantined integer,
    rows_scored integer,
    training_rows integer,
    model_version text,
    realised_roc_auc double precision,
    at_risk_path text,
    message text
);

-- A month has at most one published run: publishing a rerun marks the
-- earlier one superseded in the same transaction.
CREATE UNIQUE INDEX IF NOT EXISTS runs_one_published_per_month
    ON churn.runs (month) WHERE status = 'succeeded';

COMMENT ON TABLE churn.runs IS
    'One row a run attempt of the monthly job; status succeeded marks the run whose scores are published.';

CREATE TABLE IF NOT EXISTS churn.model_versions (
    version text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    algorithm text NOT NULL,
    params jsonb NOT NULL,
    features text[] NOT NULL,
    metrics jsonb NOT NULL,
    training_months date[] NOT NULL,
    training_rows integer NOT NULL,
    sklearn_version text NOT NULL,
    artifact_path text NOT NULL,
    artifact_sha256 text NOT NULL,
    status text NOT NULL CHECK (status IN ('champion', 'challenger', 'retired'))
);

COMMENT ON TABLE churn.model_versions IS
    'Registry of trained churn models, with cross-validated metrics and the hash of the model file.';

CREATE TABLE IF NOT EXISTS churn.scores (
    month date NOT NULL,
    client_id bigint NOT NULL,
    churn_probability double precision NOT NULL
        CHECK (churn_probability > 0 AND churn_probability < 1),
    risk_tier text NOT NULL CHECK (risk_tier IN ('high', 'medium', 'low')),
    cluster_id smallint NOT NULL,
    model_version text NOT NULL REFERENCES churn.model_versions (version),
    run_id uuid NOT NULL REFERENCES churn.runs (run_id),
    PRIMARY KEY (month, client_id)
);

CREATE INDEX IF NOT EXISTS scores_month_tier ON churn.scores (month, risk_tier, cluster_id);

COMMENT ON TABLE churn.scores IS
    'Probability that the client leaves in the month after month, with risk tier and segment.';

CREATE TABLE IF NOT EXISTS churn.clusters (
    month date NOT NULL,
    cluster_id smallint NOT NULL,
    size integer NOT NULL,
    churn_rate double precision,
    gender double precision,
    near_location double precision,
    partner double precision,
    promo_friends double precision,
    phone double precision,
    contract_period double precision,
    group_visits double precision,
    age double precision,
    avg_additional_charges_total double precision,
    month_to_end_contract double precision,
    lifetime double precision,
    avg_class_frequency_total double precision,
    avg_class_frequency_current_month double precision,
    run_id uuid NOT NULL REFERENCES churn.runs (run_id),
    PRIMARY KEY (month, cluster_id)
);

COMMENT ON TABLE churn.clusters IS
    'Client segments of a month: size and mean answers of the month''s clients, churn rate of the labelled clients the segment model was fitted on.';

CREATE TABLE IF NOT EXISTS churn.quarantine (
    run_id uuid NOT NULL REFERENCES churn.runs (run_id),
    month date NOT NULL,
    client_id bigint NOT NULL,
    dataset text NOT NULL CHECK (dataset IN ('scoring', 'training')),
    row_data jsonb NOT NULL,
    failed_rules text[] NOT NULL CHECK (cardinality(failed_rules) > 0)
);

CREATE INDEX IF NOT EXISTS quarantine_run ON churn.quarantine (run_id);

COMMENT ON TABLE churn.quarantine IS
    'Questionnaires kept out of training and scoring, with the validation rules they broke.';

-- The top factors behind each score, in plain words, largest first.
ALTER TABLE churn.scores ADD COLUMN IF NOT EXISTS reasons text[] NOT NULL DEFAULT '{}';

COMMENT ON COLUMN churn.scores.reasons IS
    'Up to three factors that push the client''s churn probability up, largest first, with the client''s own values.';
