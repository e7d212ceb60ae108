-- 0001: the public schema of dexsync (SPEC section 5).
-- A released migration is never edited: a change is a new numbered file.
-- Timestamps are UTC text, YYYY-MM-DDTHH:MM:SSZ.

CREATE TABLE conversations (
	id                TEXT PRIMARY KEY NOT NULL,
	status            TEXT,
	subject           TEXT,
	created_at        TEXT,
	last_message_id   TEXT,
	last_message_text TEXT,
	user_id           TEXT,
	raw               TEXT NOT NULL,            -- the object as last listed
	detail            TEXT,                     -- GET /conversations/:id
	detail_needed     INTEGER NOT NULL DEFAULT 1, -- new or changed since detail
	first_seen_at     TEXT NOT NULL,
	changed_at        TEXT NOT NULL,            -- last time our copy changed
	gone_at           TEXT                      -- no longer listed upstream
);

CREATE INDEX conversations_detail_needed
	ON conversations(changed_at)
	WHERE detail_needed;

CREATE TABLE participants (
	conversation_id TEXT NOT NULL REFERENCES conversations(id),
	position        INTEGER NOT NULL,
	user_id         TEXT,
	raw             TEXT NOT NULL,
	PRIMARY KEY (conversation_id, position)
) WITHOUT ROWID;

CREATE INDEX participants_user_id ON participants(user_id);

CREATE TABLE messages (
	id              TEXT PRIMARY KEY NOT NULL,
	conversation_id TEXT NOT NULL,
	text            TEXT,
	type            TEXT,
	timestamp       TEXT,
	origin          TEXT NOT NULL CHECK (origin IN ('listed', 'outbox')),
	raw             TEXT NOT NULL
);

CREATE INDEX messages_conversation_id ON messages(conversation_id);

CREATE TABLE users (
	id                TEXT PRIMARY KEY NOT NULL,
	email             TEXT,
	custom_attributes TEXT CHECK (custom_attributes IS NULL OR json_valid(custom_attributes)),
	raw               TEXT NOT NULL,
	updated_at        TEXT NOT NULL
);

-- The outbox is written by people and scripts as well as by dexsync, so it
-- guards itself: a plain INSERT INTO outbox(kind, target, payload) works,
-- anything dexsyncd could not send is refused with a named constraint.
-- (A CHECK that comes to NULL passes: hence IS, not =, on json_type.)
CREATE TABLE outbox (
	id              INTEGER PRIMARY KEY,
	kind            TEXT NOT NULL
		CONSTRAINT outbox_kind CHECK (kind IN ('message', 'user_update', 'conversation')),
	target          TEXT,
	payload         TEXT NOT NULL
		CONSTRAINT outbox_payload_object CHECK (json_valid(payload) AND json_type(payload) = 'object'),
	state           TEXT NOT NULL DEFAULT 'pending'
		CONSTRAINT outbox_state CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'cancelled')),
	attempts        INTEGER NOT NULL DEFAULT 0,
	next_attempt_at TEXT,                       -- NULL: as soon as possible
	idempotency_key TEXT NOT NULL UNIQUE DEFAULT (
		lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' ||
		substr(lower(hex(randomblob(2))), 2) || '-' ||
		substr('89ab', 1 + abs(random() % 4), 1) ||
		substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
	last_status     INTEGER,
	last_error      TEXT,
	remote_id       TEXT,
	response        TEXT,
	created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
	retried_at      TEXT,                       -- by dexsync retry: max-age counts from here
	sent_at         TEXT,
	CONSTRAINT outbox_message_content CHECK (kind <> 'message' OR (
		json_type(payload, '$.content') IS 'text' AND
		length(trim(json_extract(payload, '$.content'))) > 0)),
	CONSTRAINT outbox_message_conversation CHECK (kind <> 'message' OR (
		json_type(payload, '$.conversation_id') IS 'text' AND
		(target IS NULL OR target = json_extract(payload, '$.conversation_id')))),
	CONSTRAINT outbox_message_type CHECK (kind <> 'message' OR
		json_type(payload, '$.type') IS NULL OR
		json_extract(payload, '$.type') IN ('text', 'private_note')),
	CONSTRAINT outbox_user_target CHECK (kind <> 'user_update' OR coalesce(length(target), 0) > 0),
	CONSTRAINT outbox_conversation_user CHECK (kind <> 'conversation' OR
		json_type(payload, '$.user_id') IS 'text')
);

CREATE INDEX outbox_due
	ON outbox(next_attempt_at)
	WHERE state IN ('pending', 'sending');

-- The head of each target's queue, for per-target FIFO delivery.
CREATE INDEX outbox_queue
	ON outbox(target, id)
	WHERE state IN ('pending', 'sending');

-- A row queued without a target gets it from its payload.
CREATE TRIGGER outbox_fill_target
	AFTER INSERT ON outbox
	WHEN NEW.target IS NULL
BEGIN
	UPDATE outbox
	SET target = CASE NEW.kind
		WHEN 'message' THEN json_extract(NEW.payload, '$.conversation_id')
		WHEN 'conversation' THEN 'user:' || json_extract(NEW.payload, '$.user_id')
		END
	WHERE id = NEW.id;
END;

CREATE TABLE sync_runs (
	id          INTEGER PRIMARY KEY,
	started_at  TEXT NOT NULL,
	finished_at TEXT,
	outcome     TEXT NOT NULL DEFAULT 'running'
		CHECK (outcome IN ('running', 'ok', 'failed', 'interrupted')),
	resumed     INTEGER NOT NULL DEFAULT 0,     -- continued a walk cut short
	pages       INTEGER NOT NULL DEFAULT 0,
	seen        INTEGER NOT NULL DEFAULT 0,
	inserted    INTEGER NOT NULL DEFAULT 0,
	changed     INTEGER NOT NULL DEFAULT 0,
	unchanged   INTEGER NOT NULL DEFAULT 0,
	gone        INTEGER NOT NULL DEFAULT 0,
	details     INTEGER NOT NULL DEFAULT 0,     -- conversations fetched in detail
	requests    INTEGER NOT NULL DEFAULT 0,
	retries     INTEGER NOT NULL DEFAULT 0,
	error       TEXT
);

-- Private to dexsyncd: where an interrupted walk resumes.
CREATE TABLE sync_state (
	key   TEXT PRIMARY KEY NOT NULL,
	value TEXT NOT NULL
) WITHOUT ROWID;

CREATE VIEW report_by_status AS
SELECT status, count(*) AS conversations
FROM conversations
WHERE gone_at IS NULL
GROUP BY status;

CREATE VIEW report_daily AS
SELECT substr(created_at, 1, 10) AS day, status, count(*) AS conversations
FROM conversations
WHERE gone_at IS NULL
GROUP BY day, status;

CREATE VIEW report_outbox AS
SELECT kind, state, count(*) AS items,
	CAST(max(CASE WHEN state = 'pending'
		THEN unixepoch('now') - unixepoch(created_at) END) AS INTEGER) AS oldest_pending_seconds
FROM outbox
GROUP BY kind, state;

CREATE VIEW report_sync_history AS
SELECT id, started_at, finished_at, outcome, pages, seen, inserted, changed,
	unchanged, gone, error
FROM sync_runs
ORDER BY id DESC;
