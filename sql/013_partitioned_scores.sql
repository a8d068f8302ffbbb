-- churn.scores partitioned by month (LIST), one partition a month. A run
-- writes the month's scores with COPY into a new table that has no index and
-- no foreign key yet, indexes it, and swaps it in for the month's old
-- partition, instead of deleting the old rows and inserting the new ones
-- through the indexes and the row-by-row foreign key checks.
--
-- The job may run as a role in churn_job, which may neither create nor drop
-- tables. Three functions that run with the rights of their owner, the schema
-- owner, do that part: churn.prepare_scores_partition creates the month's new
-- table, the job fills it with COPY, churn.index_scores_partition indexes it,
-- and churn.attach_scores_partition checks its foreign keys and swaps it in.
-- Only the swap locks churn.scores, from the drop of the month's old
-- partition to the commit. The job calls all three inside its publish
-- transaction, so a run that stops before its commit leaves the month's
-- published scores as they were.
--
-- The new table's columns, defaults, CHECK constraints and indexes are read
-- from the catalog of churn.scores, so a column or an index that a later
-- schema file adds to churn.scores reaches every new partition. Reading the
-- catalog takes no lock on churn.scores: a lock held from the start of one
-- month's publish transaction would deadlock with another month's swap.

CREATE OR REPLACE FUNCTION churn.prepare_scores_partition(
    p_month date, p_run_id uuid, p_model_version text
) RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    parent constant regclass := 'churn.scores'::regclass;
    staging constant text := 'scores_' || to_char(p_month, 'YYYY_MM') || '_next';
    column_list text;
    check_list text;
    grant_row record;
    column_row record;
BEGIN
    IF p_month IS NULL OR p_month <> date_trunc('month', p_month)::date THEN
        RAISE EXCEPTION 'invalid month %: expected the first day of a month', p_month;
    END IF;

    SELECT string_agg(
        format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod))
            || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
            || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), ''),
        ', ' ORDER BY a.attnum
    ) INTO column_list
    FROM pg_attribute AS a
    LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = parent AND a.attnum > 0 AND NOT a.attisdropped;

    -- ATTACH PARTITION requires the parent's CHECK constraints under their names.
    SELECT string_agg(format(', CONSTRAINT %I %s', c.conname, pg_get_constraintdef(c.oid)), '')
    INTO check_list
    FROM pg_constraint AS c
    WHERE c.conrelid = parent AND c.contype = 'c';

    -- The month's CHECK lets ATTACH PARTITION skip the scan that proves the
    -- rows belong to the month. The run's id and model are defaults, so the
    -- job sends only the columns that differ from client to client.
    EXECUTE format(
        'CREATE TABLE churn.%I (%s%s, CONSTRAINT partition_month CHECK (month = %L::date))',
        staging, column_list, coalesce(check_list, ''), p_month
    );
    EXECUTE format(
        'ALTER TABLE churn.%I ALTER COLUMN month SET DEFAULT %L::date,'
        ' ALTER COLUMN run_id SET DEFAULT %L::uuid,'
        ' ALTER COLUMN model_version SET DEFAULT %L::text',
        staging, p_month, p_run_id, p_model_version
    );

    -- The rights on churn.scores, so that the job's role may COPY into the
    -- table and BI roles may read the partition directly.
    FOR grant_row IN
        SELECT acl.privilege_type, acl.grantee
        FROM pg_class AS c, aclexplode(c.relacl) AS acl
        WHERE c.oid = parent AND acl.grantee <> c.relowner
    LOOP
        EXECUTE format(
            'GRANT %s ON churn.%I TO %s',
            grant_row.privilege_type,
            staging,
            CASE WHEN grant_row.grantee = 0 THEN 'PUBLIC'
                ELSE quote_ident(pg_get_userbyid(grant_row.grantee)) END
        );
    END LOOP;

    EXECUTE format(
        'COMMENT ON TABLE churn.%I IS %L',
        staging,
        'Scores of ' || to_char(p_month, 'YYYY-MM')
            || ': the partition of churn.scores for that month. Query churn.scores, which holds every month.'
    );
    FOR column_row IN
        SELECT a.attname, col_description(parent, a.attnum) AS description
        FROM pg_attribute AS a
        WHERE a.attrelid = parent AND a.attnum > 0 AND NOT a.attisdropped
    LOOP
        EXECUTE format(
            'COMMENT ON COLUMN churn.%I.%I IS %L', staging, column_row.attname, column_row.description
        );
    END LOOP;
    RETURN staging;
END
$function$;

COMMENT ON FUNCTION churn.prepare_scores_partition(date, uuid, text) IS
    'Create churn.scores_YYYY_MM_next, the empty table that will hold a month''s new scores, and return its name.';

CREATE OR REPLACE FUNCTION churn.index_scores_partition(p_month date) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    parent constant regclass := 'churn.scores'::regclass;
    staging constant text := 'scores_' || to_char(p_month, 'YYYY_MM') || '_next';
    index_row record;
    staging_index text;
    definition text;
    rewritten text;
BEGIN
    IF to_regclass(format('churn.%I', staging)) IS NULL THEN
        RAISE EXCEPTION 'table churn.% not found', staging
            USING HINT = 'Call churn.prepare_scores_partition in the same transaction first.';
    END IF;

    -- Index the new rows like churn.scores. Each index is named after the new
    -- table: scores_pkey becomes scores_YYYY_MM_next_pkey, and the swap
    -- renames it scores_YYYY_MM_pkey.
    FOR index_row IN
        SELECT i.indexrelid, c.relname, con.oid AS constraint_oid, con.contype
        FROM pg_index AS i
        JOIN pg_class AS c ON c.oid = i.indexrelid
        LEFT JOIN pg_constraint AS con ON con.conindid = i.indexrelid AND con.conrelid = parent
        WHERE i.indrelid = parent
        ORDER BY c.relname
    LOOP
        staging_index := staging || CASE WHEN left(index_row.relname, 6) = 'scores'
            THEN substr(index_row.relname, 7) ELSE '_' || index_row.relname END;
        IF index_row.contype IN ('p', 'u') THEN
            EXECUTE format(
                'ALTER TABLE churn.%I ADD CONSTRAINT %I %s',
                staging, staging_index, pg_get_constraintdef(index_row.constraint_oid)
            );
        ELSIF index_row.constraint_oid IS NOT NULL THEN
            RAISE EXCEPTION 'index % of churn.scores backs a constraint of type %, which partitions cannot copy',
                index_row.relname, index_row.contype;
        ELSE
            definition := pg_get_indexdef(index_row.indexrelid);
            rewritten := regexp_replace(
                definition,
                '^CREATE (UNIQUE )?INDEX \S+ ON ONLY \S+ ',
                format('CREATE \1INDEX %I ON churn.%I ', staging_index, staging)
            );
            IF rewritten = definition THEN
                RAISE EXCEPTION 'cannot read the definition of index %: %', index_row.relname, definition;
            END IF;
            EXECUTE rewritten;
        END IF;
    END LOOP;

    -- Planner statistics of the new rows. Without them the planner expected
    -- a few rows in a month of millions and looked up each at-risk client's
    -- questionnaire by index.
    EXECUTE format('ANALYZE churn.%I', staging);
END
$function$;

COMMENT ON FUNCTION churn.index_scores_partition(date) IS
    'Index churn.scores_YYYY_MM_next like churn.scores and take its statistics, without locking churn.scores.';

CREATE OR REPLACE FUNCTION churn.attach_scores_partition(p_month date) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    parent constant regclass := 'churn.scores'::regclass;
    partition_name constant text := 'scores_' || to_char(p_month, 'YYYY_MM');
    staging constant text := partition_name || '_next';
    staging_table regclass;
    index_name text;
    old_partition regclass;
    foreign_key record;
BEGIN
    staging_table := to_regclass(format('churn.%I', staging));
    IF staging_table IS NULL THEN
        RAISE EXCEPTION 'table churn.% not found', staging
            USING HINT = 'Call churn.prepare_scores_partition in the same transaction first.';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_index WHERE indrelid = staging_table) THEN
        PERFORM churn.index_scores_partition(p_month);
    END IF;

    -- The foreign keys of churn.scores, each checked with one query before
    -- churn.scores is locked. ATTACH PARTITION takes them over without
    -- checking the rows again. The checks lock churn.runs and
    -- churn.model_versions against writes until the commit, so they come last.
    FOR foreign_key IN
        SELECT c.conname, pg_get_constraintdef(c.oid) AS definition
        FROM pg_constraint AS c
        WHERE c.conrelid = parent AND c.contype = 'f'
        ORDER BY c.conname
    LOOP
        EXECUTE format(
            'ALTER TABLE churn.%I ADD CONSTRAINT %I %s',
            staging, foreign_key.conname, foreign_key.definition
        );
    END LOOP;

    -- The swap. Dropping the month's old partition locks churn.scores until
    -- the commit. ATTACH PARTITION reuses the indexes and foreign keys.
    SELECT c.oid INTO old_partition
    FROM pg_class AS c
    JOIN pg_inherits AS h ON h.inhrelid = c.oid
    WHERE h.inhparent = parent
        AND c.relnamespace = 'churn'::regnamespace
        AND c.relname = partition_name;
    IF old_partition IS NOT NULL THEN
        EXECUTE format('DROP TABLE %s', old_partition);
    END IF;
    EXECUTE format('ALTER TABLE churn.%I RENAME TO %I', staging, partition_name);
    FOR index_name IN
        SELECT c.relname
        FROM pg_index AS i
        JOIN pg_class AS c ON c.oid = i.indexrelid
        WHERE i.indrelid = staging_table AND left(c.relname, length(staging)) = staging
    LOOP
        EXECUTE format(
            'ALTER INDEX churn.%I RENAME TO %I',
            index_name, partition_name || substr(index_name, length(staging) + 1)
        );
    END LOOP;
    EXECUTE format(
        'ALTER TABLE churn.scores ATTACH PARTITION churn.%I FOR VALUES IN (%L)',
        partition_name, p_month
    );
    EXECUTE format(
        'ALTER TABLE churn.%I DROP CONSTRAINT partition_month,'
        ' ALTER COLUMN month DROP DEFAULT,'
        ' ALTER COLUMN run_id DROP DEFAULT,'
        ' ALTER COLUMN model_version DROP DEFAULT',
        partition_name
    );
END
$function$;

COMMENT ON FUNCTION churn.attach_scores_partition(date) IS
    'Check the foreign keys of churn.scores_YYYY_MM_next and make it the month''s partition of churn.scores in place of the old one, indexing it first unless churn.index_scores_partition did.';

REVOKE ALL ON FUNCTION churn.prepare_scores_partition(date, uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION churn.index_scores_partition(date) FROM PUBLIC;
REVOKE ALL ON FUNCTION churn.attach_scores_partition(date) FROM PUBLIC;

DO $job_functions$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'churn_job') THEN
        GRANT EXECUTE ON FUNCTION churn.prepare_scores_partition(date, uuid, text) TO churn_job;
        GRANT EXECUTE ON FUNCTION churn.index_scores_partition(date) TO churn_job;
        GRANT EXECUTE ON FUNCTION churn.attach_scores_partition(date) TO churn_job;
    END IF;
END
$job_functions$;

-- Convert a churn.scores that is still one plain table, with its rows, its
-- indexes, constraints, comments and rights, and point the views that read
-- it at the new table. It runs once, because later upgrades find a
-- partitioned table.
-- Each month's rows are copied into a partition of their own, so the upgrade
-- takes about as long as publishing every stored month again.
DO $convert$
DECLARE
    scores_oid constant oid := to_regclass('churn.scores');
    saved_search_path constant text := current_setting('search_path');
    view_statements text[];
    constraint_statements text[];
    index_statements text[];
    table_comment text;
    statement text;
    index_name text;
    constraint_name text;
    grant_row record;
    month_value date;
    staging text;
BEGIN
    IF scores_oid IS NULL
        OR (SELECT relkind FROM pg_class WHERE oid = scores_oid) <> 'r' THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT FROM pg_constraint WHERE confrelid = scores_oid) THEN
        RAISE EXCEPTION 'churn.scores cannot be partitioned: foreign keys of other tables reference it'
            USING HINT = 'Drop those foreign keys, run gymchurn db upgrade, then add them again.';
    END IF;
    -- Schema-qualified names in every definition read from the catalog below.
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);

    SELECT coalesce(array_agg(
        format(
            'CREATE OR REPLACE VIEW %s%s AS %s',
            v.oid::regclass,
            coalesce(' WITH (' || array_to_string(v.reloptions, ', ') || ')', ''),
            rtrim(pg_get_viewdef(v.oid), '; ')
        ) ORDER BY v.oid
    ), '{}') INTO view_statements
    FROM pg_class AS v
    WHERE v.relkind = 'v' AND v.oid IN (
        SELECT r.ev_class
        FROM pg_depend AS d
        JOIN pg_rewrite AS r ON r.oid = d.objid
        WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = scores_oid
    );

    SELECT coalesce(array_agg(
        format('ALTER TABLE churn.scores ADD CONSTRAINT %I %s', c.conname, pg_get_constraintdef(c.oid))
        ORDER BY c.contype DESC, c.conname
    ), '{}') INTO constraint_statements
    FROM pg_constraint AS c
    WHERE c.conrelid = scores_oid AND c.contype IN ('p', 'u', 'f');

    SELECT coalesce(array_agg(pg_get_indexdef(i.indexrelid) ORDER BY i.indexrelid), '{}')
    INTO index_statements
    FROM pg_index AS i
    WHERE i.indrelid = scores_oid
        AND NOT EXISTS (SELECT FROM pg_constraint AS c WHERE c.conindid = i.indexrelid);

    table_comment := obj_description(scores_oid, 'pg_class');

    -- The old table keeps its rows until they are copied; its indexes and
    -- keys go first, so that the new table can take their names.
    ALTER TABLE churn.scores RENAME TO scores_unpartitioned;
    FOR index_name IN
        SELECT c.relname
        FROM pg_index AS i
        JOIN pg_class AS c ON c.oid = i.indexrelid
        WHERE i.indrelid = scores_oid
            AND NOT EXISTS (SELECT FROM pg_constraint AS k WHERE k.conindid = i.indexrelid)
    LOOP
        EXECUTE format('DROP INDEX churn.%I', index_name);
    END LOOP;
    FOR constraint_name IN
        SELECT c.conname FROM pg_constraint AS c
        WHERE c.conrelid = scores_oid AND c.contype IN ('p', 'u')
    LOOP
        EXECUTE format('ALTER TABLE churn.scores_unpartitioned DROP CONSTRAINT %I', constraint_name);
    END LOOP;

    CREATE TABLE churn.scores (
        LIKE churn.scores_unpartitioned
        INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS INCLUDING STORAGE
    ) PARTITION BY LIST (month);
    FOREACH statement IN ARRAY constraint_statements || index_statements LOOP
        EXECUTE statement;
    END LOOP;
    IF table_comment IS NOT NULL THEN
        EXECUTE format('COMMENT ON TABLE churn.scores IS %L', table_comment);
    END IF;
    FOR grant_row IN
        SELECT acl.privilege_type, acl.grantee
        FROM pg_class AS c, aclexplode(c.relacl) AS acl
        WHERE c.oid = scores_oid AND acl.grantee <> c.relowner
    LOOP
        EXECUTE format(
            'GRANT %s ON churn.scores TO %s',
            grant_row.privilege_type,
            CASE WHEN grant_row.grantee = 0 THEN 'PUBLIC'
                ELSE quote_ident(pg_get_userbyid(grant_row.grantee)) END
        );
    END LOOP;
    FOREACH statement IN ARRAY view_statements LOOP
        EXECUTE statement;
    END LOOP;

    FOR month_value IN SELECT DISTINCT month FROM churn.scores_unpartitioned ORDER BY 1 LOOP
        staging := churn.prepare_scores_partition(month_value, NULL, NULL);
        EXECUTE format(
            'INSERT INTO churn.%I SELECT * FROM churn.scores_unpartitioned WHERE month = %L',
            staging, month_value
        );
        PERFORM churn.attach_scores_partition(month_value);
    END LOOP;
    DROP TABLE churn.scores_unpartitioned;
    PERFORM set_config('search_path', saved_search_path, true);
END
$convert$;
