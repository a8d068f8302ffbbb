DELETE FROM crm.questionnaire_faults
WHERE month = %(month)s AND client_id = ANY(%(client_ids)s)
