-- Refresh the planner's statistics of the tables a load wrote, in its transaction.
ANALYZE crm.questionnaires, crm.churn_outcomes
