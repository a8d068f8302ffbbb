-- Feature columns are nullable so that an incomplete answer is stored as it
-- came and reported by validation, instead of the whole file being refused.
CREATE TABLE IF NOT EXISTS crm.questionnaires (
    client_id bigint NOT NULL,
    month date NOT NULL CHECK (month = date_trunc('month', month)::date),
    gender smallint,
    near_location smallint,
    partner smallint,
    promo_friends smallint,
    phone smallint,
    contract_period smallint,
    group_visits smallint,
    age integer,
    avg_additional_charges_total double precision,
    month_to_end_contract integer,
    lifetime integer,
    avg_class_frequency_total double precision,
    avg_class_frequency_current_month double precision,
    PRIMARY KEY (client_id, month)
);

COMMENT ON TABLE crm.questionnaires IS
    'One questionnaire a client and month; month is the first day of the month the answers describe.';

CREATE TABLE IF NOT EXISTS crm.churn_outcomes (
    client_id bigint NOT NULL,
    month date NOT NULL CHECK (month = date_trunc('month', month)::date),
    churned boolean NOT NULL,
    PRIMARY KEY (client_id, month)
);

COMMENT ON TABLE crm.churn_outcomes IS
    'Whether the client left during the month after month.';
