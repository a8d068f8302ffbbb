INSERT INTO churn.schema_migrations (name, sha256) VALUES (%(name)s, %(sha256)s)
