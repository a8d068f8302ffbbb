-- Sets the file and line of each row a run quarantined whose load was
-- recorded. Returns the number of rows located, how many of them have a
-- line, and the first of them (the month's own rows come before the training
-- rows), or no row when none was located.
WITH located AS (
    UPDATE churn.quarantine AS r
    SET source_file = l.source_file, line = q.line
    FROM crm.questionnaires AS q
    JOIN crm.questionnaire_loads AS l USING (load_id)
    WHERE r.run_id = %(run_id)s
        AND q.month = r.month
        AND q.client_id = r.client_id
    RETURNING r.dataset, r.month, r.client_id, r.source_file, r.line
)
SELECT
    count(*) OVER () AS n_located,
    count(line) OVER () AS n_with_line,
    month,
    client_id,
    source_file,
    line
FROM located
ORDER BY dataset <> 'scoring', month, source_file, line
LIMIT 1
