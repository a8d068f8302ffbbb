UPDATE churn.runs
SET status = 'succeeded', finished_at = clock_timestamp(), mode = %(mode)s,
    rows_read = %(rows_read)s, rows_quarantined = %(rows_quarantined)s,
    rows_scored = %(rows_scored)s, training_rows = %(training_rows)s,
    model_version = %(model_version)s, realised_roc_auc = %(realised_roc_auc)s,
    retrain_policy = %(retrain_policy)s, model_decision = %(model_decision)s,
    decision_reason = %(decision_reason)s, message = %(message)s
WHERE run_id = %(run_id)s
