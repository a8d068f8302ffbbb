CREATE TEMPORARY TABLE questionnaires_staging
    (LIKE crm.questionnaires INCLUDING DEFAULTS) ON COMMIT DROP
