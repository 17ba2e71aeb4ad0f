"""The store's tables (SQLAlchemy Core), shaped by the queries users and the pipeline run.

Times are epoch seconds (float): dialect-neutral, cheap to compare, and what the
pipeline works in; the API renders them as ISO-8601. Ids are 64-bit integers from
`smsgw.store.ids.IdGenerator` (time-ordered, with the node id inside), so
several daemons can insert into one store without a sequence round trip.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    UnicodeText,
)

metadata = MetaData()

schema_versions = Table(
    "smsgw_schema", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_at", Double, nullable=False),
)

# One row per accepted MT message (one text, one or many recipients).
messages = Table(
    "messages", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("account", String(64), nullable=False),
    Column("interface", String(32), nullable=False),  # rest, url, soap, file, db:<source>, auto_reply
    Column("ref", String(64)),  # the caller's own reference
    Column("content", UnicodeText, nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("send_at", Double),
    Column("ext", String(12), nullable=False),
    Column("report", Boolean, nullable=False),
    Column("msg_fmt", SmallInteger, nullable=False),
    Column("segments", SmallInteger, nullable=False),  # per recipient
    Column("recipients", Integer, nullable=False),
    Column("open_recipients", Integer, nullable=False),  # not yet in a final state
    Column("state", String(16), nullable=False),
    Column("needs_review", Boolean, nullable=False),
    Column("notify", String(64)),  # outbox kind owed on final states (None: the origin pulls)
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("dlr_url", String(1000)),  # v3: this message's own report URL (Kannel dlr-url, %-escapes)
    Column("dlr_mask", SmallInteger),  # v3: which reports it wants (Kannel dlr-mask bits)
    Column("template", String(64)),  # v4: the named template its content was rendered from
    # v5: review (smsgw.review) and batches. A batch is one import or one mass request, reviewed as a unit.
    Column("batch", String(64)),
    Column("review", String(16)),  # passed, pending, approved, rejected, cancelled (lifecycle.Review)
    Column("review_rule", String(64)),  # the rule that decided (None: no rule matched, so it passed)
    Column("review_deadline", Double),  # while pending: when the rule's time limit runs out
    Column("review_expiry", String(8)),  # what happens then: approve, reject, alarm
    Column("reviewed_by", String(64)),  # the reviewer (or "expiry") who decided
    Column("reviewed_at", Double),
    Column("review_comment", String(500)),
)
Index("ix_messages_account_created", messages.c.account, messages.c.created_at)
Index("ix_messages_review_created", messages.c.review, messages.c.created_at)
Index("ix_messages_batch", messages.c.batch)
Index("ix_messages_state_created", messages.c.state, messages.c.created_at)
Index("ix_messages_account_ref", messages.c.account, messages.c.ref)

# The dispatch unit: one recipient of a message.
recipients = Table(
    "recipients", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("message_id", BigInteger, nullable=False),
    Column("phone", String(24), nullable=False),
    Column("link", String(32), nullable=False),
    Column("account", String(64), nullable=False),  # copied from the message: fair claims per origin
    Column("priority", SmallInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("due_at", Double, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_until", Double),
    Column("attempts", SmallInteger, nullable=False),
    Column("segments", SmallInteger, nullable=False),
    Column("reported", SmallInteger, nullable=False),  # segments of the current attempt with a final report
    Column("failed", SmallInteger, nullable=False),  # ... of which not delivered
    Column("stat", String(16)),
    Column("error", String(255)),
    Column("submitted_at", Double),
    Column("final_at", Double),
    Column("updated_at", Double, nullable=False),
    Column("notify", String(64)),  # copied from the message (v2): outbox kind owed on submit and final states
)
# Claims: queued work of one link and origin, best priority first, then oldest due.
Index("ix_recipients_claim", recipients.c.link, recipients.c.state, recipients.c.account,
      recipients.c.priority.desc(), recipients.c.due_at)
Index("ix_recipients_message", recipients.c.message_id)
Index("ix_recipients_phone", recipients.c.phone)
Index("ix_recipients_state_submitted", recipients.c.state, recipients.c.submitted_at)
Index("ix_recipients_lease", recipients.c.lease_owner, recipients.c.state)

# One row per SUBMIT the ISMG accepted (a Msg_Id), per attempt.
segments = Table(
    "segments", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("recipient_id", BigInteger, nullable=False),
    Column("number", SmallInteger, nullable=False),  # 1-based
    Column("total", SmallInteger, nullable=False),
    Column("attempt", SmallInteger, nullable=False),
    Column("msg_id", String(16), nullable=False),  # canonical 16-hex text
    Column("state", String(16), nullable=False),
    Column("stat", String(16)),
    Column("submitted_at", Double, nullable=False),
    Column("reported_at", Double),
)
Index("ix_segments_msg_id", segments.c.msg_id)
Index("ix_segments_recipient", segments.c.recipient_id)

# Every status report received, also the ones that match nothing (yet).
reports = Table(
    "reports", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("link", String(32), nullable=False),
    Column("msg_id", String(16), nullable=False),
    Column("stat", String(16), nullable=False),
    Column("dest", String(32), nullable=False),
    Column("submit_time", String(10), nullable=False),
    Column("done_time", String(10), nullable=False),
    Column("received_at", Double, nullable=False),
    Column("segment_id", BigInteger),
    Column("state", String(8), nullable=False),  # matched, pending (retried), orphan
)
Index("ix_reports_msg_id", reports.c.msg_id)
Index("ix_reports_state_received", reports.c.state, reports.c.received_at)

mo_messages = Table(
    "mo_messages", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("link", String(32), nullable=False),
    Column("src", String(32), nullable=False),
    Column("dest", String(32), nullable=False),  # service code + extension
    Column("ext", String(21), nullable=False),
    Column("content", UnicodeText, nullable=False),
    Column("service_id", String(10), nullable=False),
    Column("keyword", String(32)),
    Column("consumer", String(64)),
    Column("parts", SmallInteger, nullable=False),
    Column("complete", Boolean, nullable=False),
    Column("received_at", Double, nullable=False),
)
Index("ix_mo_consumer_id", mo_messages.c.consumer, mo_messages.c.id)
Index("ix_mo_src_received", mo_messages.c.src, mo_messages.c.received_at)
Index("ix_mo_received", mo_messages.c.received_at)

# Parts of long MO messages whose set is not whole yet: committed before each part's DELIVER_RESP,
# deleted in the transaction that stores the reassembled message.
mo_parts = Table(
    "mo_parts", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("link", String(32), nullable=False),
    Column("part_set", String(160), nullable=False),  # smsgw.carrier.part_set_id
    Column("number", SmallInteger, nullable=False),
    Column("payload", String(400), nullable=False),  # hex of the bytes after the UDH (≤ 140 bytes)
    Column("msg_fmt", SmallInteger, nullable=False),
    Column("received_at", Double, nullable=False),
)
Index("ix_mo_parts_set", mo_parts.c.part_set)

# Notifications owed to the originating system (write-backs, callbacks), delivered at least once.
outbox = Table(
    "outbox", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(64), nullable=False),
    Column("event", String(32), nullable=False),  # recipient_final, mo
    Column("message_id", BigInteger),
    Column("recipient_id", BigInteger),
    Column("payload", UnicodeText, nullable=False),  # JSON
    Column("state", String(8), nullable=False),  # pending, done, dead
    Column("attempts", Integer, nullable=False),
    Column("next_at", Double, nullable=False),
    Column("lease_owner", String(64)),
    Column("created_at", Double, nullable=False),
    Column("done_at", Double),
    Column("last_error", String(255)),
)
Index("ix_outbox_state_next", outbox.c.state, outbox.c.next_at)
Index("ix_outbox_message", outbox.c.message_id)

# Rows taken from a legacy database (v2): (source, row key) is taken once, whatever
# crashes between the legacy database's commit and the store's.
source_rows = Table(
    "source_rows", metadata,
    Column("source", String(64), primary_key=True),
    Column("row_key", String(128), primary_key=True),
    Column("message_id", BigInteger, nullable=False),
    Column("created_at", Double, nullable=False),
)
Index("ix_source_rows_message", source_rows.c.message_id)

audit_log = Table(
    "audit_log", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("at", Double, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("details", UnicodeText, nullable=False),
)
Index("ix_audit_at", audit_log.c.at)
Index("ix_audit_actor_at", audit_log.c.actor, audit_log.c.at)

# Named message templates (v4; smsgw.templates): managed through the REST API and `smsgw template`.
templates = Table(
    "templates", metadata,
    Column("name", String(64), primary_key=True),
    Column("content", UnicodeText, nullable=False),
    Column("pre_approved", Boolean, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("updated_by", String(64), nullable=False),
)
