-- Client portraits: each segment's plain name, its share of the month's
-- clients, its expected churners, the traits that set it apart, and how far
-- each mean answer lies from the whole base.
ALTER TABLE churn.clusters ADD COLUMN IF NOT EXISTS name text;
ALTER TABLE churn.clusters ADD COLUMN IF NOT EXISTS share double precision;
ALTER TABLE churn.clusters ADD COLUMN IF NOT EXISTS expected_churners double precision;
ALTER TABLE churn.clusters ADD COLUMN IF NOT EXISTS expected_churn_rate double precision;
ALTER TABLE churn.clusters ADD COLUMN IF NOT EXISTS traits text[];
ALTER TABLE churn.clusters ADD COLUMN IF NOT EXISTS differences jsonb;

COMMENT ON COLUMN churn.clusters.name IS
    'Plain name of the segment, from the traits that set it apart most.';
COMMENT ON COLUMN churn.clusters.expected_churners IS
    'Sum of the churn probabilities of the segment''s clients: how many are expected to leave next month.';
COMMENT ON COLUMN churn.clusters.differences IS
    'Per feature, the segment''s mean minus the mean of all the month''s clients, in standard deviations.';

CREATE TABLE IF NOT EXISTS churn.feature_influence (
    month date NOT NULL,
    feature text NOT NULL,
    label text NOT NULL,
    rank smallint NOT NULL,
    permutation_importance double precision NOT NULL,
    permutation_std double precision NOT NULL,
    lr_coefficient double precision NOT NULL,
    direction text NOT NULL CHECK (direction IN ('raises churn', 'lowers churn')),
    holdout_rows integer NOT NULL,
    run_id uuid NOT NULL REFERENCES churn.runs (run_id),
    PRIMARY KEY (month, feature)
);

COMMENT ON TABLE churn.feature_influence IS
    'Drivers of churn per month: drop of the model''s held-out ROC-AUC when the feature is shuffled, and the standardised logistic-regression coefficient.';

CREATE TABLE IF NOT EXISTS churn.feature_churn_rates (
    month date NOT NULL,
    feature text NOT NULL,
    bin_order smallint NOT NULL,
    bin_label text NOT NULL,
    lower double precision,
    upper double precision,
    clients integer NOT NULL,
    churned integer NOT NULL,
    churn_rate double precision,
    run_id uuid NOT NULL REFERENCES churn.runs (run_id),
    PRIMARY KEY (month, feature, bin_order)
);

COMMENT ON TABLE churn.feature_churn_rates IS
    'Churn rate of the labelled clients by value or quantile bin of each feature, per month.';

CREATE TABLE IF NOT EXISTS churn.recommendations (
    month date NOT NULL,
    position smallint NOT NULL,
    group_rank smallint NOT NULL,
    cluster_id smallint NOT NULL,
    group_name text NOT NULL,
    measure text NOT NULL,
    action text NOT NULL,
    why text NOT NULL,
    clients integer NOT NULL,
    expected_churners double precision NOT NULL,
    run_id uuid NOT NULL REFERENCES churn.runs (run_id),
    PRIMARY KEY (month, position)
);

COMMENT ON TABLE churn.recommendations IS
    'Measures against churn per month for the segments with the most expected churners, with the clients each targets.';

CREATE TABLE IF NOT EXISTS churn.findings (
    month date NOT NULL,
    kind text NOT NULL CHECK (kind IN ('conclusion', 'pattern')),
    position smallint NOT NULL,
    text text NOT NULL,
    run_id uuid NOT NULL REFERENCES churn.runs (run_id),
    PRIMARY KEY (month, kind, position)
);

COMMENT ON TABLE churn.findings IS
    'Conclusions and other patterns of each month, one sentence a row, computed from the month''s numbers.';

ALTER TABLE churn.runs ADD COLUMN IF NOT EXISTS report_path text;
