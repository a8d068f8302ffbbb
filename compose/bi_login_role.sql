-- Create or update the login role a BI tool (Metabase) connects as, and make
-- it a member of the read-only group role that `gymchurn db upgrade` creates.
--
--   BI_DB_PASSWORD=... psql -v ON_ERROR_STOP=1 -v bi_user=metabase \
--       -v bi_group=churn_bi -f compose/bi_login_role.sql
--
-- The password is read from the environment, so it is never on a command
-- line. Every value reaches SQL through psql's quoting (:'name' for a
-- literal, :"name" for an identifier). Running it again sets the password
-- anew and changes nothing else.

\getenv bi_password BI_DB_PASSWORD
\if :{?bi_password}
\else
\set bi_password ''
\endif

SELECT :'bi_password' = '' AS password_missing,
       :'bi_user' = current_user AS is_admin \gset
\if :password_missing
DO $$ BEGIN RAISE EXCEPTION 'BI_DB_PASSWORD is empty: set it to the password the BI login role should have'; END $$;
\endif
\if :is_admin
DO $$ BEGIN RAISE EXCEPTION 'bi_user is the administrator role running this script: choose another name'; END $$;
\endif

SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'bi_user') AS role_missing \gset
\if :role_missing
CREATE ROLE :"bi_user" LOGIN;
\endif
ALTER ROLE :"bi_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :'bi_password';
GRANT :"bi_group" TO :"bi_user";
\echo login role :bi_user is a member of :bi_group
