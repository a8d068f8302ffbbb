DELETE FROM churn.campaign_results WHERE month = %(month)s
