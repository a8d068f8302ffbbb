-- Columns for marketers on the at-risk list: a suggested measure per client,
-- the client's segment by name, and whether the client gave a phone number.
ALTER TABLE churn.scores ADD COLUMN IF NOT EXISTS suggested_action text;

COMMENT ON COLUMN churn.scores.suggested_action IS
    'Title of the measure suggested for the client (a measure of churn.recommendations or of the measures file), NULL when no rule fits the client or the client''s risk tier is not targeted.';

-- CREATE OR REPLACE VIEW may only append columns, so the new ones follow
-- the columns of the earlier definition, in the same order.
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
WHERE s.risk_tier = 'high';

COMMENT ON COLUMN churn.at_risk.segment IS
    'Plain name of the client''s segment in the same month (churn.clusters.name).';
COMMENT ON COLUMN churn.at_risk.suggested_action IS
    'Title of the measure suggested for the client, NULL when no rule of the month fits.';
COMMENT ON COLUMN churn.at_risk.has_phone IS
    'Whether the client gave a contact phone in the month''s questionnaire; NULL when the answer is missing.';
