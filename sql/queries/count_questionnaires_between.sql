SELECT count(*) FROM crm.questionnaires WHERE month BETWEEN %(first)s AND %(last)s
