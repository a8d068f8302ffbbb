DELETE FROM crm.questionnaire_faults AS f
USING questionnaires_staging AS s
WHERE f.month = %(month)s AND f.client_id = s.client_id
