-- Load faults of the month %(month)s, and of the questionnaires named by the
-- parallel arrays %(client_ids)s and %(months)s (a run's training candidates).
SELECT client_id, month, column_name AS "column", line, raw_value, fault
FROM crm.questionnaire_faults
WHERE month = %(month)s
    OR (client_id, month) IN (
        SELECT r.client_id, r.month
        FROM unnest(%(client_ids)s::bigint[], %(months)s::date[]) AS r (client_id, month)
    )
ORDER BY month, line, column_name
