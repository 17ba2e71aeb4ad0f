-- Example: a work-order system queues a text message for its customer when a work order is
-- created (its "dispatch flow"): an AFTER INSERT trigger writes a row into smsgw's sms_outbox.
-- SQLite.
--
-- work_orders stands for your own table: adapt the names. The sms_outbox row is written in
-- the work order's own transaction, so a rolled-back work order sends nothing. smsgw takes
-- the row (state 'new') and sends  您的工单<title>已受理，编号<id>  to customer_mobile; ref
-- 'WO-<id>' lets the work-order system find the result in the same row later. A work order
-- without a mobile number gets no message (rather than a failed INSERT).
--
-- Run after interface.sql:  sqlite3 /path/to/legacy.db < example-trigger.sql  (the file is UTF-8).
-- To remove it: DROP TABLE work_orders;  (drops the trigger with it)

CREATE TABLE work_orders (
    id INTEGER PRIMARY KEY,                                       -- the work order's number (the rowid)
    customer_mobile VARCHAR(32),                                  -- whom to tell; NULL or '': nobody
    title VARCHAR(200) NOT NULL,                                  -- what it is about
    status VARCHAR(16) DEFAULT 'open' NOT NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL
);

CREATE TRIGGER trg_work_orders_sms AFTER INSERT ON work_orders
FOR EACH ROW WHEN NEW.customer_mobile <> ''                       -- false for NULL too
BEGIN
    -- state 'new' and report_wanted 1 are the column defaults
    INSERT INTO sms_outbox (mobiles, content, ref)
    VALUES (NEW.customer_mobile, '您的工单' || NEW.title || '已受理，编号' || NEW.id, 'WO-' || NEW.id);
END;
