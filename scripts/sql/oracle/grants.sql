-- The least privileges on smsgw's interface tables: Oracle. Run after interface.sql, as the
-- tables' owner. smsgw and legacy_app are placeholders: put your users' names.
--
--   smsgw       reads sms_outbox and writes back only the result columns; inserts into
--               sms_inbox and reads it (to recognise an MO it has written already).
--   legacy_app  inserts messages into sms_outbox and reads their results; reads sms_inbox
--               and sets read_flag. Add DELETE on either table if it purges old rows.
--
-- The users must exist, e.g.
--     CREATE USER smsgw IDENTIFIED BY "..."; GRANT CREATE SESSION TO smsgw;
--     CREATE USER legacy_app IDENTIFIED BY "..."; GRANT CREATE SESSION TO legacy_app;
-- They see the tables as OWNER.sms_outbox and OWNER.sms_inbox: name the owner in their
-- configuration, or give each a synonym (as a DBA), e.g.
--     CREATE SYNONYM smsgw.sms_outbox FOR OWNER.sms_outbox;
-- The identity columns need no grant on their sequences. smsgw takes rows with SELECT ... FOR
-- UPDATE SKIP LOCKED, which the SELECT privilege (unlike READ) allows.

GRANT SELECT, UPDATE (state, message_id, submit_result, msg_ids, stat, error, taken_by, taken_at, submitted_at, done_at)
    ON sms_outbox TO smsgw;
GRANT SELECT, INSERT ON sms_inbox TO smsgw;

GRANT SELECT, INSERT ON sms_outbox TO legacy_app;
GRANT SELECT, UPDATE (read_flag) ON sms_inbox TO legacy_app;
