-- The first ten file lines whose client id another line of the file repeats.
SELECT line
FROM questionnaires_staging
WHERE client_id IN (
    SELECT client_id FROM questionnaires_staging GROUP BY client_id HAVING count(*) > 1
)
ORDER BY line
LIMIT 10
