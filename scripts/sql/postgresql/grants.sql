-- The least privileges on smsgw's interface tables: PostgreSQL. Run after interface.sql, as
-- the tables' owner. `smsgw` and `legacy_app` are placeholders: put your users' names.
--
--   smsgw       reads sms_outbox and writes back only the result columns; inserts into
--               sms_inbox and reads it (to recognise an MO it has written already).
--   legacy_app  inserts messages into sms_outbox and reads their results; reads sms_inbox
--               and sets read_flag. Add DELETE on either table if it purges old rows.
--
-- The users must exist, e.g.
--     CREATE ROLE smsgw LOGIN PASSWORD '...';
--     CREATE ROLE legacy_app LOGIN PASSWORD '...';
-- Tables in a schema other than public also need: GRANT USAGE ON SCHEMA name TO smsgw, legacy_app;
-- The identity columns need no grant on their sequences. smsgw takes rows with SELECT ... FOR
-- UPDATE SKIP LOCKED, which the column-level UPDATE below allows.

GRANT SELECT ON sms_outbox TO smsgw;
GRANT UPDATE (state, message_id, submit_result, msg_ids, stat, error, taken_by, taken_at, submitted_at, done_at)
    ON sms_outbox TO smsgw;
GRANT SELECT, INSERT ON sms_inbox TO smsgw;

GRANT SELECT, INSERT ON sms_outbox TO legacy_app;
GRANT SELECT, UPDATE (read_flag) ON sms_inbox TO legacy_app;
