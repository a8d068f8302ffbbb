SELECT
    r.month,
    r.mode,
    r.rows_scored,
    r.realised_roc_auc,
    r.at_risk_path,
    r.report_path,
    v.version,
    v.algorithm,
    v.training_rows,
    v.artifact_path
FROM churn.runs AS r
JOIN churn.model_versions AS v ON v.version = r.model_version
WHERE r.status = 'succeeded' AND r.month BETWEEN %(first)s AND %(last)s
ORDER BY r.month
