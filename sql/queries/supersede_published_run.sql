UPDATE churn.runs SET status = 'superseded'
WHERE month = %(month)s AND status = 'succeeded' AND run_id <> %(run_id)s
