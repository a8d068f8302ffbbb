-- The file's features as numbers, a missing one as NaN: binary COPY then sends
-- every column as fixed-width numbers. The upsert turns NaN into NULL. line
-- is the record's line in the file, which names repeated client ids.
CREATE TEMPORARY TABLE questionnaires_staging (
    line bigint NOT NULL,
    client_id bigint NOT NULL,
    gender double precision,
    near_location double precision,
    partner double precision,
    promo_friends double precision,
    phone double precision,
    contract_period double precision,
    group_visits double precision,
    age double precision,
    avg_additional_charges_total double precision,
    month_to_end_contract double precision,
    lifetime double precision,
    avg_class_frequency_total double precision,
    avg_class_frequency_current_month double precision
) ON COMMIT DROP
