-- smsgw's standard interface tables for a legacy database: Microsoft SQL Server (2012 or later).
--
--   sms_outbox  the legacy system inserts one row per message to send; smsgw takes the rows
--               in state 'new' and writes the result columns back.
--   sms_inbox   smsgw inserts one row per uplink (MO) message; the legacy system reads the
--               rows and sets read_flag.
--
-- This is the hand-run copy for DBAs. `smsgw db init-interface --url URL` creates the same
-- tables (from adapters/db/interface.py; the tests keep the two equal). docs/legacy-db.md
-- explains the columns and the states; grants.sql gives the database users their rights.
--
-- Run it in the database of smsgw's URL, as a user whose default schema should own the tables
-- (usually dbo):
--     sqlcmd -S SERVER -d DBNAME -b -i interface.sql
-- Texts that may hold Chinese are NVARCHAR; numbers, codes and ids are VARCHAR.
--
-- smsgw remembers each sms_outbox row by its id, so an id must never come back: do not
-- TRUNCATE sms_outbox (it reseeds the identity) or DBCC CHECKIDENT ... RESEED it.
--
-- sms_outbox.state, in the order a row moves through them (docs/legacy-db.md has the rules):
--     new            inserted by the legacy system, not taken yet
--     accepted       taken by smsgw (taken_by, taken_at) and queued as message_id
--     submitted      handed to the carrier (msg_ids); waiting for status reports
--     sent           handed to the carrier, no status report asked for
--     delivered      reported delivered (stat DELIVRD)
--     undeliverable  reported with another final Stat (in stat)
--     failed         the carrier refused it or it could not be sent (submit_result, error)
--     expired        no status report came in time
--     partial        some numbers delivered or sent, the others not
--     rejected       smsgw refused the row itself, e.g. a bad number, or a reviewer rejected it (error)
--     cancelled      its sender cancelled it before it went out (error)

CREATE TABLE sms_outbox (
    id BIGINT IDENTITY(1,1) NOT NULL,                             -- row id, assigned by the database
    -- written by the legacy system
    mobiles VARCHAR(2000) NOT NULL,                               -- one or several numbers: , ; or blanks between them
    content NVARCHAR(2000) NOT NULL,                              -- the text to send
    send_at DATETIME2 NULL,                                        -- not before this (local time); NULL: at once
    priority SMALLINT NULL,                                       -- 0 (bulk) .. 9 (urgent); NULL: 5
    ext VARCHAR(12) NULL,                                         -- extension appended to the service number
    report_wanted SMALLINT NOT NULL DEFAULT 1,                    -- 1: ask for a status report; 0: do not
    ref VARCHAR(64) NULL,                                         -- the legacy system's own reference; smsgw leaves it alone
    template VARCHAR(64) NULL,                                    -- a named template instead of content
    params NVARCHAR(2000) NULL,                                   -- the template's parameters, a JSON object
    created_at DATETIME2 NOT NULL DEFAULT CURRENT_TIMESTAMP,       -- when the row was inserted
    -- written by smsgw
    state VARCHAR(16) NOT NULL DEFAULT 'new',                     -- see the list above; insert 'new' (the default)
    message_id VARCHAR(20) NULL,                                  -- smsgw's message id (REST: GET /api/v1/messages/{id})
    submit_result VARCHAR(64) NULL,                               -- 0: the carrier took it; else the code, e.g. R13
    msg_ids VARCHAR(2000) NULL,                                   -- the carrier's Msg_Id(s), comma-separated
    stat VARCHAR(16) NULL,                                        -- the final status report's Stat, e.g. DELIVRD
    error NVARCHAR(500) NULL,                                     -- why it failed or was rejected, in words
    taken_by VARCHAR(64) NULL,                                    -- the smsgw node that took the row
    taken_at DATETIME2 NULL,                                       -- when smsgw took the row
    submitted_at DATETIME2 NULL,                                   -- when it was handed to the carrier
    done_at DATETIME2 NULL,                                        -- when it reached its final state
    PRIMARY KEY (id)
);

-- smsgw looks for rows by state, oldest first
CREATE INDEX ix_sms_outbox_state_id ON sms_outbox (state, id);

CREATE TABLE sms_inbox (
    id BIGINT IDENTITY(1,1) NOT NULL,                             -- row id, assigned by the database
    mo_id VARCHAR(20) NOT NULL,                                   -- smsgw's MO id: unique, so a repeated write is recognised
    mobile VARCHAR(32) NOT NULL,                                  -- who sent it
    content NVARCHAR(2000) NOT NULL,                              -- the text
    dest VARCHAR(32) NOT NULL,                                    -- the full destination: service number + extension
    ext VARCHAR(21) NOT NULL,                                     -- the extension alone (which business it is for)
    received_at DATETIME2 NOT NULL,                                -- when smsgw received it (local time)
    read_flag SMALLINT NOT NULL DEFAULT 0,                        -- 0: not taken yet; the consumer sets it when it has taken the row
    PRIMARY KEY (id),
    UNIQUE (mo_id)
);

-- the consumer looks for unread rows, oldest first
CREATE INDEX ix_sms_inbox_read_id ON sms_inbox (read_flag, id);
GO
