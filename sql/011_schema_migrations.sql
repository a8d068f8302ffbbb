-- The schema files applied to this database, with their sha256, so that a
-- run can skip the upgrade when nothing changed. A role that may only write
-- rows (churn_job) can then run the job.
CREATE TABLE IF NOT EXISTS churn.schema_migrations (
    name text PRIMARY KEY,
    sha256 text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE churn.schema_migrations IS
    'Schema files (sql/NNN_*.sql) applied by the last gymchurn db upgrade, one row a file.';
COMMENT ON COLUMN churn.schema_migrations.name IS 'File name, e.g. 009_bi.sql.';
COMMENT ON COLUMN churn.schema_migrations.sha256 IS 'Hex sha256 of the file as applied.';
COMMENT ON COLUMN churn.schema_migrations.applied_at IS 'When the file was last applied.';
