-- 0002: the reporting views (a public interface, like the tables) and the
-- indexes behind them.  Gone conversations are left out everywhere.

ALTER TABLE outbox ADD COLUMN failed_at TEXT;      -- when it became 'failed'

-- by-status, backlog: a covering range per status.
CREATE INDEX conversations_live_status
	ON conversations(status, created_at)
	WHERE gone_at IS NULL;

-- daily: groups stream out of the index in order, no sort.
CREATE INDEX conversations_live_day
	ON conversations(substr(created_at, 1, 10), status)
	WHERE gone_at IS NULL;

CREATE INDEX outbox_state ON outbox(state, kind);

DROP VIEW report_by_status;
CREATE VIEW report_by_status AS
SELECT status, count(*) AS conversations
FROM conversations
WHERE gone_at IS NULL
GROUP BY status
ORDER BY status;

DROP VIEW report_daily;
CREATE VIEW report_daily AS
SELECT substr(created_at, 1, 10) AS day, status, count(*) AS conversations
FROM conversations
WHERE gone_at IS NULL
GROUP BY substr(created_at, 1, 10), status
ORDER BY substr(created_at, 1, 10), status;

-- Open and snoozed conversations by age; one pass over the status index.
-- A conversation without a readable created_at has no age and is left out.
CREATE VIEW report_backlog AS
WITH buckets(position, age) AS (
	VALUES (1, '<1 d'), (2, '1-3 d'), (3, '3-7 d'), (4, '7-30 d'), (5, '>30 d')
), aged AS (
	SELECT status, julianday('now') - julianday(created_at) AS days
	FROM conversations
	WHERE gone_at IS NULL AND status IN ('open', 'snoozed')
), counted AS (
	SELECT CASE WHEN days < 1 THEN 1 WHEN days < 3 THEN 2 WHEN days < 7 THEN 3
		    WHEN days < 30 THEN 4 ELSE 5 END AS position,
		sum(status = 'open') AS open, sum(status = 'snoozed') AS snoozed
	FROM aged
	WHERE days IS NOT NULL
	GROUP BY 1
)
SELECT b.age, coalesce(c.open, 0) AS open, coalesce(c.snoozed, 0) AS snoozed
FROM buckets b
LEFT JOIN counted c USING (position)
ORDER BY b.position;

DROP VIEW report_outbox;
CREATE VIEW report_outbox AS
SELECT kind, state, count(*) AS items,
	CAST(max(CASE WHEN state = 'pending'
		THEN unixepoch('now') - unixepoch(created_at) END) AS INTEGER) AS oldest_pending_seconds,
	sum(state = 'failed' AND failed_at >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-1 day'))
		AS failed_last_24h
FROM outbox
GROUP BY kind, state
ORDER BY kind, state;

DROP VIEW report_sync_history;
CREATE VIEW report_sync_history AS
SELECT id, started_at,
	CAST(round((julianday(coalesce(finished_at, started_at)) - julianday(started_at)) * 86400)
		AS INTEGER) AS seconds,
	outcome, pages, seen, inserted, changed, unchanged, gone, error
FROM sync_runs
ORDER BY id DESC;

-- Users by any custom attribute: WHERE attribute = 'plan'.
CREATE VIEW report_user_attribute AS
SELECT a.key AS attribute, a.value AS value, count(*) AS users
FROM users, json_each(users.custom_attributes) AS a
WHERE json_valid(users.custom_attributes)
GROUP BY a.key, a.value
ORDER BY a.key, users DESC, a.value;
