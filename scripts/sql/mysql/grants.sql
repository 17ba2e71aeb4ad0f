-- The least privileges on smsgw's interface tables: MySQL and MariaDB. Run after interface.sql,
-- in the same database, as a user allowed to grant. 'smsgw'@'%' and 'legacy_app'@'%' are
-- placeholders: put your users' names and the hosts they connect from.
--
--   smsgw       reads sms_outbox and writes back only the result columns; inserts into
--               sms_inbox and reads it (to recognise an MO it has written already).
--   legacy_app  inserts messages into sms_outbox and reads their results; reads sms_inbox
--               and sets read_flag. Add DELETE on either table if it purges old rows.
--
-- The users must exist (MySQL 8 no longer creates them in GRANT), e.g.
--     CREATE USER 'smsgw'@'%' IDENTIFIED BY '...';
--     CREATE USER 'legacy_app'@'%' IDENTIFIED BY '...';
-- smsgw takes rows with SELECT ... FOR UPDATE SKIP LOCKED: MariaDB allows that with the
-- column-level UPDATE below; MySQL documents that it needs SELECT plus UPDATE, DELETE or
-- LOCK TABLES on the table, so if MySQL refuses it, grant UPDATE on all of sms_outbox instead.

GRANT SELECT ON sms_outbox TO 'smsgw'@'%';
GRANT UPDATE (state, message_id, submit_result, msg_ids, stat, error, taken_by, taken_at, submitted_at, done_at)
    ON sms_outbox TO 'smsgw'@'%';
GRANT SELECT, INSERT ON sms_inbox TO 'smsgw'@'%';

GRANT SELECT, INSERT ON sms_outbox TO 'legacy_app'@'%';
GRANT SELECT, UPDATE (read_flag) ON sms_inbox TO 'legacy_app'@'%';
