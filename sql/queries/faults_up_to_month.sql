SELECT client_id, month, column_name AS "column", line, raw_value, fault
FROM crm.questionnaire_faults
WHERE month <= %(month)s
ORDER BY month, line, column_name
