DELETE FROM crm.questionnaire_faults WHERE month = %(month)s
