/* status.c - dexsync status */
#include "config.h"

#include <string.h>

#include "log.h"
#include "status.h"

/* The last walk: when, how, counts.  Also its age in seconds. */
static const char last_walk_sql[] =
	"SELECT started_at, outcome, pages, seen, inserted, changed, gone,\n"
	"	CAST(round((julianday(coalesce(finished_at, started_at)) - julianday(started_at)) * 86400)\n"
	"		AS INTEGER),\n"
	"	unixepoch('now') - unixepoch(coalesce(finished_at, started_at)), coalesce(error, '')\n"
	"FROM sync_runs\n"
	"ORDER BY id DESC\n"
	"LIMIT 1";

static const char counts_sql[] =
	"SELECT (SELECT count(*) FROM conversations WHERE gone_at IS NULL),\n"
	"	(SELECT count(*) FROM conversations WHERE gone_at IS NOT NULL),\n"
	"	(SELECT count(*) FROM users), (SELECT count(*) FROM messages)";

static const char outbox_sql[] =
	"SELECT s.state, (SELECT count(*) FROM outbox WHERE state = s.state)\n"
	"FROM (SELECT 'pending' AS state UNION ALL SELECT 'sending' UNION ALL SELECT 'sent'\n"
	"	UNION ALL SELECT 'failed' UNION ALL SELECT 'cancelled') AS s";

/* The oldest pending item's age, and how far the most overdue one is past
 * its time (next attempt, or queued/retried when it has none). */
static const char pending_sql[] =
	"SELECT max(unixepoch('now') - unixepoch(created_at)),\n"
	"	max(unixepoch('now') - unixepoch(coalesce(next_attempt_at, retried_at, created_at)))\n"
	"FROM outbox\n"
	"WHERE state IN ('pending', 'sending')";

static int query(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
	if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK) {
		log_err("database %s: %s", sqlite3_db_filename(db, "main"), sqlite3_errmsg(db));
		return -1;
	}
	return 0;
}

static const char *col(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	return t ? (const char *)t : "";
}

int status_run(sqlite3 *db, const struct conf *c, FILE *out)
{
	sqlite3_stmt *st = NULL;
	char problem[256] = "";
	long long overdue = -1;

	if (query(db, last_walk_sql, &st) < 0)
		return 1;
	if (sqlite3_step(st) == SQLITE_ROW) {
		long long age = sqlite3_column_int64(st, 8);

		fprintf(out, "last walk:     %s, %s, %lld s: %lld pages, %lld seen, %lld inserted, "
			"%lld changed, %lld gone%s%s\n", col(st, 0), col(st, 1),
			sqlite3_column_int64(st, 7), sqlite3_column_int64(st, 2),
			sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 4),
			sqlite3_column_int64(st, 5), sqlite3_column_int64(st, 6),
			*col(st, 9) ? ": " : "", col(st, 9));
		if (!strcmp(col(st, 1), "failed"))
			snprintf(problem, sizeof(problem), "the last walk failed");
		else if (age > 3 * c->sync_interval)
			snprintf(problem, sizeof(problem), "the last walk ended %lld s ago, over 3 intervals of %ld s",
				 age, c->sync_interval);
	} else {
		fprintf(out, "last walk:     none yet\n");
		snprintf(problem, sizeof(problem), "no walk has run yet");
	}
	sqlite3_finalize(st);

	if (query(db, counts_sql, &st) < 0)
		return 1;
	if (sqlite3_step(st) == SQLITE_ROW)
		fprintf(out, "conversations: %lld live, %lld gone\nusers:         %lld\nmessages:      %lld\n",
			sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
			sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3));
	sqlite3_finalize(st);

	if (query(db, outbox_sql, &st) < 0)
		return 1;
	fputs("outbox:        ", out);
	for (int i = 0; sqlite3_step(st) == SQLITE_ROW; i++)
		fprintf(out, "%s%lld %s", i ? ", " : "", sqlite3_column_int64(st, 1), col(st, 0));
	sqlite3_finalize(st);
	if (query(db, pending_sql, &st) < 0)
		return 1;
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
		overdue = sqlite3_column_int64(st, 1);
		fprintf(out, "; oldest pending %lld s", sqlite3_column_int64(st, 0));
	}
	fputc('\n', out);
	sqlite3_finalize(st);
	if (!*problem && overdue > c->max_backoff + c->poll_interval)
		snprintf(problem, sizeof(problem), "an outbox item is %lld s past its time "
			 "(max-backoff + poll-interval is %ld s): is dexsyncd running?",
			 overdue, c->max_backoff + c->poll_interval);
	fprintf(out, "health:        %s\n", *problem ? problem : "ok");
	return *problem ? 2 : 0;
}
