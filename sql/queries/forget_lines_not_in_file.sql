-- Clears the line of the month's questionnaires stored from an earlier version
-- of the file just loaded that this version no longer has. Another row is on
-- that line now, so only the file is kept.
UPDATE crm.questionnaires AS q
SET line = NULL
WHERE q.month = %(month)s
    AND q.load_id = %(load_id)s
    AND q.line IS NOT NULL
    AND NOT EXISTS (SELECT FROM questionnaires_staging AS s WHERE s.client_id = q.client_id)
