UPDATE churn.runs
SET message = concat_ws('. ', rtrim(message, '. '), CAST(%(note)s AS text))
WHERE run_id = %(run_id)s AND status = 'succeeded'
