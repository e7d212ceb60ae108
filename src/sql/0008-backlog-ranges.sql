-- 0008: report_backlog and report_backlog_daily in less time, with the same
-- rows (SPEC 5; issue 17: under 1 s warm at 10,000,000 conversations).
--
-- Both read every live open or snoozed conversation and computed something
-- of each: report_backlog its age, julianday('now') - julianday(created_at),
-- report_backlog_daily's live part its day, substr(created_at, 1, 10),
-- grouped through a sort.  Here both count ranges of
-- conversations_live_status (status, created_at) instead: the entries of a
-- range are counted, not read into expressions.  At 10,000,000 (warm, one
-- core, two mirrors, four runs each): report_backlog 4.6-6.8 s -> 0.45-0.50
-- s, report_backlog_daily 3.0-4.1 s -> 0.45-0.65 s (history since that
-- day; since four months before, 3.0-5.6 s -> 0.45-0.83 s).
--
-- A range of created_at text stands for a range of times only when the
-- text is a valid time in the form dexsync writes, YYYY-MM-DDTHH:MM:SSZ
-- (the fixed width sorts them as times).  The others (another form, an
-- offset, fractions of a second, a date that does not exist, a blob) are
-- "odd": a small partial index lists the live open and snoozed ones, and
-- the view counts each of them where 0002's expression puts it, rather
-- than where its text sorts.  The shape is tested before strftime() reads
-- the text: strftime() of 'now' in an index is an error.  The index is
-- deferred at an initial mirror like the others (src/db.c): its build reads
-- the table once, 0.8-1.1 s at 1,000,000; this migration 15 s at
-- 10,000,000.  A walk that writes a row evaluates its WHERE; an unchanged
-- walk writes none.  gone_at leads its columns so that the planner, which
-- has no statistics, takes it over conversations_live_status for them.

CREATE INDEX IF NOT EXISTS conversations_odd_created
	ON conversations(gone_at, status, created_at)
	WHERE gone_at IS NULL AND status IN ('open', 'snoozed') AND created_at IS NOT NULL
		AND CASE WHEN created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]Z'
			THEN created_at IS NOT strftime('%Y-%m-%dT%H:%M:%SZ', created_at) ELSE 1 END;

-- Open and snoozed conversations by age (0002's rows).  Around each bucket
-- edge (now less 1, 3, 7 and 30 days) a window of 2 s each way is read row
-- by row with 0002's expression, so that the text ranges between the
-- windows hold only ages well inside one bucket.  A row's class is where
-- its text sorts: 1 to 5 a range, 0 a window; an odd row outside the
-- windows is taken out of its class's count and put in its bucket.
DROP VIEW IF EXISTS report_backlog;
CREATE VIEW report_backlog AS
WITH buckets(position, age) AS (
	VALUES (1, '<1 d'), (2, '1-3 d'), (3, '3-7 d'), (4, '7-30 d'), (5, '>30 d')
), now AS MATERIALIZED (
	SELECT julianday('now') AS jnow
), edges AS MATERIALIZED (
	SELECT jnow,
		strftime('%Y-%m-%dT%H:%M:%SZ', jnow - 1 - 2 / 86400.0) AS lo1,
		strftime('%Y-%m-%dT%H:%M:%SZ', jnow - 1 + 2 / 86400.0) AS hi1,
		strftime('%Y-%m-%dT%H:%M:%SZ', jnow - 3 - 2 / 86400.0) AS lo3,
		strftime('%Y-%m-%dT%H:%M:%SZ', jnow - 3 + 2 / 86400.0) AS hi3,
		strftime('%Y-%m-%dT%H:%M:%SZ', jnow - 7 - 2 / 86400.0) AS lo7,
		strftime('%Y-%m-%dT%H:%M:%SZ', jnow - 7 + 2 / 86400.0) AS hi7,
		strftime('%Y-%m-%dT%H:%M:%SZ', jnow - 30 - 2 / 86400.0) AS lo30,
		strftime('%Y-%m-%dT%H:%M:%SZ', jnow - 30 + 2 / 86400.0) AS hi30
	FROM now
), flag AS MATERIALIZED (
	-- 1 when both indexes are there; else (an initial mirror running,
	-- an index dropped by hand) 0002's one pass over the table, not a
	-- scan of it per range.
	SELECT count(*) = 2 AS ranges
	FROM sqlite_schema
	WHERE type = 'index' AND tbl_name = 'conversations'
		AND name IN ('conversations_live_status', 'conversations_odd_created')
), statuses(status) AS (
	SELECT 'open' FROM flag WHERE flag.ranges
	UNION ALL
	SELECT 'snoozed' FROM flag WHERE flag.ranges
), ranged(status, position, n) AS (
	SELECT s.status, 1, (SELECT count(*) FROM conversations
			     WHERE status = s.status AND gone_at IS NULL
				AND created_at > (SELECT hi1 FROM edges))
	FROM statuses AS s
	UNION ALL
	SELECT s.status, 2, (SELECT count(*) FROM conversations
			     WHERE status = s.status AND gone_at IS NULL
				AND created_at > (SELECT hi3 FROM edges) AND created_at < (SELECT lo1 FROM edges))
	FROM statuses AS s
	UNION ALL
	SELECT s.status, 3, (SELECT count(*) FROM conversations
			     WHERE status = s.status AND gone_at IS NULL
				AND created_at > (SELECT hi7 FROM edges) AND created_at < (SELECT lo3 FROM edges))
	FROM statuses AS s
	UNION ALL
	SELECT s.status, 4, (SELECT count(*) FROM conversations
			     WHERE status = s.status AND gone_at IS NULL
				AND created_at > (SELECT hi30 FROM edges) AND created_at < (SELECT lo7 FROM edges))
	FROM statuses AS s
	UNION ALL
	SELECT s.status, 5, (SELECT count(*) FROM conversations
			     WHERE status = s.status AND gone_at IS NULL
				AND created_at < (SELECT lo30 FROM edges))
	FROM statuses AS s
), windowed(status, created_at) AS (
	SELECT status, created_at FROM flag CROSS JOIN conversations
	WHERE flag.ranges AND status IN ('open', 'snoozed') AND gone_at IS NULL
		AND created_at BETWEEN (SELECT lo1 FROM edges) AND (SELECT hi1 FROM edges)
	UNION ALL
	SELECT status, created_at FROM flag CROSS JOIN conversations
	WHERE flag.ranges AND status IN ('open', 'snoozed') AND gone_at IS NULL
		AND created_at BETWEEN (SELECT lo3 FROM edges) AND (SELECT hi3 FROM edges)
	UNION ALL
	SELECT status, created_at FROM flag CROSS JOIN conversations
	WHERE flag.ranges AND status IN ('open', 'snoozed') AND gone_at IS NULL
		AND created_at BETWEEN (SELECT lo7 FROM edges) AND (SELECT hi7 FROM edges)
	UNION ALL
	SELECT status, created_at FROM flag CROSS JOIN conversations
	WHERE flag.ranges AND status IN ('open', 'snoozed') AND gone_at IS NULL
		AND created_at BETWEEN (SELECT lo30 FROM edges) AND (SELECT hi30 FROM edges)
), odd(status, class, created_at) AS (
	SELECT c.status,
		CASE WHEN c.created_at > e.hi1 THEN 1 WHEN c.created_at >= e.lo1 THEN 0
		     WHEN c.created_at > e.hi3 THEN 2 WHEN c.created_at >= e.lo3 THEN 0
		     WHEN c.created_at > e.hi7 THEN 3 WHEN c.created_at >= e.lo7 THEN 0
		     WHEN c.created_at > e.hi30 THEN 4 WHEN c.created_at >= e.lo30 THEN 0
		     ELSE 5 END,
		c.created_at
	FROM flag CROSS JOIN edges AS e CROSS JOIN conversations AS c
	WHERE flag.ranges AND c.gone_at IS NULL AND c.status IN ('open', 'snoozed') AND c.created_at IS NOT NULL
		AND CASE WHEN c.created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]Z'
			THEN c.created_at IS NOT strftime('%Y-%m-%dT%H:%M:%SZ', c.created_at) ELSE 1 END
), exact(status, sign, created_at) AS (
	-- Counted by 0002's expression: +1 in their bucket.
	SELECT status, 1, created_at FROM windowed
	UNION ALL
	SELECT status, 1, created_at FROM odd WHERE class <> 0
	UNION ALL
	-- Without the indexes: every row.
	SELECT status, 1, created_at FROM flag CROSS JOIN conversations
	WHERE NOT flag.ranges AND gone_at IS NULL AND status IN ('open', 'snoozed')
), aged AS (
	SELECT status, sign, (SELECT jnow FROM edges) - julianday(created_at) AS days
	FROM exact
), moved(status, position, n) AS (
	SELECT status, CASE WHEN days < 1 THEN 1 WHEN days < 3 THEN 2 WHEN days < 7 THEN 3
		    WHEN days < 30 THEN 4 ELSE 5 END, sign
	FROM aged
	WHERE days IS NOT NULL
	UNION ALL
	-- And -1 in the class their text counted them in.
	SELECT status, class, -1 FROM odd WHERE class <> 0
), counted AS (
	SELECT position, sum(CASE WHEN status = 'open' THEN n ELSE 0 END) AS open,
		sum(CASE WHEN status = 'snoozed' THEN n ELSE 0 END) AS snoozed
	FROM (SELECT * FROM ranged UNION ALL SELECT * FROM moved)
	GROUP BY position
)
SELECT b.age, coalesce(c.open, 0) AS open, coalesce(c.snoozed, 0) AS snoozed
FROM buckets b
LEFT JOIN counted c USING (position)
ORDER BY b.position;

-- report_backlog_daily (0006's rows).  Its live part, the live open and
-- snoozed conversations created on each day since the history began and
-- before it, counts ranges too: for a day D (10 characters, as date()
-- writes it), substr(created_at, 1, 10) = D holds for exactly the text at
-- or after D and before D with its last character the next one; and
-- substr(created_at, 1, 10) < D for exactly the text before D.  No odd
-- text here: these hold for any text.  A value that is not text (a blob;
-- numbers become text in this TEXT column) is never equal to a day; one
-- sorting before all text, a number, is still compared as 0006 did.
-- Without conversations_live_status, or with a history:since that is not
-- such a day (set by hand), the view reads the table once, as 0006 did.
DROP VIEW IF EXISTS report_backlog_daily;
CREATE VIEW report_backlog_daily AS
WITH RECURSIVE since(day) AS (
	SELECT coalesce((SELECT substr(value, 1, 10) FROM sync_state WHERE key = 'history:since'),
			date('now'))
), days(day) AS (
	SELECT day FROM since
	UNION ALL
	SELECT date(day, '+1 day') FROM days WHERE day < date('now')
), mode AS MATERIALIZED (
	-- 1: ranges; 0 (conversations_live_status missing: an initial mirror
	-- running, or dropped by hand; or since not a day) 0006's one pass.
	SELECT EXISTS (SELECT 1 FROM sqlite_schema
		       WHERE type = 'index' AND tbl_name = 'conversations'
			AND name = 'conversations_live_status')
		AND (SELECT day IS date(day) FROM since) AS ranges
), live AS (
	SELECT d.day,
		(SELECT count(*) FROM conversations
		 WHERE status = 'open' AND gone_at IS NULL AND created_at >= d.day
			AND created_at < substr(d.day, 1, 9) || char(unicode(substr(d.day, 10)) + 1)) AS open,
		(SELECT count(*) FROM conversations
		 WHERE status = 'snoozed' AND gone_at IS NULL AND created_at >= d.day
			AND created_at < substr(d.day, 1, 9) || char(unicode(substr(d.day, 10)) + 1)) AS snoozed
	FROM mode CROSS JOIN days AS d
	WHERE mode.ranges
	UNION ALL
	SELECT substr(created_at, 1, 10), sum(status = 'open'), sum(status = 'snoozed')
	FROM mode CROSS JOIN conversations
	WHERE NOT mode.ranges AND gone_at IS NULL AND status IN ('open', 'snoozed')
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
	-- With ranges: the text before since, and what sorts before text.
	SELECT CASE WHEN (SELECT ranges FROM mode) THEN
			(SELECT count(*) FROM conversations
			 WHERE status = 'open' AND gone_at IS NULL
				AND created_at >= '' AND created_at < (SELECT day FROM since))
			+ (SELECT count(*) FROM conversations
			   WHERE status = 'open' AND gone_at IS NULL
				AND created_at < '' AND substr(created_at, 1, 10) < (SELECT day FROM since))
		ELSE
			(SELECT sum(open) FROM live WHERE day < (SELECT day FROM since))
		END AS open,
		CASE WHEN (SELECT ranges FROM mode) THEN
			(SELECT count(*) FROM conversations
			 WHERE status = 'snoozed' AND gone_at IS NULL
				AND created_at >= '' AND created_at < (SELECT day FROM since))
			+ (SELECT count(*) FROM conversations
			   WHERE status = 'snoozed' AND gone_at IS NULL
				AND created_at < '' AND substr(created_at, 1, 10) < (SELECT day FROM since))
		ELSE
			(SELECT sum(snoozed) FROM live WHERE day < (SELECT day FROM since))
		END AS snoozed
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
