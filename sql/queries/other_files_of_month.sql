-- Files other than %(source_file)s whose questionnaires the month contains,
-- the largest first.
SELECT l.source_file, count(*) AS questionnaires
FROM crm.questionnaires AS q
JOIN crm.questionnaire_loads AS l USING (load_id)
WHERE q.month = %(month)s AND l.source_file <> %(source_file)s
GROUP BY l.source_file
ORDER BY questionnaires DESC, l.source_file
LIMIT 3
