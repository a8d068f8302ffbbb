SELECT name, sha256 FROM churn.schema_migrations
