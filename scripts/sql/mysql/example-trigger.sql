-- Example: a work-order system queues a text message for its customer when a work order is
-- created (its "dispatch flow"): an AFTER INSERT trigger writes a row into smsgw's sms_outbox.
-- MySQL and MariaDB.
--
-- work_orders stands for your own table: adapt the names. The sms_outbox row is written in
-- the work order's own transaction, so a rolled-back work order sends nothing. smsgw takes
-- the row (state 'new') and sends  您的工单<title>已受理，编号<id>  to customer_mobile; ref
-- 'WO-<id>' lets the work-order system find the result in the same row later. A work order
-- without a mobile number gets no message (rather than a failed INSERT).
--
-- Run after interface.sql, with a utf8mb4 client (the trigger keeps the client character set
-- it was created with):
--     mysql --default-character-set=utf8mb4 DBNAME < example-trigger.sql
-- The trigger body is one statement, so no DELIMITER is needed; a body with BEGIN ... END
-- would need one (DELIMITER $$ ... END$$ DELIMITER ;) in the mysql client. The trigger runs
-- with its DEFINER's rights: the user creating it needs INSERT on sms_outbox.
-- To remove it: DROP TABLE work_orders;  (drops the trigger with it)

CREATE TABLE work_orders (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,                -- the work order's number
    customer_mobile VARCHAR(32),                                  -- whom to tell; NULL or '': nobody
    title VARCHAR(200) NOT NULL,                                  -- what it is about
    status VARCHAR(16) NOT NULL DEFAULT 'open',
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- state 'new' and report_wanted 1 are the column defaults; the WHERE is false for NULL too
CREATE TRIGGER trg_work_orders_sms AFTER INSERT ON work_orders
FOR EACH ROW
    INSERT INTO sms_outbox (mobiles, content, ref)
    SELECT NEW.customer_mobile, CONCAT('您的工单', NEW.title, '已受理，编号', NEW.id), CONCAT('WO-', NEW.id)
    FROM DUAL
    WHERE NEW.customer_mobile <> '';
