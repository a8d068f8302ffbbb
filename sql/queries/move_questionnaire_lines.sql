-- Sets the load and line of the staged questionnaires that the upsert left
-- alone because their answers had not changed. Only rows whose load or line
-- differ are written, so loading the same file again writes nothing.
UPDATE crm.questionnaires AS q
SET load_id = %(load_id)s, line = s.line
FROM questionnaires_staging AS s
WHERE q.month = %(month)s
    AND q.client_id = s.client_id
    AND (q.load_id, q.line) IS DISTINCT FROM (%(load_id)s::bigint, s.line::integer)
