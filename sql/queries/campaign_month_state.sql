SELECT
    EXISTS (SELECT FROM churn.scores WHERE month = %(month)s) AS scores,
    EXISTS (SELECT FROM crm.contacts WHERE month = %(month)s) AS contacts,
    EXISTS (SELECT FROM crm.churn_outcomes WHERE month = %(month)s) AS outcomes
