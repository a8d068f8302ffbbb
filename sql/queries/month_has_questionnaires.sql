SELECT EXISTS (SELECT FROM crm.questionnaires WHERE month = %(month)s)
