DELETE FROM churn.schema_migrations
