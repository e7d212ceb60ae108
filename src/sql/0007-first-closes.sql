-- 0007: report_time_to_close in less time, with the same rows (SPEC 5; the
-- times are over ten walks changing 10 % of 1,000,000 conversations, 1.33
-- million events, 333,000 first closes).
--
-- 0006's view found each conversation's first close among every close
-- (0.17 s there), computed its hours (0.24 s) and sorted them twice, once
-- per bound (0.25 s each): 1.4 s.  Here the first closes are folded into a
-- table once per walk, at its end, with their week and hours computed, and
-- the view reads them in the order of an index on each bound: no sort.
--
-- Why at the walk's end: a table kept by a trigger on every new close
-- answered as fast but made every walk that closes conversations 20 %
-- slower (random inserts into its indexes with every committed page).  One
-- INSERT of a walk's closes, in one transaction, costs a fraction of that.
--
-- The mark 'history:closes_folded' in sync_state is the last event id
-- folded: the table holds the first close, among the events up to the mark,
-- of every conversation that has one there.  The events above the mark (a
-- walk running or killed before its end, the outbox, a person with sqlite3)
-- are folded at the next walk's end (history.c), and the view reads them
-- itself meanwhile: its rows never depend on when the fold ran.  Triggers
-- keep the table right when an event up to the mark is deleted (history-days,
-- a person) or changed (a person).

-- IF EXISTS: a mirror whose user_version was set back by hand migrates again.
DROP TRIGGER IF EXISTS conversation_first_closes_delete;
DROP TRIGGER IF EXISTS conversation_first_closes_update;
DROP VIEW IF EXISTS report_time_to_close;
DROP VIEW IF EXISTS conversation_closes;
DROP TABLE IF EXISTS conversation_first_closes;

-- Every close, with what the report counts of it: the week of its
-- conversation's creation as the Julian day number of its Monday (Julian
-- day 0 at noon was a Monday: the day number less its remainder by 7; NULL
-- when created_at is not a time), and the hours from created_at to the
-- close at its earliest (`after`; NULL when that is not a time) and at its
-- latest (`seen_at`), as 0004 and 0006 counted them.
CREATE VIEW conversation_closes AS
SELECT id, conversation_id,
	CAST(julianday(conversation_created_at) + 0.5 AS INTEGER)
		- CAST(julianday(conversation_created_at) + 0.5 AS INTEGER) % 7 AS week,
	max(0, (julianday(coalesce(after, conversation_created_at))
		- julianday(conversation_created_at)) * 24) AS low,
	max(0, (julianday(seen_at) - julianday(conversation_created_at)) * 24) AS high
FROM conversation_events
WHERE field = 'status' AND new_value = 'closed';

-- The first close of each conversation (the close of least id), among the
-- events up to the mark.  A conversation whose first close has no week is
-- kept (week NULL): a later close of it must not take its place.
CREATE TABLE conversation_first_closes (
	conversation_id TEXT PRIMARY KEY NOT NULL,
	event_id        INTEGER NOT NULL,           -- conversation_events.id
	week            INTEGER,                    -- Julian day number of the Monday
	low             REAL,                       -- hours to the close, earliest
	high            REAL                        -- and latest
) WITHOUT ROWID;

-- Filled from the events there, in conversation order (the rows stream out
-- of conversation_events_closed), then indexed.
INSERT INTO conversation_first_closes(conversation_id, event_id, week, low, high)
SELECT conversation_id, min(id), week, low, high
FROM conversation_closes
GROUP BY conversation_id;

-- The view walks these in order, per week: each bound ranked without a sort.
CREATE INDEX conversation_first_closes_low ON conversation_first_closes(week, low);
CREATE INDEX conversation_first_closes_high ON conversation_first_closes(week, high);

INSERT INTO sync_state(key, value)
SELECT 'history:closes_folded', m
FROM (SELECT max(id) AS m FROM conversation_events)
WHERE m IS NOT NULL
ON CONFLICT(key) DO UPDATE SET value = excluded.value;

-- The triggers fire on what a person does with sqlite3, and on pruning
-- (history-days); never on a walk's or the outbox's new events: a row
-- trigger on conversation_events would make SQLite store the result of each
-- INSERT ... SELECT of 0004's trigger in a temporary table first (1.4 s of
-- CPU a walk of 100,000 changes at 1,000,000).  New events get ids above
-- the last one, hence above the mark, as long as the mark is an event's id:
-- when the event at the mark is deleted or moved, the mark moves down to
-- the last event at or below it.  (An event inserted by hand with an id of
-- its own at or below the mark is not seen: README, History.)
--
-- Each trigger then takes the first close, among those up to the mark, of
-- the conversations the change touched (through conversation_events_closed).
-- Only the deletion of a conversation's folded close changes its row
-- (history-days deletes the oldest events first): its next close up to the
-- mark, if any, takes its place.
CREATE TRIGGER conversation_first_closes_delete
	AFTER DELETE ON conversation_events
	WHEN (OLD.field = 'status' AND OLD.new_value = 'closed'
		AND EXISTS (SELECT 1 FROM conversation_first_closes
			    WHERE conversation_id = OLD.conversation_id AND event_id = OLD.id))
		OR OLD.id = (SELECT CAST(value AS INTEGER) FROM sync_state
			     WHERE key = 'history:closes_folded')
BEGIN
	UPDATE sync_state
	SET value = coalesce((SELECT max(id) FROM conversation_events WHERE id < OLD.id), 0)
	WHERE key = 'history:closes_folded' AND CAST(value AS INTEGER) = OLD.id;
	DELETE FROM conversation_first_closes
	WHERE conversation_id = OLD.conversation_id AND event_id = OLD.id;
	INSERT OR IGNORE INTO conversation_first_closes(conversation_id, event_id, week, low, high)
	SELECT conversation_id, id, week, low, high
	FROM conversation_closes
	WHERE conversation_id = OLD.conversation_id
		AND id <= (SELECT CAST(value AS INTEGER) FROM sync_state
			   WHERE key = 'history:closes_folded')
	ORDER BY id
	LIMIT 1;
END;

-- dexsync never updates an event; a person may (of a close, into a close,
-- or moving one, or the mark, to another id).
CREATE TRIGGER conversation_first_closes_update
	AFTER UPDATE OF id, conversation_id, field, new_value, after, seen_at, conversation_created_at
	ON conversation_events
	WHEN (OLD.field = 'status' AND OLD.new_value = 'closed')
		OR (NEW.field = 'status' AND NEW.new_value = 'closed')
		OR OLD.id = (SELECT CAST(value AS INTEGER) FROM sync_state
			     WHERE key = 'history:closes_folded')
BEGIN
	UPDATE sync_state
	SET value = coalesce((SELECT max(id) FROM conversation_events WHERE id <= OLD.id), 0)
	WHERE key = 'history:closes_folded' AND CAST(value AS INTEGER) = OLD.id AND NEW.id <> OLD.id;
	DELETE FROM conversation_first_closes
	WHERE conversation_id IN (OLD.conversation_id, NEW.conversation_id);
	INSERT INTO conversation_first_closes(conversation_id, event_id, week, low, high)
	SELECT conversation_id, min(id), week, low, high
	FROM conversation_closes
	WHERE conversation_id IN (OLD.conversation_id, NEW.conversation_id)
		AND id <= (SELECT CAST(value AS INTEGER) FROM sync_state
			   WHERE key = 'history:closes_folded')
	GROUP BY conversation_id;
END;

-- Per week of creation: closed, and the hours at the median's rank
-- ((n + 1) / 2) and the 90th percentile's ((9 n + 9) / 10), nearest rank,
-- at each bound: the same rows as 0004's and 0006's views.
--
-- The first closes are the folded ones and, of the conversations with none
-- folded, the first of the events above the mark (the tail: none between
-- walks unless the outbox or a person wrote a close; a walk's own while it
-- runs).  The folded ones are numbered per week in the order of each
-- bound's index, without a sort (0.15 s a bound there; the whole view 0.5
-- s).  A week's rank k among its n = folded + t tail closes lies at most t
-- places before folded rank k: the value there is the (min(k, t + 1))-th
-- smallest of the folded ranks k - t .. k and the t tail closes (with no
-- tail, the one folded row at rank k).  The tail's events are read by id
-- from the mark (MATERIALIZED: not through conversation_events_closed,
-- which would read every close).
CREATE VIEW report_time_to_close AS
WITH unfolded AS MATERIALIZED (
	SELECT *
	FROM conversation_closes
	WHERE id > coalesce((SELECT CAST(value AS INTEGER) FROM sync_state
			     WHERE key = 'history:closes_folded'), 0)
), tail AS MATERIALIZED (
	SELECT week, low, high
	FROM (
		-- The other columns come from the row of min(id): the first close.
		SELECT conversation_id, min(id), week, low, high
		FROM unfolded
		GROUP BY conversation_id
	) AS c
	WHERE week IS NOT NULL
		AND NOT EXISTS (SELECT 1 FROM conversation_first_closes AS f
				WHERE f.conversation_id = c.conversation_id)
), weeks AS MATERIALIZED (
	SELECT week, sum(n) AS n, sum(t) AS t
	FROM (
		SELECT week, count(*) AS n, 0 AS t
		FROM conversation_first_closes
		WHERE week IS NOT NULL
		GROUP BY week
		UNION ALL
		SELECT week, count(*), count(*)
		FROM tail
		GROUP BY week
	)
	GROUP BY week
), ranks AS MATERIALIZED (
	-- q: 1 the median, 2 the 90th percentile.
	SELECT week, 1 AS q, (n + 1) / 2 AS k, t FROM weeks
	UNION ALL
	SELECT week, 2, (n * 9 + 9) / 10, t FROM weeks
), lows AS (
	SELECT week, low AS hours, row_number() OVER (PARTITION BY week ORDER BY low) AS r
	FROM conversation_first_closes
	WHERE week IS NOT NULL
), highs AS (
	SELECT week, high AS hours, row_number() OVER (PARTITION BY week ORDER BY high) AS r
	FROM conversation_first_closes
	WHERE week IS NOT NULL
), candidates AS (
	-- b: 0 the low bound, 1 the high one.  CROSS JOIN: the numbered rows
	-- stream past the few ranks, rather than being stored and indexed.
	SELECT x.week, 0 AS b, r.q, r.k, r.t, x.hours
	FROM lows AS x
	CROSS JOIN ranks AS r
	WHERE r.week = x.week AND x.r BETWEEN r.k - r.t AND r.k
	UNION ALL
	SELECT x.week, 1, r.q, r.k, r.t, x.hours
	FROM highs AS x
	CROSS JOIN ranks AS r
	WHERE r.week = x.week AND x.r BETWEEN r.k - r.t AND r.k
	UNION ALL
	SELECT r.week, b.b, r.q, r.k, r.t, CASE b.b WHEN 0 THEN x.low ELSE x.high END
	FROM ranks AS r
	JOIN tail AS x ON x.week = r.week
	JOIN (SELECT 0 AS b UNION ALL SELECT 1) AS b
), picked AS (
	SELECT week, b, q, hours,
		row_number() OVER (PARTITION BY week, b, q ORDER BY hours) = min(k, t + 1) AS here
	FROM candidates
)
SELECT date(w.week) AS week, w.n AS closed,
	round(max(CASE WHEN p.b = 0 AND p.q = 1 THEN p.hours END), 1) AS median_hours_low,
	round(max(CASE WHEN p.b = 1 AND p.q = 1 THEN p.hours END), 1) AS median_hours_high,
	round(max(CASE WHEN p.b = 0 AND p.q = 2 THEN p.hours END), 1) AS p90_hours_low,
	round(max(CASE WHEN p.b = 1 AND p.q = 2 THEN p.hours END), 1) AS p90_hours_high
FROM weeks AS w
JOIN picked AS p ON p.week = w.week AND p.here
GROUP BY w.week
ORDER BY w.week;
