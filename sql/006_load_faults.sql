-- Feature cells of loaded questionnaire files that were not valid numbers. The
-- questionnaire stores NULL in that column, and this table keeps the cell's text.
CREATE TABLE IF NOT EXISTS crm.questionnaire_faults (
    client_id bigint NOT NULL,
    month date NOT NULL,
    column_name text NOT NULL,
    line integer NOT NULL CHECK (line > 0),
    raw_value text NOT NULL,
    fault text NOT NULL,
    PRIMARY KEY (client_id, month, column_name),
    FOREIGN KEY (client_id, month)
        REFERENCES crm.questionnaires (client_id, month) ON DELETE CASCADE
);

COMMENT ON TABLE crm.questionnaire_faults IS
    'Feature cells of a loaded questionnaire file that were not valid numbers, one a client, month and column; the questionnaire stores NULL in that column. line is the file line, raw_value the cell as written, fault one of missing, not_a_number, not_an_integer, too_large.';
