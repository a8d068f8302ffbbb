-- The file's clients whose label the file leaves unknown. The key lets the
-- delete below look each one up: with the month's statistics taken before
-- the load, the server expected one outcome in a month it had just filled
-- and scanned the other side once for every row.
CREATE TEMPORARY TABLE unlabelled_staging (client_id bigint PRIMARY KEY) ON COMMIT DROP
