SELECT client_id, column_name, line, raw_value, fault
FROM crm.questionnaire_faults
WHERE month = %(month)s
ORDER BY line, column_name
