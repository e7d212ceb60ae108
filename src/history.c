/* history.c - dexsync history CONVERSATION, and history-days
 *
 * The events themselves are written by the schema's trigger while a walk
 * runs (src/sql/0004-history.sql) and by the outbox (outbox.c); this file
 * reads them back, folds the first closes for report_time_to_close and
 * deletes the old ones. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "db.h"
#include "escape.h"
#include "history.h"
#include "log.h"

/* One row per thing seen, in time order: the first sight, then events and
 * messages.  A listed message has no time of its own: it was listed when
 * the walk saw it become the last message (its event), or at the first
 * sight.  A message sent from the outbox has the server's timestamp.  At
 * the same time, events come before the messages they list. */
static const char timeline_sql[] =
	"WITH c AS (\n"
	"	SELECT first_seen_at, status, subject FROM conversations WHERE id = ?1\n"
	"), t(at, after, k, seq, event, old_value, new_value, text, origin, run_id) AS (\n"
	"	SELECT first_seen_at, NULL, 0, 0, 'first seen', NULL, status, subject, NULL, NULL\n"
	"	FROM c\n"
	"	UNION ALL\n"
	"	SELECT seen_at, after, 1, id, field, old_value, new_value, NULL, origin, run_id\n"
	"	FROM conversation_events\n"
	"	WHERE conversation_id = ?1\n"
	"	UNION ALL\n"
	"	SELECT coalesce(CASE m.origin WHEN 'outbox' THEN m.timestamp END,\n"
	"			(SELECT min(e.seen_at) FROM conversation_events AS e\n"
	"			 WHERE e.conversation_id = ?1 AND e.field = 'last_message'\n"
	"				AND e.new_value = m.id AND e.origin = 'walk'),\n"
	"			(SELECT first_seen_at FROM c)),\n"
	"		NULL, 2, m.rowid,\n"
	"		CASE m.origin WHEN 'outbox' THEN 'message sent' ELSE 'message listed' END,\n"
	"		NULL, m.id, m.text, m.origin, NULL\n"
	"	FROM messages AS m\n"
	"	WHERE m.conversation_id = ?1\n"
	")\n"
	"SELECT at, after, event, old_value, new_value, text, origin, run_id\n"
	"FROM t\n"
	"ORDER BY at, k, seq";

static const char known_sql[] =
	"SELECT EXISTS (SELECT 1 FROM conversations WHERE id = ?1)\n"
	"	OR EXISTS (SELECT 1 FROM conversation_events WHERE conversation_id = ?1)\n"
	"	OR EXISTS (SELECT 1 FROM messages WHERE conversation_id = ?1)";

/* 1 when the mirror knows conversation id, 0 when not, -1 on error. */
static int known(sqlite3 *db, const char *id, size_t len)
{
	sqlite3_stmt *st = NULL;
	int rc = -1;

	if (sqlite3_prepare_v2(db, known_sql, -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text64(st, 1, id, len, SQLITE_STATIC, SQLITE_UTF8);
		if (sqlite3_step(st) == SQLITE_ROW)
			rc = sqlite3_column_int(st, 0) != 0;
	}
	if (rc < 0)
		log_err("history: %s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	return rc;
}

int history_print(sqlite3 *db, const char *id, size_t len, enum report_format fmt, FILE *out)
{
	int rc = known(db, id, len);

	if (rc == 0) {
		char *safe = escape_text(id, len);

		log_err("history: conversation '%.80s' is not in the mirror", safe ? safe : "?");
		free(safe);
	}
	if (rc <= 0)
		return -1;
	return report_print_sql(db, "history", timeline_sql, id, len, fmt, out);
}

enum dx_result history_fold_closes(sqlite3 *db, long *folded)
{
	/* The events above the mark, read by id (MATERIALIZED: not through
	 * conversation_events_closed, which holds every close).  OR IGNORE: a
	 * conversation with a folded close has its first one.  Inserted in the
	 * order of the low index, so that each of its pages is written once and
	 * the high index's a week at a time: in conversation order, the random
	 * inserts into both indexes spilled pages from the small page cache
	 * over and over (0.56-0.71 s at the end of a walk with 33,000 first
	 * closes at 1,000,000; 0.49-0.52 s so). */
	static const char fold_sql[] =
		"WITH unfolded AS MATERIALIZED (\n"
		"	SELECT *\n"
		"	FROM conversation_closes\n"
		"	WHERE id > coalesce((SELECT CAST(value AS INTEGER) FROM sync_state\n"
		"			     WHERE key = 'history:closes_folded'), 0)\n"
		")\n"
		"INSERT OR IGNORE INTO conversation_first_closes(conversation_id, event_id, week, low, high)\n"
		"SELECT conversation_id, min(id), week, low, high\n"
		"FROM unfolded\n"
		"GROUP BY conversation_id\n"
		"ORDER BY week, low";
	static const char mark_sql[] =
		"INSERT INTO sync_state(key, value)\n"
		"SELECT 'history:closes_folded', m\n"
		"FROM (SELECT max(id) AS m FROM conversation_events)\n"
		"WHERE m IS NOT NULL\n"
		"ON CONFLICT(key) DO UPDATE SET value = excluded.value\n"
		"WHERE CAST(value AS INTEGER) IS NOT CAST(excluded.value AS INTEGER)";

	long n;

	*folded = 0;
	if (db_begin(db, "history") != DX_OK)
		return DX_DB;
	if (db_exec(db, fold_sql) == DX_OK) {
		n = sqlite3_changes(db);
		if (db_exec(db, mark_sql) == DX_OK && db_commit(db, "history") == DX_OK) {
			*folded = n;
			return DX_OK;
		}
	}
	db_rollback(db);
	return DX_DB;
}

enum dx_result history_prune(sqlite3 *db, long days, long *deleted)
{
	static const char sql[] =
		"DELETE FROM conversation_events\n"
		"WHERE id IN (SELECT id FROM conversation_events ORDER BY id LIMIT ?2)\n"
		"	AND seen_at < strftime('%Y-%m-%dT%H:%M:%SZ', 'now', ?1)";
	sqlite3_stmt *st = NULL;
	char age[32];
	int n;

	*deleted = 0;
	snprintf(age, sizeof(age), "-%ld days", days);
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		goto fail;
	sqlite3_bind_text(st, 1, age, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, HISTORY_PRUNE_BATCH);
	/* Events are appended in time order, so the old ones come first: a
	 * batch that deletes less than all it looked at has reached the new
	 * ones.  Each batch is its own transaction. */
	do {
		if (sqlite3_step(st) != SQLITE_DONE)
			goto fail;
		n = sqlite3_changes(db);
		*deleted += n;
		sqlite3_reset(st);
	} while (n == HISTORY_PRUNE_BATCH);
	sqlite3_finalize(st);
	return DX_OK;
fail:
	db_error_in(db, "pruning the history");
	sqlite3_finalize(st);
	return DX_DB;
}
