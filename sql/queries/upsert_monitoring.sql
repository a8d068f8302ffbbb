INSERT INTO churn.monitoring (month, metric, feature, value, model_version, run_id)
VALUES (%(month)s, %(metric)s, %(feature)s, %(value)s, %(model_version)s, %(run_id)s)
ON CONFLICT (month, metric, feature) DO UPDATE
SET value = EXCLUDED.value, model_version = EXCLUDED.model_version, run_id = EXCLUDED.run_id
