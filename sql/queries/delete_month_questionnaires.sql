DELETE FROM crm.questionnaires WHERE month = %(month)s
