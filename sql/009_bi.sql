-- Read access for BI tools: views with stable names, a comment on every table,
-- view and column of crm and churn, indexes for the usual dashboard filters,
-- and two group roles: churn_job reads crm and writes churn, and churn_bi
-- reads churn only. Every statement is idempotent, so a second upgrade changes
-- nothing. No statement here is built from text at run time.

-- Views. They run with their owner's rights (security_invoker is off), so
-- churn_bi can read churn.monthly_trend although it reads crm.churn_outcomes.

-- Later schema files append columns to churn.latest_scores, and CREATE OR
-- REPLACE here would try to drop them, which PostgreSQL rejects: the view
-- is created here only when it is missing.
DO $latest_scores$
BEGIN
IF to_regclass('churn.latest_scores') IS NULL THEN
CREATE VIEW churn.latest_scores AS
SELECT
    s.month,
    s.client_id,
    s.churn_probability,
    s.risk_tier,
    s.cluster_id,
    c.name AS cluster_name,
    s.model_version,
    s.run_id,
    s.reasons
FROM churn.scores AS s
LEFT JOIN churn.clusters AS c
    ON c.month = s.month AND c.cluster_id = s.cluster_id
WHERE s.month = (
    SELECT max(r.month) FROM churn.runs AS r WHERE r.status = 'succeeded'
);
END IF;
END
$latest_scores$;

CREATE OR REPLACE VIEW churn.cluster_summary AS
SELECT
    c.month,
    c.cluster_id,
    c.name,
    c.size,
    c.share,
    c.churn_rate,
    c.expected_churners,
    c.expected_churn_rate,
    tiers.clients_high,
    c.traits
FROM churn.clusters AS c
CROSS JOIN LATERAL (
    SELECT count(*) AS clients_high
    FROM churn.scores AS s
    WHERE s.month = c.month AND s.cluster_id = c.cluster_id AND s.risk_tier = 'high'
) AS tiers;

CREATE OR REPLACE VIEW churn.monthly_trend AS
WITH scored AS (
    SELECT
        s.month,
        count(*) AS clients_scored,
        -- Summed as numeric, whose sums are exact, so that the same rows give the
        -- same digits in any scan order, parallel or not.
        sum(s.churn_probability::numeric)::double precision AS expected_churners,
        avg(s.churn_probability::numeric)::double precision AS mean_probability,
        count(*) FILTER (WHERE s.risk_tier = 'high') AS clients_high,
        count(*) FILTER (WHERE s.risk_tier = 'medium') AS clients_medium,
        count(*) FILTER (WHERE s.risk_tier = 'low') AS clients_low,
        count(o.churned) AS outcomes_known,
        count(*) FILTER (WHERE o.churned) AS churners
    FROM churn.scores AS s
    LEFT JOIN crm.churn_outcomes AS o
        ON o.client_id = s.client_id AND o.month = s.month
    GROUP BY s.month
)
SELECT
    r.month,
    r.run_id,
    r.mode,
    r.model_version,
    r.rows_read,
    r.rows_quarantined,
    sc.clients_scored,
    sc.expected_churners,
    sc.mean_probability,
    sc.clients_high,
    sc.clients_medium,
    sc.clients_low,
    sc.outcomes_known,
    sc.churners,
    CASE WHEN NOT labels.blocked
        THEN sc.churners::double precision / nullif(sc.outcomes_known, 0)
    END AS realised_churn_rate,
    m.value AS realised_roc_auc,
    labels.blocked AS labels_blocked
FROM churn.runs AS r
JOIN scored AS sc ON sc.month = r.month
LEFT JOIN churn.monitoring AS m
    ON m.month = r.month AND m.metric = 'realised_roc_auc' AND m.feature = ''
-- Whether the run kept the month's own outcomes out: their churn share broke
-- the label rule, unconfirmed (GYMCHURN_CONFIRMED_LABEL_MONTHS).
CROSS JOIN LATERAL (
    SELECT EXISTS (
        SELECT FROM churn.validation_results AS v
        WHERE v.run_id = r.run_id
            AND v.rule = 'churned_share'
            AND v.severity = 'block_training'
            AND v.numbers ->> 'month' = to_char(r.month, 'YYYY-MM')
    ) AS blocked
) AS labels
WHERE r.status = 'succeeded';

-- Indexes. The primary key of every monthly table already starts with month.
-- These serve the at-risk ranking, the data-quality tables by month, and the
-- join of scores to outcomes. scores_month_tier (003) serves the filters by
-- risk tier and by tier and segment.

CREATE INDEX IF NOT EXISTS scores_high_tier_ranking
    ON churn.scores (month, churn_probability DESC, client_id)
    WHERE risk_tier = 'high';
CREATE INDEX IF NOT EXISTS quarantine_month ON churn.quarantine (month);
CREATE INDEX IF NOT EXISTS validation_results_month ON churn.validation_results (month);
CREATE INDEX IF NOT EXISTS churn_outcomes_month ON crm.churn_outcomes (month);

-- Roles. They are cluster-wide and created once, but the grants below are
-- per database and run on every upgrade. A migrating user without CREATEROLE
-- skips the creation with a warning and still applies every grant it can.

DO $roles$
DECLARE
    may_create_roles boolean;
    missing text[];
BEGIN
    SELECT r.rolsuper OR r.rolcreaterole INTO may_create_roles
    FROM pg_roles AS r
    WHERE r.rolname = current_user;

    SELECT array_agg(wanted.name ORDER BY wanted.name) INTO missing
    FROM (VALUES ('churn_bi'), ('churn_job')) AS wanted (name)
    WHERE NOT EXISTS (SELECT FROM pg_roles AS r WHERE r.rolname = wanted.name);

    IF missing IS NULL THEN
        RETURN;
    END IF;

    IF NOT may_create_roles THEN
        RAISE WARNING USING
            MESSAGE = 'roles ' || array_to_string(missing, ', ')
                || ' not created: user ' || current_user
                || ' has neither CREATEROLE nor SUPERUSER; their grants are skipped',
            HINT = 'As a superuser run: CREATE ROLE churn_job NOLOGIN; '
                || 'CREATE ROLE churn_bi NOLOGIN; then run gymchurn db upgrade again.';
        RETURN;
    END IF;

    -- Another database's upgrade may create the same role at the same time.
    IF 'churn_job' = ANY (missing) THEN
        BEGIN
            CREATE ROLE churn_job NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    IF 'churn_bi' = ANY (missing) THEN
        BEGIN
            CREATE ROLE churn_bi NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$roles$;

DO $job_grants$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'churn_job') THEN
        RETURN;
    END IF;
    GRANT USAGE ON SCHEMA crm, churn TO churn_job;
    GRANT SELECT ON ALL TABLES IN SCHEMA crm TO churn_job;
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA churn TO churn_job;
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA churn TO churn_job;
    -- The job reads the CRM export and never changes it.
    REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA crm FROM churn_job;
    REVOKE CREATE ON SCHEMA crm FROM churn_job;
    ALTER DEFAULT PRIVILEGES IN SCHEMA crm GRANT SELECT ON TABLES TO churn_job;
    ALTER DEFAULT PRIVILEGES IN SCHEMA churn
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO churn_job;
    ALTER DEFAULT PRIVILEGES IN SCHEMA churn GRANT USAGE, SELECT ON SEQUENCES TO churn_job;
END
$job_grants$;

DO $bi_grants$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'churn_bi') THEN
        RETURN;
    END IF;
    GRANT USAGE ON SCHEMA churn TO churn_bi;
    GRANT SELECT ON ALL TABLES IN SCHEMA churn TO churn_bi;
    -- Read only, whatever was granted by hand before.
    REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER
        ON ALL TABLES IN SCHEMA churn FROM churn_bi;
    REVOKE CREATE ON SCHEMA churn FROM churn_bi;
    REVOKE ALL ON ALL TABLES IN SCHEMA crm FROM churn_bi;
    REVOKE ALL ON SCHEMA crm FROM churn_bi;
    -- Default privileges cover the objects that the migrating user creates
    -- later, which is every object when one user applies all migrations.
    ALTER DEFAULT PRIVILEGES IN SCHEMA churn GRANT SELECT ON TABLES TO churn_bi;
END
$bi_grants$;

-- Comments for analysts. Probabilities, rates and shares are fractions from
-- 0 to 1, and month is the first day of the month the questionnaires describe.

COMMENT ON SCHEMA crm IS
    'Input of the churn job: client questionnaires and churn outcomes exported from the CRM. Not readable by churn_bi.';
COMMENT ON SCHEMA churn IS
    'Everything the monthly churn job writes: scores, segments, drivers, runs, model registry, data quality. Readable by churn_bi.';

-- crm.questionnaires
COMMENT ON COLUMN crm.questionnaires.client_id IS 'Client id from the CRM export (positive integer).';
COMMENT ON COLUMN crm.questionnaires.month IS 'First day of the month the answers describe.';
COMMENT ON COLUMN crm.questionnaires.gender IS 'Gender, coded 0 or 1.';
COMMENT ON COLUMN crm.questionnaires.near_location IS '1 when the client lives or works near the club, else 0.';
COMMENT ON COLUMN crm.questionnaires.partner IS '1 when the client works for a partner company of the club (discount), else 0.';
COMMENT ON COLUMN crm.questionnaires.promo_friends IS '1 when the client first signed up with a bring-a-friend promo code, else 0.';
COMMENT ON COLUMN crm.questionnaires.phone IS '1 when the client gave a contact phone, else 0.';
COMMENT ON COLUMN crm.questionnaires.contract_period IS 'Length of the current contract in months: 1, 3, 6 or 12.';
COMMENT ON COLUMN crm.questionnaires.group_visits IS '1 when the client attends group classes, else 0.';
COMMENT ON COLUMN crm.questionnaires.age IS 'Age in years.';
COMMENT ON COLUMN crm.questionnaires.avg_additional_charges_total IS 'Total spent on other club services (cafe, massage, ...), in the club''s currency.';
COMMENT ON COLUMN crm.questionnaires.month_to_end_contract IS 'Months until the current contract ends, 1 to contract_period.';
COMMENT ON COLUMN crm.questionnaires.lifetime IS 'Months since the client''s first visit.';
COMMENT ON COLUMN crm.questionnaires.avg_class_frequency_total IS 'Mean visits a week since the first visit.';
COMMENT ON COLUMN crm.questionnaires.avg_class_frequency_current_month IS 'Mean visits a week over the month the answers describe.';

-- crm.churn_outcomes
COMMENT ON COLUMN crm.churn_outcomes.client_id IS 'Client id, as in crm.questionnaires.';
COMMENT ON COLUMN crm.churn_outcomes.month IS 'Month of the questionnaire the outcome belongs to (first day); the client left or stayed in the month after it.';
COMMENT ON COLUMN crm.churn_outcomes.churned IS 'true when the client left during the month after month, false when the client stayed.';

-- crm.questionnaire_faults
COMMENT ON COLUMN crm.questionnaire_faults.client_id IS 'Client id of the questionnaire with the unreadable cell.';
COMMENT ON COLUMN crm.questionnaire_faults.month IS 'Month of that questionnaire (first day).';
COMMENT ON COLUMN crm.questionnaire_faults.column_name IS 'Questionnaire column of the cell, in snake_case as in crm.questionnaires.';
COMMENT ON COLUMN crm.questionnaire_faults.line IS 'Line number of the cell''s row in the loaded file.';
COMMENT ON COLUMN crm.questionnaire_faults.raw_value IS 'The cell''s text as written in the file.';
COMMENT ON COLUMN crm.questionnaire_faults.fault IS 'Why the cell was not read: missing, not_a_number, not_an_integer or too_large.';

-- churn.runs
COMMENT ON COLUMN churn.runs.run_id IS 'Prefect flow run id of the run.';
COMMENT ON COLUMN churn.runs.month IS 'Month the run scored (first day).';
COMMENT ON COLUMN churn.runs.status IS 'running, succeeded (the month''s published run, at most one a month), superseded (published earlier, replaced by a rerun), failed or failed_validation.';
COMMENT ON COLUMN churn.runs.mode IS 'forward: scored with a model trained on earlier months; backtest: the month''s own labels scored out of fold. NULL when the run stopped before choosing.';
COMMENT ON COLUMN churn.runs.started_at IS 'When the run started.';
COMMENT ON COLUMN churn.runs.finished_at IS 'When the run ended, NULL while it runs.';
COMMENT ON COLUMN churn.runs.rows_read IS 'Questionnaires of the month read; rows_read = rows_scored + rows_quarantined.';
COMMENT ON COLUMN churn.runs.rows_quarantined IS 'Questionnaires of the month kept out of scoring by validation (see churn.quarantine).';
COMMENT ON COLUMN churn.runs.rows_scored IS 'Clients scored, one row each in churn.scores.';
COMMENT ON COLUMN churn.runs.training_rows IS 'Labelled questionnaires the model was trained on.';
COMMENT ON COLUMN churn.runs.model_version IS 'Model that scored the month (churn.model_versions.version).';
COMMENT ON COLUMN churn.runs.realised_roc_auc IS 'ROC-AUC of the month''s scores against its own outcomes, when they were known at run time (a backtest); 0.5 is chance, 1 is perfect.';
COMMENT ON COLUMN churn.runs.at_risk_path IS 'Path of the at-risk CSV file written by the run, on the machine that ran it.';
COMMENT ON COLUMN churn.runs.message IS 'Summary of the run, or the reason it failed.';
COMMENT ON COLUMN churn.runs.retrain_policy IS 'Retrain policy of the run: auto, always or never.';
COMMENT ON COLUMN churn.runs.model_decision IS 'How the run got its model: promoted challenger, kept champion, loaded champion or loaded model of the month.';
COMMENT ON COLUMN churn.runs.decision_reason IS 'Why the run trained or loaded its model, with the metrics compared.';
COMMENT ON COLUMN churn.runs.data_docs_path IS 'Folder of the run''s Great Expectations Data Docs, on the machine that ran it.';
COMMENT ON COLUMN churn.runs.report_path IS 'Path of the month''s HTML report, on the machine that ran it.';

-- churn.model_versions
COMMENT ON COLUMN churn.model_versions.version IS 'Model version name, vYYYYMM-hash of the training rows.';
COMMENT ON COLUMN churn.model_versions.created_at IS 'When the version was registered.';
COMMENT ON COLUMN churn.model_versions.algorithm IS 'logistic_regression, random_forest or hist_gradient_boosting.';
COMMENT ON COLUMN churn.model_versions.params IS 'Hyperparameters chosen by cross-validation, as JSON.';
COMMENT ON COLUMN churn.model_versions.features IS 'Questionnaire columns the model reads, in order.';
COMMENT ON COLUMN churn.model_versions.metrics IS 'Cross-validated metrics (roc_auc, pr_auc, brier, ece, log_loss, precision, recall, accuracy) and those of every candidate, as JSON.';
COMMENT ON COLUMN churn.model_versions.training_months IS 'Months of the labelled questionnaires the model was trained on.';
COMMENT ON COLUMN churn.model_versions.training_rows IS 'Labelled questionnaires the model was trained on.';
COMMENT ON COLUMN churn.model_versions.sklearn_version IS 'scikit-learn version that wrote the model file.';
COMMENT ON COLUMN churn.model_versions.artifact_path IS 'Path of the model file, on the machine that ran the job.';
COMMENT ON COLUMN churn.model_versions.artifact_sha256 IS 'SHA-256 of the model file, checked before it is loaded.';
COMMENT ON COLUMN churn.model_versions.status IS 'champion (scores the coming months), challenger (trained, not promoted) or retired (a former champion).';
COMMENT ON COLUMN churn.model_versions.promoted_at IS 'When the version last became champion, NULL if never.';
COMMENT ON COLUMN churn.model_versions.status_reason IS 'Why the version has its status.';
COMMENT ON COLUMN churn.model_versions.calibration IS 'Probability calibration chosen by cross-validation: none, sigmoid or isotonic.';

-- churn.scores
COMMENT ON COLUMN churn.scores.month IS 'Month of the questionnaire scored (first day); the probability is of leaving in the month after it.';
COMMENT ON COLUMN churn.scores.client_id IS 'Client id, as in the CRM.';
COMMENT ON COLUMN churn.scores.churn_probability IS 'Calibrated probability (0 to 1, exclusive) that the client leaves in the month after month.';
COMMENT ON COLUMN churn.scores.risk_tier IS 'high (probability at least GYMCHURN_RISK_HIGH_THRESHOLD, default 0.5, or the top GYMCHURN_RISK_CAPACITY clients when that is set), medium (at least GYMCHURN_RISK_MEDIUM_THRESHOLD, default 0.25) or low.';
COMMENT ON COLUMN churn.scores.cluster_id IS 'Client segment of the month (churn.clusters.cluster_id); ids stay stable from month to month.';
COMMENT ON COLUMN churn.scores.model_version IS 'Model that produced the probability (churn.model_versions.version).';
COMMENT ON COLUMN churn.scores.run_id IS 'Run that published the row (churn.runs.run_id).';

-- churn.clusters
COMMENT ON COLUMN churn.clusters.month IS 'Month of the clients segmented (first day).';
COMMENT ON COLUMN churn.clusters.cluster_id IS 'Segment id, 0 upwards, stable from month to month.';
COMMENT ON COLUMN churn.clusters.size IS 'Clients of the month in the segment.';
COMMENT ON COLUMN churn.clusters.churn_rate IS 'Share of the segment''s labelled clients who left (0 to 1), among the labelled month the numbers describe: the latest labelled month, or the month itself in a backtest. NULL without labelled clients.';
COMMENT ON COLUMN churn.clusters.gender IS 'Mean of gender (0/1) over the segment''s clients.';
COMMENT ON COLUMN churn.clusters.near_location IS 'Share of the segment''s clients living or working near the club (0 to 1).';
COMMENT ON COLUMN churn.clusters.partner IS 'Share of the segment''s clients employed by a partner company (0 to 1).';
COMMENT ON COLUMN churn.clusters.promo_friends IS 'Share of the segment''s clients who signed up with a bring-a-friend code (0 to 1).';
COMMENT ON COLUMN churn.clusters.phone IS 'Share of the segment''s clients who gave a phone (0 to 1).';
COMMENT ON COLUMN churn.clusters.contract_period IS 'Mean contract length of the segment''s clients, in months.';
COMMENT ON COLUMN churn.clusters.group_visits IS 'Share of the segment''s clients attending group classes (0 to 1).';
COMMENT ON COLUMN churn.clusters.age IS 'Mean age of the segment''s clients, in years.';
COMMENT ON COLUMN churn.clusters.avg_additional_charges_total IS 'Mean total spent on other club services by the segment''s clients.';
COMMENT ON COLUMN churn.clusters.month_to_end_contract IS 'Mean months until the contract ends.';
COMMENT ON COLUMN churn.clusters.lifetime IS 'Mean months since the first visit.';
COMMENT ON COLUMN churn.clusters.avg_class_frequency_total IS 'Mean of the visits a week since the first visit.';
COMMENT ON COLUMN churn.clusters.avg_class_frequency_current_month IS 'Mean of the visits a week over the month.';
COMMENT ON COLUMN churn.clusters.run_id IS 'Run that published the row (churn.runs.run_id).';
COMMENT ON COLUMN churn.clusters.share IS 'Segment size divided by the month''s scored clients (0 to 1).';
COMMENT ON COLUMN churn.clusters.expected_churn_rate IS 'Mean churn probability of the segment''s clients (0 to 1): expected_churners / size.';
COMMENT ON COLUMN churn.clusters.traits IS 'What sets the segment apart from the whole base, strongest first, in plain words.';

-- churn.quarantine
COMMENT ON COLUMN churn.quarantine.run_id IS 'Run that quarantined the row (churn.runs.run_id).';
COMMENT ON COLUMN churn.quarantine.month IS 'Month of the questionnaire (first day).';
COMMENT ON COLUMN churn.quarantine.client_id IS 'Client id of the questionnaire.';
COMMENT ON COLUMN churn.quarantine.dataset IS 'scoring (the month''s questionnaires) or training (labelled earlier months).';
COMMENT ON COLUMN churn.quarantine.row_data IS 'The questionnaire as read, column to value, as JSON.';
COMMENT ON COLUMN churn.quarantine.failed_rules IS 'Validation rules the row broke.';
COMMENT ON COLUMN churn.quarantine.failed_values IS 'Per broken rule, column to the value found (the raw text of a cell that could not be read), as JSON.';

-- churn.validation_results
COMMENT ON COLUMN churn.validation_results.run_id IS 'Run that checked the rule (churn.runs.run_id).';
COMMENT ON COLUMN churn.validation_results.month IS 'Month the run scored (first day).';
COMMENT ON COLUMN churn.validation_results.dataset IS 'Data set checked, for example questionnaires of 2026-10.';
COMMENT ON COLUMN churn.validation_results.kind IS 'row (a Great Expectations rule on every row) or batch (a rule comparing the month with earlier months).';
COMMENT ON COLUMN churn.validation_results.rule IS 'Name of the rule.';
COMMENT ON COLUMN churn.validation_results.severity IS 'Row rules: quarantine (the row is not scored) or warning. Batch rules: error (stops the run), warning or block_training (keeps a month''s labels out of training).';
COMMENT ON COLUMN churn.validation_results.n_failed IS 'Rows that broke the rule, or the rows a batch finding counts; NULL where no count applies.';
COMMENT ON COLUMN churn.validation_results.share IS 'n_failed divided by the batch''s rows (0 to 1); NULL where it does not apply.';
COMMENT ON COLUMN churn.validation_results.message IS 'What the rule found, in plain words.';
COMMENT ON COLUMN churn.validation_results.examples IS 'For row rules, failing client ids with their values; for batch findings, the finding''s examples; as JSON.';
COMMENT ON COLUMN churn.validation_results.numbers IS 'Figures behind a batch finding (counts, shares, bands), as JSON.';

-- churn.monitoring
COMMENT ON COLUMN churn.monitoring.month IS 'Month the metric describes (first day).';
COMMENT ON COLUMN churn.monitoring.metric IS 'psi (per feature), score_mean, score_p50, score_p90, share_high, and once outcomes are known realised_roc_auc, realised_precision_high, realised_recall_high, realised_churn_rate, realised_mean_probability, realised_outcomes.';
COMMENT ON COLUMN churn.monitoring.feature IS 'Questionnaire column for psi; empty text for the other metrics.';
COMMENT ON COLUMN churn.monitoring.value IS 'Value of the metric. psi: 0 is no drift, and above GYMCHURN_DRIFT_PSI_THRESHOLD (default 0.25) it makes --retrain auto train. Probabilities, shares and rates are 0 to 1; realised_outcomes is a count of clients.';
COMMENT ON COLUMN churn.monitoring.model_version IS 'Model whose scores the metric describes (churn.model_versions.version).';
COMMENT ON COLUMN churn.monitoring.run_id IS 'Run that wrote the metric (churn.runs.run_id).';

-- churn.feature_influence
COMMENT ON COLUMN churn.feature_influence.month IS 'Month the drivers describe (first day).';
COMMENT ON COLUMN churn.feature_influence.feature IS 'Questionnaire column.';
COMMENT ON COLUMN churn.feature_influence.label IS 'Plain name of the feature.';
COMMENT ON COLUMN churn.feature_influence.rank IS '1 for the largest permutation importance.';
COMMENT ON COLUMN churn.feature_influence.permutation_importance IS 'Drop of the held-out ROC-AUC when the feature is shuffled.';
COMMENT ON COLUMN churn.feature_influence.permutation_std IS 'Standard deviation of that drop over the repeated shuffles.';
COMMENT ON COLUMN churn.feature_influence.lr_coefficient IS 'Coefficient of a logistic regression on standardised features: change in log-odds of churn for one standard deviation, other features held fixed.';
COMMENT ON COLUMN churn.feature_influence.direction IS 'raises churn or lowers churn, the sign of lr_coefficient.';
COMMENT ON COLUMN churn.feature_influence.holdout_rows IS 'Held-out labelled rows the permutation importance was measured on.';
COMMENT ON COLUMN churn.feature_influence.run_id IS 'Run that published the row (churn.runs.run_id).';

-- churn.feature_churn_rates
COMMENT ON COLUMN churn.feature_churn_rates.month IS 'Month the rates describe (first day).';
COMMENT ON COLUMN churn.feature_churn_rates.feature IS 'Questionnaire column.';
COMMENT ON COLUMN churn.feature_churn_rates.bin_order IS 'Position of the bin, 0 for the lowest values.';
COMMENT ON COLUMN churn.feature_churn_rates.bin_label IS 'Value or range of the bin as text, for example 1 or 27.5-33.';
COMMENT ON COLUMN churn.feature_churn_rates.lower IS 'Lowest value in the bin (inclusive).';
COMMENT ON COLUMN churn.feature_churn_rates.upper IS 'Highest value in the bin (inclusive).';
COMMENT ON COLUMN churn.feature_churn_rates.clients IS 'Labelled clients in the bin.';
COMMENT ON COLUMN churn.feature_churn_rates.churned IS 'Of those, clients who left.';
COMMENT ON COLUMN churn.feature_churn_rates.churn_rate IS 'churned / clients (0 to 1).';
COMMENT ON COLUMN churn.feature_churn_rates.run_id IS 'Run that published the row (churn.runs.run_id).';

-- churn.recommendations
COMMENT ON COLUMN churn.recommendations.month IS 'Month the measures are for (first day).';
COMMENT ON COLUMN churn.recommendations.position IS 'Order of the measure within the month, from 1.';
COMMENT ON COLUMN churn.recommendations.group_rank IS 'Rank of the target segment, 1 for the most expected churners.';
COMMENT ON COLUMN churn.recommendations.cluster_id IS 'Target segment (churn.clusters.cluster_id).';
COMMENT ON COLUMN churn.recommendations.group_name IS 'Plain name of the target segment.';
COMMENT ON COLUMN churn.recommendations.measure IS 'Name of the measure, from the measures file.';
COMMENT ON COLUMN churn.recommendations.action IS 'What to do, in plain words.';
COMMENT ON COLUMN churn.recommendations.why IS 'The driver and the segment figures that make the measure fit.';
COMMENT ON COLUMN churn.recommendations.clients IS 'Clients of the high and medium tiers in the segment that the measure targets.';
COMMENT ON COLUMN churn.recommendations.expected_churners IS 'Sum of those clients'' churn probabilities.';
COMMENT ON COLUMN churn.recommendations.run_id IS 'Run that published the row (churn.runs.run_id).';

-- churn.findings
COMMENT ON COLUMN churn.findings.month IS 'Month the sentence describes (first day).';
COMMENT ON COLUMN churn.findings.kind IS 'conclusion (the month''s main conclusions) or pattern (other patterns in the data).';
COMMENT ON COLUMN churn.findings.position IS 'Order of the sentence within the month and kind, from 1.';
COMMENT ON COLUMN churn.findings.text IS 'One sentence, computed from the month''s numbers.';
COMMENT ON COLUMN churn.findings.run_id IS 'Run that published the row (churn.runs.run_id).';

-- churn.at_risk: comments only. Its columns belong to 004_views.sql and later files.
COMMENT ON COLUMN churn.at_risk.month IS 'Month of the questionnaire scored (first day).';
COMMENT ON COLUMN churn.at_risk.rank IS 'Rank within the month, 1 for the highest churn probability; ties go to the lower client id.';
COMMENT ON COLUMN churn.at_risk.client_id IS 'Client id, as in the CRM.';
COMMENT ON COLUMN churn.at_risk.churn_probability IS 'Probability (0 to 1) that the client leaves in the month after month.';
COMMENT ON COLUMN churn.at_risk.risk_tier IS 'Always high in this view.';
COMMENT ON COLUMN churn.at_risk.cluster_id IS 'Client segment (churn.clusters.cluster_id).';
COMMENT ON COLUMN churn.at_risk.model_version IS 'Model that produced the probability.';
COMMENT ON COLUMN churn.at_risk.reasons IS 'Up to three factors that push the probability up, largest first.';

-- churn.latest_scores
COMMENT ON VIEW churn.latest_scores IS
    'Every scored client of the latest published month (the latest month with a succeeded run), with the segment name.';
COMMENT ON COLUMN churn.latest_scores.month IS 'The latest published month (first day).';
COMMENT ON COLUMN churn.latest_scores.client_id IS 'Client id, as in the CRM.';
COMMENT ON COLUMN churn.latest_scores.churn_probability IS 'Probability (0 to 1) that the client leaves next month.';
COMMENT ON COLUMN churn.latest_scores.risk_tier IS 'high, medium or low.';
COMMENT ON COLUMN churn.latest_scores.cluster_id IS 'Client segment (churn.clusters.cluster_id).';
COMMENT ON COLUMN churn.latest_scores.cluster_name IS 'Plain name of the segment.';
COMMENT ON COLUMN churn.latest_scores.model_version IS 'Model that produced the probability.';
COMMENT ON COLUMN churn.latest_scores.run_id IS 'Run that published the row.';
COMMENT ON COLUMN churn.latest_scores.reasons IS 'Up to three factors that push the probability up, largest first.';

-- churn.cluster_summary
COMMENT ON VIEW churn.cluster_summary IS
    'One row a month and segment: name, size, churn rates, expected churners, clients in the high tier and traits.';
COMMENT ON COLUMN churn.cluster_summary.month IS 'Month of the clients segmented (first day).';
COMMENT ON COLUMN churn.cluster_summary.cluster_id IS 'Segment id, stable from month to month.';
COMMENT ON COLUMN churn.cluster_summary.name IS 'Plain name of the segment.';
COMMENT ON COLUMN churn.cluster_summary.size IS 'Clients of the month in the segment.';
COMMENT ON COLUMN churn.cluster_summary.share IS 'size divided by the month''s scored clients (0 to 1).';
COMMENT ON COLUMN churn.cluster_summary.churn_rate IS 'Share of the segment''s labelled clients who left (0 to 1); NULL without labelled clients.';
COMMENT ON COLUMN churn.cluster_summary.expected_churners IS 'Sum of the segment''s churn probabilities: clients expected to leave next month.';
COMMENT ON COLUMN churn.cluster_summary.expected_churn_rate IS 'expected_churners / size (0 to 1).';
COMMENT ON COLUMN churn.cluster_summary.clients_high IS 'Clients of the segment in the high risk tier.';
COMMENT ON COLUMN churn.cluster_summary.traits IS 'What sets the segment apart, strongest first.';

-- churn.monthly_trend
COMMENT ON VIEW churn.monthly_trend IS
    'One row a published month: clients scored, expected churners, risk tiers, and realised churn and ROC-AUC once outcomes are known.';
COMMENT ON COLUMN churn.monthly_trend.month IS 'Published month (first day).';
COMMENT ON COLUMN churn.monthly_trend.run_id IS 'Run that published the month.';
COMMENT ON COLUMN churn.monthly_trend.mode IS 'forward or backtest.';
COMMENT ON COLUMN churn.monthly_trend.model_version IS 'Model that scored the month.';
COMMENT ON COLUMN churn.monthly_trend.rows_read IS 'Questionnaires of the month read.';
COMMENT ON COLUMN churn.monthly_trend.rows_quarantined IS 'Questionnaires kept out of scoring by validation.';
COMMENT ON COLUMN churn.monthly_trend.clients_scored IS 'Clients with a score.';
COMMENT ON COLUMN churn.monthly_trend.expected_churners IS 'Sum of the churn probabilities: clients expected to leave in the next month.';
COMMENT ON COLUMN churn.monthly_trend.mean_probability IS 'Mean churn probability (0 to 1).';
COMMENT ON COLUMN churn.monthly_trend.clients_high IS 'Clients in the high risk tier.';
COMMENT ON COLUMN churn.monthly_trend.clients_medium IS 'Clients in the medium risk tier.';
COMMENT ON COLUMN churn.monthly_trend.clients_low IS 'Clients in the low risk tier.';
COMMENT ON COLUMN churn.monthly_trend.outcomes_known IS 'Scored clients whose outcome is in the CRM; 0 until the month after has ended and been loaded.';
COMMENT ON COLUMN churn.monthly_trend.churners IS 'Scored clients who left in the month after.';
COMMENT ON COLUMN churn.monthly_trend.realised_churn_rate IS 'churners / outcomes_known (0 to 1); NULL while no outcome is known, and when labels_blocked.';
COMMENT ON COLUMN churn.monthly_trend.labels_blocked IS 'The run that published the month kept its outcomes out: their churn share broke the label rule and was not confirmed. Check the Churn column, reload the month and run it again.';
COMMENT ON COLUMN churn.monthly_trend.realised_roc_auc IS 'ROC-AUC of the month''s scores against its outcomes, as the job measured it (churn.monitoring); NULL until a run has measured it.';
