-- The least privileges on smsgw's interface tables: SQL Server. Run after interface.sql, in
-- the same database, as the tables' owner (or a db_securityadmin). smsgw and legacy_app are
-- placeholders: put your database users' names.
--
--   smsgw       reads sms_outbox and writes back only the result columns; inserts into
--               sms_inbox and reads it (to recognise an MO it has written already).
--   legacy_app  inserts messages into sms_outbox and reads their results; reads sms_inbox
--               and sets read_flag. Add DELETE on either table if it purges old rows.
--
-- The database users must exist, e.g.
--     CREATE LOGIN smsgw WITH PASSWORD = '...';
--     CREATE USER smsgw FOR LOGIN smsgw;
-- (likewise legacy_app). Give them the tables' schema as default schema (WITH DEFAULT_SCHEMA =
-- dbo) if they should find the tables by their bare names.

GRANT SELECT ON sms_outbox TO smsgw;
GRANT UPDATE (state, message_id, submit_result, msg_ids, stat, error, taken_by, taken_at, submitted_at, done_at)
    ON sms_outbox TO smsgw;
GRANT SELECT, INSERT ON sms_inbox TO smsgw;

GRANT SELECT, INSERT ON sms_outbox TO legacy_app;
GRANT SELECT, UPDATE (read_flag) ON sms_inbox TO legacy_app;
GO
