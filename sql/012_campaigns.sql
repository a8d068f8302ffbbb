-- Measuring the retention campaigns: a control holdout in the scores, the
-- contacts marketers made, and the measured effect per month. Every statement
-- is idempotent, because every upgrade applies all schema files again.

-- The holdout flag. A held-out client stays in churn.scores but leaves the
-- at-risk list, so that nobody contacts it and its churn shows what the list
-- would have done without the campaign.
ALTER TABLE churn.scores ADD COLUMN IF NOT EXISTS holdout boolean NOT NULL DEFAULT false;

COMMENT ON COLUMN churn.scores.holdout IS
    'true for a client of the high or medium tier held out as the control group of the month (GYMCHURN_HOLDOUT_SHARE of each tier and segment): left out of churn.at_risk and the at-risk exports, never to be contacted.';

-- The same columns as in 010_marketing.sql, so CREATE OR REPLACE is allowed;
-- only the held-out clients leave the list, and the ranks close up.
CREATE OR REPLACE VIEW churn.at_risk AS
SELECT
    s.month,
    row_number() OVER (
        PARTITION BY s.month ORDER BY s.churn_probability DESC, s.client_id
    ) AS rank,
    s.client_id,
    s.churn_probability,
    s.risk_tier,
    s.cluster_id,
    s.model_version,
    s.reasons,
    c.name AS segment,
    s.suggested_action,
    q.phone = 1 AS has_phone
FROM churn.scores AS s
LEFT JOIN churn.clusters AS c
    ON c.month = s.month AND c.cluster_id = s.cluster_id
LEFT JOIN crm.questionnaires AS q
    ON q.month = s.month AND q.client_id = s.client_id
WHERE s.risk_tier = 'high' AND NOT s.holdout;

COMMENT ON VIEW churn.at_risk IS
    'Clients in the high risk tier, ranked per month from the highest churn probability; the held-out control clients (churn.scores.holdout) are left out.';
COMMENT ON COLUMN churn.at_risk.rank IS
    'Rank within the month among the listed clients, 1 for the highest churn probability; ties go to the lower client id. Held-out clients take no rank.';

-- 009_bi.sql creates churn.latest_scores only when it is missing, so this
-- definition with the holdout column appended survives later upgrades.
CREATE OR REPLACE VIEW churn.latest_scores AS
SELECT
    s.month,
    s.client_id,
    s.churn_probability,
    s.risk_tier,
    s.cluster_id,
    c.name AS cluster_name,
    s.model_version,
    s.run_id,
    s.reasons,
    s.holdout
FROM churn.scores AS s
LEFT JOIN churn.clusters AS c
    ON c.month = s.month AND c.cluster_id = s.cluster_id
WHERE s.month = (
    SELECT max(r.month) FROM churn.runs AS r WHERE r.status = 'succeeded'
);

COMMENT ON COLUMN churn.latest_scores.holdout IS
    'true for a client held out of the at-risk list as the month''s control group.';

-- Contacts made by marketers, as loaded by gymchurn contacts load. An input
-- like the questionnaires, so it lives in crm: churn_job reads it, churn_bi
-- sees only the aggregates in churn.campaign_results.
CREATE TABLE IF NOT EXISTS crm.contacts (
    month date NOT NULL CHECK (month = date_trunc('month', month)::date),
    client_id bigint NOT NULL,
    contact_date date NOT NULL,
    channel text NOT NULL CHECK (channel <> ''),
    outcome text,
    source_file text NOT NULL,
    line integer NOT NULL,
    load_id uuid NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (month, client_id, contact_date, channel)
);

CREATE INDEX IF NOT EXISTS contacts_month_file ON crm.contacts (month, source_file);

COMMENT ON TABLE crm.contacts IS
    'Contacts marketers made with clients of a month''s at-risk list, one row a client, day and channel.';
COMMENT ON COLUMN crm.contacts.month IS 'Scored month whose at-risk list the client was on (first day); the contact falls in the month after it.';
COMMENT ON COLUMN crm.contacts.client_id IS 'Client id, as in churn.scores.';
COMMENT ON COLUMN crm.contacts.contact_date IS 'Day of the contact, within the month after month.';
COMMENT ON COLUMN crm.contacts.channel IS 'How the client was contacted (call, sms, email, ...), in lower case as written in the file.';
COMMENT ON COLUMN crm.contacts.outcome IS 'How the contact went, as written in the file (reached, no answer, accepted offer, ...); NULL when the cell was empty.';
COMMENT ON COLUMN crm.contacts.source_file IS 'Resolved path of the loaded file (its base name for rows loaded before paths were stored); loading the file from the same path for the same month again replaces its rows.';
COMMENT ON COLUMN crm.contacts.line IS 'Line of the row in that file.';
COMMENT ON COLUMN crm.contacts.load_id IS 'Id of the load that wrote the row.';
COMMENT ON COLUMN crm.contacts.loaded_at IS 'When the row was loaded.';

CREATE TABLE IF NOT EXISTS crm.contact_quarantine (
    month date NOT NULL CHECK (month = date_trunc('month', month)::date),
    source_file text NOT NULL,
    line integer NOT NULL,
    load_id uuid NOT NULL,
    client_id text,
    contact_date text,
    channel text,
    outcome text,
    reasons text[] NOT NULL CHECK (cardinality(reasons) > 0),
    PRIMARY KEY (month, source_file, line)
);

ALTER TABLE crm.contact_quarantine ADD COLUMN IF NOT EXISTS duplicate_of text;

COMMENT ON TABLE crm.contact_quarantine IS
    'Rows of contact files that were not loaded, with the reasons.';
COMMENT ON COLUMN crm.contact_quarantine.month IS 'Month the file was loaded for (first day).';
COMMENT ON COLUMN crm.contact_quarantine.source_file IS 'Resolved path of the loaded file (its base name for rows loaded before paths were stored).';
COMMENT ON COLUMN crm.contact_quarantine.line IS 'Line of the row in that file.';
COMMENT ON COLUMN crm.contact_quarantine.load_id IS 'Id of the load that quarantined the row.';
COMMENT ON COLUMN crm.contact_quarantine.client_id IS 'The client_id cell as written.';
COMMENT ON COLUMN crm.contact_quarantine.contact_date IS 'The date cell as written.';
COMMENT ON COLUMN crm.contact_quarantine.channel IS 'The channel cell as written.';
COMMENT ON COLUMN crm.contact_quarantine.outcome IS 'The outcome cell as written.';
COMMENT ON COLUMN crm.contact_quarantine.reasons IS 'Why the row was not loaded: invalid_client_id, unknown_client, invalid_date, date_outside_month, empty_channel, duplicate.';
COMMENT ON COLUMN crm.contact_quarantine.duplicate_of IS 'For a duplicate: the file and line of the contact it repeats (another file loaded for the month, or an earlier line of the same file); NULL otherwise.';

-- The measured effect of the contacts, per month and stratum, recomputed by
-- every run for each earlier month whose contacts and outcomes are loaded.
CREATE TABLE IF NOT EXISTS churn.campaign_results (
    month date NOT NULL,
    level text NOT NULL,
    risk_tier text CHECK (risk_tier IN ('high', 'medium')),
    cluster_id smallint,
    segment text,
    suggested_action text,
    listed integer NOT NULL,
    contacted integer NOT NULL,
    held_out integer NOT NULL,
    held_out_contacted integer NOT NULL,
    churned_listed integer NOT NULL,
    churned_contacted integer NOT NULL,
    churned_held_out integer NOT NULL,
    churn_rate_listed double precision,
    churn_rate_contacted double precision,
    churn_rate_held_out double precision,
    difference double precision,
    ci_lower double precision,
    ci_upper double precision,
    clients_kept double precision,
    min_detectable_effect double precision,
    difference_listed double precision,
    ci_lower_listed double precision,
    ci_upper_listed double precision,
    computed_at timestamptz NOT NULL DEFAULT now()
);

-- Added after the first release: what the overall and tier rows measured.
-- ADD COLUMN IF NOT EXISTS keeps the file safe to apply again.
ALTER TABLE churn.campaign_results ADD COLUMN IF NOT EXISTS strata_measured integer;
ALTER TABLE churn.campaign_results ADD COLUMN IF NOT EXISTS contacted_measured integer;
ALTER TABLE churn.campaign_results ADD COLUMN IF NOT EXISTS held_out_measured integer;
ALTER TABLE churn.campaign_results ADD COLUMN IF NOT EXISTS churn_rate_held_out_weighted double precision;

-- The first release checked level inline (overall, stratum); the check is
-- dropped and added again so that tier rows are allowed on old and new tables.
ALTER TABLE churn.campaign_results DROP CONSTRAINT IF EXISTS campaign_results_level_check;
ALTER TABLE churn.campaign_results ADD CONSTRAINT campaign_results_level_check
    CHECK (level IN ('overall', 'tier', 'stratum'));

CREATE UNIQUE INDEX IF NOT EXISTS campaign_results_key ON churn.campaign_results (
    month, level, coalesce(risk_tier, ''), coalesce(cluster_id, -1), coalesce(suggested_action, '')
);

COMMENT ON TABLE churn.campaign_results IS
    'Did the contacts keep clients? Per month whose outcomes are known: churn of the contacted clients against the held-out control group, overall, per risk tier, and per risk tier, segment and suggested action.';
COMMENT ON COLUMN churn.campaign_results.month IS 'Scored month whose at-risk list was contacted (first day); the churn counted is in the month after it.';
COMMENT ON COLUMN churn.campaign_results.level IS 'overall (every stratum of the high and medium tiers), tier (the strata of one risk tier) or stratum (one risk tier, segment and suggested action). The overall row combines the risk tiers with contacted and held-out clients; within a tier the holdout takes the same share of every segment, so the tier row compares the tier''s held-out and contacted clients directly.';
COMMENT ON COLUMN churn.campaign_results.risk_tier IS 'high or medium; NULL on the overall row.';
COMMENT ON COLUMN churn.campaign_results.cluster_id IS 'Segment (churn.clusters.cluster_id); NULL on the overall and tier rows.';
COMMENT ON COLUMN churn.campaign_results.segment IS 'Plain name of the segment; NULL on the overall and tier rows.';
COMMENT ON COLUMN churn.campaign_results.suggested_action IS 'Measure suggested to the stratum''s clients; NULL on the overall and tier rows and for clients no measure fitted.';
COMMENT ON COLUMN churn.campaign_results.listed IS 'Clients on the list (not held out) whose outcome is known, of both tiers on the overall row: the medium tier is not in churn.at_risk.';
COMMENT ON COLUMN churn.campaign_results.contacted IS 'Of those, clients with at least one loaded contact.';
COMMENT ON COLUMN churn.campaign_results.held_out IS 'Held-out clients whose outcome is known, contacted or not.';
COMMENT ON COLUMN churn.campaign_results.held_out_contacted IS 'Held-out clients contacted all the same: they stay in the control group, and make the measured difference smaller than the true effect.';
COMMENT ON COLUMN churn.campaign_results.churned_listed IS 'Listed clients who left in the month after month.';
COMMENT ON COLUMN churn.campaign_results.churned_contacted IS 'Contacted clients who left in the month after month.';
COMMENT ON COLUMN churn.campaign_results.churned_held_out IS 'Held-out clients who left in the month after month.';
COMMENT ON COLUMN churn.campaign_results.churn_rate_listed IS 'churned_listed / listed (0 to 1); NULL when listed is 0.';
COMMENT ON COLUMN churn.campaign_results.churn_rate_contacted IS 'churned_contacted / contacted (0 to 1); NULL when contacted is 0.';
COMMENT ON COLUMN churn.campaign_results.churn_rate_held_out IS 'churned_held_out / held_out (0 to 1), pooled over the row''s strata; NULL when held_out is 0. Not comparable with churn_rate_contacted on the overall and tier rows: use churn_rate_held_out_weighted.';
COMMENT ON COLUMN churn.campaign_results.difference IS 'Held-out minus contacted churn rate: the share of contacted clients the contacts kept. On a stratum or tier row the plain difference; on the overall row the sum of the measured tiers'' differences weighted by their contacted clients. Positive means fewer contacted clients left.';
COMMENT ON COLUMN churn.campaign_results.ci_lower IS 'Lower end of the 95 percent confidence interval of difference: Newcombe hybrid score interval on a stratum or tier row; on the overall row difference - 1.96 standard errors, the variance summing the squared weights times each tier''s variance read from its Newcombe interval, ((upper - lower) / (2 * 1.96))^2.';
COMMENT ON COLUMN churn.campaign_results.ci_upper IS 'Upper end of that interval. An interval that contains 0 shows no effect the data can tell from chance.';
COMMENT ON COLUMN churn.campaign_results.clients_kept IS 'difference * contacted_measured: contacted clients who stayed because of the contacts, an estimate.';
COMMENT ON COLUMN churn.campaign_results.min_detectable_effect IS 'Smallest fall of the churn rate (0 to 1) that these group sizes detect with 80 percent power at the 5 percent level; NULL when no fall can be detected.';
COMMENT ON COLUMN churn.campaign_results.difference_listed IS 'Held-out minus listed churn rate, contacted or not: the effect of putting clients on the list, free of the choice of whom to contact. On the overall row weighted by the listed clients of the measured tiers.';
COMMENT ON COLUMN churn.campaign_results.ci_lower_listed IS 'Lower end of the 95 percent confidence interval of difference_listed.';
COMMENT ON COLUMN churn.campaign_results.ci_upper_listed IS 'Upper end of the 95 percent confidence interval of difference_listed.';
COMMENT ON COLUMN churn.campaign_results.strata_measured IS 'Risk tiers of the row with both contacted and held-out clients, the ones its difference uses (0 or 1 on a tier or stratum row).';
COMMENT ON COLUMN churn.campaign_results.contacted_measured IS 'Contacted clients of the measured tiers (or stratum); contacted - contacted_measured were in tiers with nobody held out.';
COMMENT ON COLUMN churn.campaign_results.held_out_measured IS 'Held-out clients of the measured tiers (or stratum); held_out - held_out_measured were in tiers nobody contacted, left out of the difference.';
COMMENT ON COLUMN churn.campaign_results.churn_rate_held_out_weighted IS 'Churn rate of the held-out clients of the measured tiers, each tier weighted by its contacted clients: the churn the contacted clients would have had without the contacts.';
COMMENT ON COLUMN churn.campaign_results.computed_at IS 'When the row was computed.';

-- The grants of 009_bi.sql cover these tables from the next upgrade on, and
-- through default privileges already when the same user created them; this
-- makes the first upgrade by another owner right as well.
DO $campaign_grants$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'churn_job') THEN
        GRANT SELECT ON crm.contacts, crm.contact_quarantine TO churn_job;
        GRANT SELECT, INSERT, UPDATE, DELETE ON churn.campaign_results TO churn_job;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'churn_bi') THEN
        GRANT SELECT ON churn.campaign_results TO churn_bi;
    END IF;
END
$campaign_grants$;
