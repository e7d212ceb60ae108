-- 0006: the history reports without sorting every event (SPEC 5; the
-- times are over ten walks changing 10 % of 1,000,000 conversations).
--
-- 1. report_backlog_daily.  The view of 0004 grouped every status event by the day it was seen and
-- the day it counts from, twice, each time through a sort: 2 s over the
-- 1,000,000 status events of ten walks changing 10 % of a million
-- conversations.  An index on those two days (expressions, as the view
-- groups by them) hands the events over already grouped: the grouping is
-- one scan of the index (0.09 s there).  It replaces
-- conversation_events_backlog, which only this view read, so an event
-- costs no more bytes.  The live part reads conversations_live_day, whose
-- order is the day's.

DROP VIEW report_backlog_daily;
DROP INDEX conversation_events_backlog;

CREATE INDEX conversation_events_backlog_days
	ON conversation_events(substr(seen_at, 1, 10),
		min(substr(conversation_created_at, 1, 10), substr(seen_at, 1, 10)),
		field, old_value, new_value)
	WHERE field IN ('status', 'gone', 'returned') AND conversation_created_at IS NOT NULL;

-- The arithmetic is 0004's (read its comment): a day's count is the live
-- conversations with that status created by then, plus the parts of the
-- events that day's status undoes.  The parts are summed per (seen day,
-- created' day) in index order, then per day each way.
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
	FROM conversations INDEXED BY conversations_live_day
	WHERE gone_at IS NULL AND status IN ('open', 'snoozed')
	GROUP BY substr(created_at, 1, 10)
), parts AS (
	SELECT substr(seen_at, 1, 10) AS seen,
		min(substr(conversation_created_at, 1, 10), substr(seen_at, 1, 10)) AS created,
		sum((field <> 'returned' AND old_value IS 'open') - (field <> 'gone' AND new_value IS 'open')) AS open,
		sum((field <> 'returned' AND old_value IS 'snoozed') - (field <> 'gone' AND new_value IS 'snoozed')) AS snoozed
	FROM conversation_events
	WHERE field IN ('status', 'gone', 'returned') AND conversation_created_at IS NOT NULL
	GROUP BY substr(seen_at, 1, 10),
		min(substr(conversation_created_at, 1, 10), substr(seen_at, 1, 10))
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

-- 2. report_time_to_close.  The view of 0004 found each conversation's first
-- close among the events, then ranked the closes of each week twice with
-- window functions (two sorts): 1.7 s over 333,000 closes.  Here the first
-- close of each conversation is kept in a table of its own, with its week
-- and its hours from created_at at the earliest (low) and latest (high), by
-- triggers on conversation_events, and each percentile is the row at its
-- rank in an index on (week, hours): a walk along the index, no sort.
--
-- conversation_closes is derived: the triggers keep it equal to the first
-- close among the events whatever writes them (a walk, the outbox, pruning
-- by history-days, a user's SQL); it is not to be written by hand.  A
-- conversation whose created_at is not a time has a row with week NULL,
-- and the report leaves it out (as 0004's did).
CREATE TABLE conversation_closes (
	conversation_id TEXT PRIMARY KEY NOT NULL,
	event_id        INTEGER NOT NULL,           -- conversation_events.id of the first close
	week            TEXT,                       -- the Monday of created_at's week (UTC)
	low             REAL,                       -- hours from created_at, at the earliest
	high            REAL                        -- and at the latest
) WITHOUT ROWID;

CREATE INDEX conversation_closes_low ON conversation_closes(week, low) WHERE week IS NOT NULL;
CREATE INDEX conversation_closes_high ON conversation_closes(week, high) WHERE week IS NOT NULL;

-- The first close of a conversation ?, from its events: what the triggers
-- below put in the table (written out in each: a view cannot take a
-- parameter).
CREATE TRIGGER conversation_closes_insert
	AFTER INSERT ON conversation_events
	WHEN NEW.field = 'status' AND NEW.new_value = 'closed'
BEGIN
	INSERT INTO conversation_closes(conversation_id, event_id, week, low, high)
	SELECT NEW.conversation_id, NEW.id, date(c, 'weekday 0', '-6 days'),
		max(0, (julianday(coalesce(NEW.after, c)) - julianday(c)) * 24),
		max(0, (julianday(NEW.seen_at) - julianday(c)) * 24)
	FROM (SELECT CASE WHEN julianday(NEW.conversation_created_at) IS NOT NULL
			THEN NEW.conversation_created_at END AS c)
	WHERE true
	ON CONFLICT(conversation_id) DO UPDATE
	SET event_id = excluded.event_id, week = excluded.week, low = excluded.low,
		high = excluded.high
	WHERE excluded.event_id < event_id;
END;

-- A close changed or removed (pruning, a user's SQL): its conversation's
-- row is made again from what is left.
CREATE TRIGGER conversation_closes_update
	AFTER UPDATE ON conversation_events
	WHEN (OLD.field = 'status' AND OLD.new_value = 'closed')
		OR (NEW.field = 'status' AND NEW.new_value = 'closed')
BEGIN
	DELETE FROM conversation_closes
	WHERE conversation_id IN (OLD.conversation_id, NEW.conversation_id);
	INSERT INTO conversation_closes(conversation_id, event_id, week, low, high)
	SELECT conversation_id, min(id), date(c, 'weekday 0', '-6 days'),
		max(0, (julianday(coalesce(after, c)) - julianday(c)) * 24),
		max(0, (julianday(seen_at) - julianday(c)) * 24)
	FROM (SELECT conversation_id, id, after, seen_at,
			CASE WHEN julianday(conversation_created_at) IS NOT NULL
				THEN conversation_created_at END AS c
		FROM conversation_events
		WHERE conversation_id IN (OLD.conversation_id, NEW.conversation_id)
			AND field = 'status' AND new_value = 'closed')
	GROUP BY conversation_id;
END;

CREATE TRIGGER conversation_closes_delete
	AFTER DELETE ON conversation_events
	WHEN OLD.field = 'status' AND OLD.new_value = 'closed'
BEGIN
	DELETE FROM conversation_closes
	WHERE conversation_id = OLD.conversation_id AND event_id = OLD.id;
	INSERT INTO conversation_closes(conversation_id, event_id, week, low, high)
	SELECT conversation_id, min(id), date(c, 'weekday 0', '-6 days'),
		max(0, (julianday(coalesce(after, c)) - julianday(c)) * 24),
		max(0, (julianday(seen_at) - julianday(c)) * 24)
	FROM (SELECT conversation_id, id, after, seen_at,
			CASE WHEN julianday(conversation_created_at) IS NOT NULL
				THEN conversation_created_at END AS c
		FROM conversation_events
		WHERE conversation_id = OLD.conversation_id
			AND field = 'status' AND new_value = 'closed')
	GROUP BY conversation_id
	ON CONFLICT(conversation_id) DO NOTHING;
END;

-- The closes already recorded, once.
INSERT INTO conversation_closes(conversation_id, event_id, week, low, high)
SELECT conversation_id, min(id), date(c, 'weekday 0', '-6 days'),
	max(0, (julianday(coalesce(after, c)) - julianday(c)) * 24),
	max(0, (julianday(seen_at) - julianday(c)) * 24)
FROM (SELECT conversation_id, id, after, seen_at,
		CASE WHEN julianday(conversation_created_at) IS NOT NULL
			THEN conversation_created_at END AS c
	FROM conversation_events
	WHERE field = 'status' AND new_value = 'closed')
GROUP BY conversation_id;

-- Nearest rank, as 0004's: the rank of the median is (n + 1) / 2, of the
-- 90th percentile (9 n + 9) / 10 (integer division).  Each week's closes
-- come out of an index in the order of their hours, so numbering them
-- needs no sort.  The true median lies between median_hours_low and
-- median_hours_high (likewise the 90th percentile): read 0004's comment.
DROP VIEW report_time_to_close;
CREATE VIEW report_time_to_close AS
WITH weeks AS MATERIALIZED (
	SELECT week, count(*) AS n, (count(*) + 1) / 2 AS median, (count(*) * 9 + 9) / 10 AS p90
	FROM conversation_closes INDEXED BY conversation_closes_low
	WHERE week IS NOT NULL
	GROUP BY week
), lows AS (
	SELECT week, low AS hours, row_number() OVER (PARTITION BY week ORDER BY low) AS r
	FROM conversation_closes INDEXED BY conversation_closes_low
	WHERE week IS NOT NULL
), highs AS (
	SELECT week, high AS hours, row_number() OVER (PARTITION BY week ORDER BY high) AS r
	FROM conversation_closes INDEXED BY conversation_closes_high
	WHERE week IS NOT NULL
), low AS (
	SELECT w.week, max(CASE WHEN x.r = w.median THEN x.hours END) AS median,
		max(CASE WHEN x.r = w.p90 THEN x.hours END) AS p90
	FROM lows AS x JOIN weeks AS w ON w.week = x.week
	WHERE x.r IN (w.median, w.p90)
	GROUP BY w.week
), high AS (
	SELECT w.week, max(CASE WHEN x.r = w.median THEN x.hours END) AS median,
		max(CASE WHEN x.r = w.p90 THEN x.hours END) AS p90
	FROM highs AS x JOIN weeks AS w ON w.week = x.week
	WHERE x.r IN (w.median, w.p90)
	GROUP BY w.week
)
SELECT w.week, w.n AS closed,
	round(l.median, 1) AS median_hours_low, round(h.median, 1) AS median_hours_high,
	round(l.p90, 1) AS p90_hours_low, round(h.p90, 1) AS p90_hours_high
FROM weeks AS w
JOIN low AS l ON l.week = w.week
JOIN high AS h ON h.week = w.week
ORDER BY w.week;
