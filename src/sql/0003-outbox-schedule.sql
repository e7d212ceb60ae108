-- 0003: the outbox is scheduled by an index, and refuses what it cannot
-- send exactly as queued.
--
-- Scheduling.  Only the head of a target's queue (its oldest item in
-- 'pending' or 'sending') has a next_attempt_at; the items behind it wait
-- with NULL.  An item is due when it is 'pending' and its next_attempt_at
-- has come, so the daemon finds the next due item, and the time of the one
-- after, with one lookup in outbox_due, however many items wait for a
-- retry.  The triggers below keep this true for every way an item is
-- queued or changes state, also from plain SQL: a new head is due at once;
-- when a head leaves the queue (sent, failed, cancelled), the next item of
-- its target is due, and so is a message waiting for a conversation item
-- ("outbox:N").  An item that has a time but is not its target's head (a
-- failed item retried behind newer ones) is put back in line by the daemon.

ALTER TABLE outbox ADD COLUMN sending_at TEXT;     -- when its last attempt started

UPDATE outbox
SET next_attempt_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')
WHERE next_attempt_at IS NULL
	AND state IN ('pending', 'sending')
	AND id IN (SELECT min(id) FROM outbox WHERE state IN ('pending', 'sending') GROUP BY target);

DROP INDEX outbox_due;
CREATE INDEX outbox_due
	ON outbox(next_attempt_at)
	WHERE state = 'pending';

DROP TRIGGER outbox_fill_target;

-- A row queued without a target gets it from its payload; a head is due.
CREATE TRIGGER outbox_queued
	AFTER INSERT ON outbox
BEGIN
	UPDATE outbox
	SET target = CASE NEW.kind
		WHEN 'message' THEN json_extract(NEW.payload, '$.conversation_id')
		WHEN 'conversation' THEN 'user:' || json_extract(NEW.payload, '$.user_id')
		END
	WHERE id = NEW.id AND NEW.target IS NULL;
	UPDATE outbox
	SET next_attempt_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')
	WHERE id = NEW.id AND state = 'pending' AND next_attempt_at IS NULL
		AND NOT EXISTS (SELECT 1 FROM outbox AS o
				WHERE o.target = outbox.target AND o.id < outbox.id
					AND o.state IN ('pending', 'sending'));
END;

-- An item back in the queue (retried by hand or by SQL) is due now.
CREATE TRIGGER outbox_requeued
	AFTER UPDATE OF state ON outbox
	WHEN NEW.state = 'pending' AND OLD.state NOT IN ('pending', 'sending')
		AND NEW.next_attempt_at IS NULL
BEGIN
	UPDATE outbox
	SET next_attempt_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')
	WHERE id = NEW.id;
END;

-- A head that leaves the queue makes the next item of its target due, and
-- the first message waiting for it when it is a conversation item.
CREATE TRIGGER outbox_dequeued
	AFTER UPDATE OF state ON outbox
	WHEN OLD.state IN ('pending', 'sending') AND NEW.state NOT IN ('pending', 'sending')
BEGIN
	UPDATE outbox
	SET next_attempt_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')
	WHERE id = (SELECT min(id) FROM outbox
		    WHERE target = NEW.target AND state IN ('pending', 'sending'))
		AND state = 'pending' AND next_attempt_at IS NULL;
	UPDATE outbox
	SET next_attempt_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')
	WHERE NEW.kind = 'conversation'
		AND id = (SELECT min(id) FROM outbox
			  WHERE target = 'outbox:' || NEW.id AND state IN ('pending', 'sending'))
		AND state = 'pending' AND next_attempt_at IS NULL;
END;

-- The checks a CHECK constraint cannot be added for on an existing table.
-- The Idempotency-Key goes into an HTTP header exactly as stored: printable
-- ASCII, no space at either end (a server would strip it), 1 to 255
-- characters (length() and GLOB stop at a NUL, so instr() looks for one).
-- Targets go into paths and logs: no control characters.
-- Message content of only white space is refused like empty content, and a
-- payload holding \u0000 (SQLite's JSON functions cut a string there, so a
-- target would not be what is sent).
CREATE TRIGGER outbox_check_insert
	BEFORE INSERT ON outbox
BEGIN
	SELECT RAISE(ABORT, 'outbox_idempotency_key: the key must be 1 to 255 printable ASCII characters')
	WHERE typeof(NEW.idempotency_key) <> 'text'
		OR length(NEW.idempotency_key) NOT BETWEEN 1 AND 255
		OR NEW.idempotency_key GLOB '*[^ -~]*' OR instr(NEW.idempotency_key, char(0)) > 0
		OR NEW.idempotency_key GLOB ' *' OR NEW.idempotency_key GLOB '* ';
	-- A payload that is not JSON is left to the named CHECK constraint.
	SELECT RAISE(ABORT, 'outbox_target: the target holds a control character or is empty')
	WHERE EXISTS (SELECT 1 FROM (SELECT NEW.target AS t
				     UNION ALL SELECT json_extract(NEW.payload, '$.conversation_id')
					WHERE json_valid(NEW.payload)
				     UNION ALL SELECT json_extract(NEW.payload, '$.user_id')
					WHERE json_valid(NEW.payload))
		      WHERE t IS NOT NULL AND (typeof(t) <> 'text' OR length(t) = 0
			    OR instr(t, char(0)) > 0
			    OR t GLOB '*[' || char(1) || '-' || char(31) || char(127) || ']*'));
	-- \u0000 is a NUL when an odd number of backslashes leads it (one or
	-- three are looked for); the text "\\u0000" is not one.
	SELECT RAISE(ABORT, 'outbox_payload_nul: the payload holds a NUL character (\u0000)')
	WHERE NEW.payload GLOB '*[^\]\u0000*' OR NEW.payload GLOB '*[^\]\\\u0000*';
	SELECT RAISE(ABORT, 'outbox_message_content: the content is empty or only white space')
	WHERE NEW.kind = 'message' AND json_valid(NEW.payload)
		AND json_type(NEW.payload, '$.content') IS 'text'
		AND length(trim(json_extract(NEW.payload, '$.content'),
				' ' || char(9, 10, 11, 12, 13))) = 0;
END;

CREATE TRIGGER outbox_check_key_update
	BEFORE UPDATE OF idempotency_key ON outbox
BEGIN
	SELECT RAISE(ABORT, 'outbox_idempotency_key: the key must be 1 to 255 printable ASCII characters')
	WHERE typeof(NEW.idempotency_key) <> 'text'
		OR length(NEW.idempotency_key) NOT BETWEEN 1 AND 255
		OR NEW.idempotency_key GLOB '*[^ -~]*' OR instr(NEW.idempotency_key, char(0)) > 0
		OR NEW.idempotency_key GLOB ' *' OR NEW.idempotency_key GLOB '* ';
END;

-- A target changed by hand is checked like a queued one.
CREATE TRIGGER outbox_check_target_update
	BEFORE UPDATE OF target ON outbox
	WHEN NEW.target IS NOT NULL AND (typeof(NEW.target) <> 'text' OR length(NEW.target) = 0
		OR instr(NEW.target, char(0)) > 0
		OR NEW.target GLOB '*[' || char(1) || '-' || char(31) || char(127) || ']*')
BEGIN
	SELECT RAISE(ABORT, 'outbox_target: the target holds a control character or is empty');
END;

-- Rows deleted or moved to another target by hand: the queues they leave,
-- and the one they join, get a due head as above.
CREATE TRIGGER outbox_deleted
	AFTER DELETE ON outbox
	WHEN OLD.state IN ('pending', 'sending')
BEGIN
	UPDATE outbox
	SET next_attempt_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')
	WHERE id = (SELECT min(id) FROM outbox
		    WHERE target = OLD.target AND state IN ('pending', 'sending'))
		AND state = 'pending' AND next_attempt_at IS NULL;
END;

CREATE TRIGGER outbox_moved
	AFTER UPDATE OF target ON outbox
	WHEN OLD.target IS NOT NEW.target
BEGIN
	UPDATE outbox
	SET next_attempt_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')
	WHERE id IN (SELECT min(id) FROM outbox
		     WHERE target IN (OLD.target, NEW.target) AND state IN ('pending', 'sending')
		     GROUP BY target)
		AND state = 'pending' AND next_attempt_at IS NULL;
END;
