SELECT count(*) FROM crm.questionnaires WHERE month > %(month)s
