-- Example: a work-order system queues a text message for its customer when a work order is
-- created (its "dispatch flow"): an AFTER INSERT trigger writes a row into smsgw's sms_outbox.
-- SQL Server.
--
-- work_orders stands for your own table: adapt the names. The sms_outbox row is written in
-- the work order's own transaction, so a rolled-back work order sends nothing. smsgw takes
-- the row (state 'new') and sends  您的工单<title>已受理，编号<id>  to customer_mobile; ref
-- 'WO-<id>' lets the work-order system find the result in the same row later. A work order
-- without a mobile number gets no message (rather than a failed INSERT).
--
-- Run after interface.sql, in the same database; the file is UTF-8, so tell sqlcmd:
--     sqlcmd -S SERVER -d DBNAME -b -f 65001 -i example-trigger.sql
-- CREATE TRIGGER must be alone in its batch, hence the GO lines. A SQL Server trigger fires
-- once per INSERT statement, not per row: it reads every new row from the inserted table.
-- To remove it: DROP TABLE work_orders;  (drops the trigger with it)

CREATE TABLE work_orders (
    id BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,                 -- the work order's number
    customer_mobile VARCHAR(32) NULL,                             -- whom to tell; NULL or '': nobody
    title NVARCHAR(200) NOT NULL,                                 -- what it is about
    status VARCHAR(16) NOT NULL DEFAULT 'open',
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
GO

CREATE TRIGGER trg_work_orders_sms ON work_orders
AFTER INSERT
AS
BEGIN
    SET NOCOUNT ON;  -- no extra "rows affected" for the work-order system's driver
    -- state 'new' and report_wanted 1 are the column defaults
    INSERT INTO sms_outbox (mobiles, content, ref)
    SELECT i.customer_mobile,
           N'您的工单' + i.title + N'已受理，编号' + CAST(i.id AS NVARCHAR(20)),
           'WO-' + CAST(i.id AS VARCHAR(20))
    FROM inserted AS i
    WHERE i.customer_mobile <> '';  -- false for NULL too
END;
GO
