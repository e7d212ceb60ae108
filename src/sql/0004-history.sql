-- 0004: history.  What each walk saw change in a conversation it already
-- held, one row per change, and the reports built on it (SPEC 3.10, 5).
--
-- Events are written by the trigger below, in the transaction of the
-- UPDATE that makes the change, so a change and its event are committed
-- together or not at all.  An upsert that changes nothing updates nothing
-- (mirror.c), and an INSERT fires no UPDATE trigger: an unchanged re-walk
-- and an initial mirror write no event and pay nothing for the trigger.
--
-- The trigger writes only in a walk's transactions: dexsyncd puts the
-- walk's sync_runs id in sync_state ('history:run') at the start of each and
-- removes it before its commit (mirror.c; dexsyncd 0.1 kept it for the
-- whole walk), so an UPDATE a person makes with sqlite3 is no event.
-- The outbox writes its own events (origin 'outbox').
--
-- The interval of a change: it happened after `after`, the last time
-- dexsync is sure it saw the old value, and at or before `seen_at`, when
-- the walk saw the new one.  `after` is the later of the row's changed_at
-- (its last write, which held the old value) and the start of the last
-- complete walk of everything ('history:seen_all', which listed every live
-- row); for a row that was gone, its changed_at.  The walk's own page time
-- is the new changed_at, hence `seen_at`.

CREATE TABLE conversation_events (
	id              INTEGER PRIMARY KEY,
	conversation_id TEXT NOT NULL,
	run_id          INTEGER,                    -- sync_runs.id; NULL from the outbox
	field           TEXT NOT NULL
		CONSTRAINT conversation_events_field CHECK (field IN
			('status', 'subject', 'last_message', 'user', 'gone', 'returned')),
	old_value       TEXT,
	new_value       TEXT,
	after           TEXT,                       -- the old value was seen then
	seen_at         TEXT NOT NULL,              -- the new value was seen by then
	origin          TEXT NOT NULL DEFAULT 'walk'
		CONSTRAINT conversation_events_origin CHECK (origin IN ('walk', 'outbox')),
	conversation_created_at TEXT                -- copied: the reports need no join
);

-- dexsync history, and a conversation's timeline in SQL.
CREATE INDEX conversation_events_conversation
	ON conversation_events(conversation_id, id);

-- report_changes: groups stream out of it in order.
CREATE INDEX conversation_events_run
	ON conversation_events(run_id, field);

-- report_time_to_close and report_reopened read only these, in
-- conversation order (groups stream out of them).
CREATE INDEX conversation_events_closed
	ON conversation_events(conversation_id, id, conversation_created_at, after, seen_at)
	WHERE field = 'status' AND new_value = 'closed';
CREATE INDEX conversation_events_reopened
	ON conversation_events(conversation_id, seen_at)
	WHERE field = 'status' AND old_value = 'closed' AND new_value IN ('open', 'snoozed');

-- report_backlog_daily: what it reads of the status changes, in one index.
CREATE INDEX conversation_events_backlog
	ON conversation_events(seen_at, conversation_created_at, field, old_value, new_value)
	WHERE field IN ('status', 'gone', 'returned');

-- When history began: backlog-daily starts that day.
INSERT INTO sync_state(key, value)
VALUES ('history:since', strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
ON CONFLICT(key) DO NOTHING;

-- gone and returned carry the status the conversation had: what left the
-- list or came back.  A conversation that comes back changed has its
-- 'returned' event first, then its other changes (statements run in order).
-- One INSERT per field, each writing only when its field changed and a
-- walk runs ('history:run').
CREATE TRIGGER conversation_events_record
	AFTER UPDATE OF status, subject, last_message_id, user_id, gone_at ON conversations
	WHEN OLD.status IS NOT NEW.status OR OLD.subject IS NOT NEW.subject
		OR OLD.last_message_id IS NOT NEW.last_message_id
		OR OLD.user_id IS NOT NEW.user_id OR OLD.gone_at IS NOT NEW.gone_at
BEGIN
	INSERT INTO conversation_events(conversation_id, run_id, field, old_value, new_value,
		after, seen_at, conversation_created_at)
	SELECT NEW.id, CAST(value AS INTEGER), 'returned', OLD.status, OLD.status,
		OLD.gone_at,
		NEW.changed_at, NEW.created_at
	FROM sync_state
	WHERE key = 'history:run' AND OLD.gone_at IS NOT NULL AND NEW.gone_at IS NULL;
	INSERT INTO conversation_events(conversation_id, run_id, field, old_value, new_value,
		after, seen_at, conversation_created_at)
	SELECT NEW.id, CAST(value AS INTEGER), 'gone', OLD.status, OLD.status,
		CASE WHEN OLD.gone_at IS NOT NULL THEN OLD.changed_at
		ELSE max(OLD.changed_at, coalesce((SELECT value FROM sync_state
						   WHERE key = 'history:seen_all'), '')) END,
		NEW.gone_at, NEW.created_at
	FROM sync_state
	WHERE key = 'history:run' AND OLD.gone_at IS NULL AND NEW.gone_at IS NOT NULL;
	INSERT INTO conversation_events(conversation_id, run_id, field, old_value, new_value,
		after, seen_at, conversation_created_at)
	SELECT NEW.id, CAST(value AS INTEGER), 'status', OLD.status, NEW.status,
		CASE WHEN OLD.gone_at IS NOT NULL THEN OLD.changed_at
		ELSE max(OLD.changed_at, coalesce((SELECT value FROM sync_state
						   WHERE key = 'history:seen_all'), '')) END,
		NEW.changed_at, NEW.created_at
	FROM sync_state
	WHERE key = 'history:run' AND OLD.status IS NOT NEW.status;
	INSERT INTO conversation_events(conversation_id, run_id, field, old_value, new_value,
		after, seen_at, conversation_created_at)
	SELECT NEW.id, CAST(value AS INTEGER), 'subject', OLD.subject, NEW.subject,
		CASE WHEN OLD.gone_at IS NOT NULL THEN OLD.changed_at
		ELSE max(OLD.changed_at, coalesce((SELECT value FROM sync_state
						   WHERE key = 'history:seen_all'), '')) END,
		NEW.changed_at, NEW.created_at
	FROM sync_state
	WHERE key = 'history:run' AND OLD.subject IS NOT NEW.subject;
	INSERT INTO conversation_events(conversation_id, run_id, field, old_value, new_value,
		after, seen_at, conversation_created_at)
	SELECT NEW.id, CAST(value AS INTEGER), 'last_message', OLD.last_message_id, NEW.last_message_id,
		CASE WHEN OLD.gone_at IS NOT NULL THEN OLD.changed_at
		ELSE max(OLD.changed_at, coalesce((SELECT value FROM sync_state
						   WHERE key = 'history:seen_all'), '')) END,
		NEW.changed_at, NEW.created_at
	FROM sync_state
	WHERE key = 'history:run' AND OLD.last_message_id IS NOT NEW.last_message_id;
	INSERT INTO conversation_events(conversation_id, run_id, field, old_value, new_value,
		after, seen_at, conversation_created_at)
	SELECT NEW.id, CAST(value AS INTEGER), 'user', OLD.user_id, NEW.user_id,
		CASE WHEN OLD.gone_at IS NOT NULL THEN OLD.changed_at
		ELSE max(OLD.changed_at, coalesce((SELECT value FROM sync_state
						   WHERE key = 'history:seen_all'), '')) END,
		NEW.changed_at, NEW.created_at
	FROM sync_state
	WHERE key = 'history:run' AND OLD.user_id IS NOT NEW.user_id;
END;

-- Open and snoozed conversations at the end of each day (UTC) since history
-- began.  A conversation counts from the day it was created; its status on
-- a past day is its status now with the changes seen after that day undone,
-- newest first (a change counts on the day it was seen).  Each event's part
-- is (before it: listed with status S) - (after it: listed with status S),
-- so a day's count is: live conversations with status S now created by that
-- day, plus the parts of the events seen after it of conversations created
-- by it.  With created' = min(created day, seen day), that last sum is
-- C(day) - S(day): the parts with created' <= day, less those seen by it.
CREATE VIEW report_backlog_daily AS
WITH RECURSIVE since(day) AS (
	SELECT coalesce((SELECT substr(value, 1, 10) FROM sync_state WHERE key = 'history:since'),
			date('now'))
), days(day) AS (
	SELECT day FROM since
	UNION ALL
	SELECT date(day, '+1 day') FROM days WHERE day < date('now')
), live AS (
	SELECT substr(created_at, 1, 10) AS day, sum(status = 'open') AS open,
		sum(status = 'snoozed') AS snoozed
	FROM conversations              -- covered by conversations_live_status
	WHERE gone_at IS NULL AND status IN ('open', 'snoozed')
	GROUP BY substr(created_at, 1, 10)
), parts AS (
	SELECT substr(seen_at, 1, 10) AS seen,
		min(substr(conversation_created_at, 1, 10), substr(seen_at, 1, 10)) AS created,
		(field <> 'returned' AND old_value IS 'open') - (field <> 'gone' AND new_value IS 'open') AS open,
		(field <> 'returned' AND old_value IS 'snoozed') - (field <> 'gone' AND new_value IS 'snoozed') AS snoozed
	FROM conversation_events
	WHERE field IN ('status', 'gone', 'returned') AND conversation_created_at IS NOT NULL
), by_created AS (
	SELECT max(created, (SELECT day FROM since)) AS day, sum(open) AS open, sum(snoozed) AS snoozed
	FROM parts GROUP BY 1
), by_seen AS (
	SELECT max(seen, (SELECT day FROM since)) AS day, sum(open) AS open, sum(snoozed) AS snoozed
	FROM parts GROUP BY 1
), base AS (
	SELECT sum(open) AS open, sum(snoozed) AS snoozed
	FROM live
	WHERE day < (SELECT day FROM since)
), per_day AS (
	SELECT d.day,
		coalesce(l.open, 0) + coalesce(c.open, 0) - coalesce(s.open, 0) AS open,
		coalesce(l.snoozed, 0) + coalesce(c.snoozed, 0) - coalesce(s.snoozed, 0) AS snoozed
	FROM days AS d
	LEFT JOIN live AS l ON l.day = d.day
	LEFT JOIN by_created AS c ON c.day = d.day
	LEFT JOIN by_seen AS s ON s.day = d.day
)
SELECT day,
	(SELECT coalesce(open, 0) FROM base) + sum(open) OVER w AS open,
	(SELECT coalesce(snoozed, 0) FROM base) + sum(snoozed) OVER w AS snoozed
FROM per_day
WINDOW w AS (ORDER BY day ROWS UNBOUNDED PRECEDING)
ORDER BY day;

-- Time to close, per week of creation (the Monday, UTC): conversations
-- whose first close dexsync saw, and the median and 90th percentile hours
-- from created_at to it.  A close is only known to lie between `after` and
-- `seen_at`: the _low columns take every close at its earliest, the _high
-- ones at its latest, so the true median lies between median_hours_low and
-- median_hours_high (likewise the 90th percentile).  Nearest rank.
CREATE VIEW report_time_to_close AS
WITH closes AS (
	-- The other columns come from the row of min(id): the first close.
	SELECT conversation_id, min(id), conversation_created_at AS created_at, after, seen_at
	FROM conversation_events
	WHERE field = 'status' AND new_value = 'closed'
	GROUP BY conversation_id
), hours AS (
	SELECT date(created_at, 'weekday 0', '-6 days') AS week,
		max(0, (julianday(coalesce(after, created_at)) - julianday(created_at)) * 24) AS low,
		max(0, (julianday(seen_at) - julianday(created_at)) * 24) AS high
	FROM closes
	WHERE julianday(created_at) IS NOT NULL
), ranked AS (
	SELECT week, low, high,
		row_number() OVER (PARTITION BY week ORDER BY low) AS rank_low,
		row_number() OVER (PARTITION BY week ORDER BY high) AS rank_high,
		count(*) OVER (PARTITION BY week) AS n
	FROM hours
)
SELECT week, n AS closed,
	round(max(CASE WHEN rank_low = (n + 1) / 2 THEN low END), 1) AS median_hours_low,
	round(max(CASE WHEN rank_high = (n + 1) / 2 THEN high END), 1) AS median_hours_high,
	round(max(CASE WHEN rank_low = (n * 9 + 9) / 10 THEN low END), 1) AS p90_hours_low,
	round(max(CASE WHEN rank_high = (n * 9 + 9) / 10 THEN high END), 1) AS p90_hours_high
FROM ranked
GROUP BY week
ORDER BY week;

-- Conversations closed, then open (or snoozed) again: how often, and the
-- last time (the walk that saw it), latest first.  From the events alone
-- (a join for the subject would read a conversation row per line).
CREATE VIEW report_reopened AS
SELECT conversation_id, count(*) AS reopened, max(seen_at) AS last_reopened_at
FROM conversation_events
WHERE field = 'status' AND old_value = 'closed' AND new_value IN ('open', 'snoozed')
GROUP BY conversation_id
ORDER BY last_reopened_at DESC, conversation_id;

-- Events per walk and field (the outbox's under run_id NULL), newest walk
-- first: what each walk changed.
CREATE VIEW report_changes AS
SELECT e.run_id, r.started_at, e.field, count(*) AS events
FROM conversation_events AS e
LEFT JOIN sync_runs AS r ON r.id = e.run_id
GROUP BY e.run_id, e.field
ORDER BY e.run_id IS NULL, e.run_id DESC, e.field;
