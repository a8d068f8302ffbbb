-- crm: the questionnaires and outcomes the job reads.
-- churn: everything the job writes, and the only schema BI tools see.
CREATE SCHEMA IF NOT EXISTS crm;
CREATE SCHEMA IF NOT EXISTS churn;
