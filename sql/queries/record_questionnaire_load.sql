-- Records the load of a file for a month, or reuses the row of an earlier load
-- of the same path. created is false when the row was reused.
INSERT INTO crm.questionnaire_loads (month, source_file)
VALUES (%(month)s, %(source_file)s)
ON CONFLICT (month, source_file) DO UPDATE SET loaded_at = now()
RETURNING load_id, (xmax = 0) AS created
