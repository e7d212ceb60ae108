/* status.c - dexsync status */
#include "config.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "escape.h"
#include "kept.h"
#include "lock.h"
#include "log.h"
#include "status.h"

/* An item sending for longer than this was most likely left by a daemon
 * that died (or hangs) in the middle of a request. */
#define SENDING_TOO_LONG 600

/* The last walk: when, how, counts.  Also its age in seconds. */
static const char last_walk_sql[] =
	"SELECT started_at, outcome, pages, seen, inserted, changed, gone,\n"
	"	CAST(round((julianday(coalesce(finished_at, started_at)) - julianday(started_at)) * 86400)\n"
	"		AS INTEGER),\n"
	"	unixepoch('now') - unixepoch(coalesce(finished_at, started_at)), coalesce(error, '')\n"
	"FROM sync_runs\n"
	"ORDER BY id DESC\n"
	"LIMIT 1";

/* The live conversations are all of them less the gone ones: a count(*)
 * without a WHERE counts the pages of the smallest index (the ids'), the
 * gone ones are few (conversations_gone); counting the live ones themselves
 * read an entry each, most of the time status took at 10,000,000. */
static const char counts_sql[] =
	"SELECT (SELECT count(*) FROM conversations) - gone, gone,\n"
	"	(SELECT count(*) FROM users), (SELECT count(*) FROM messages)\n"
	"FROM (SELECT count(*) AS gone FROM conversations WHERE gone_at IS NOT NULL)";

static const char outbox_sql[] =
	"SELECT s.state, (SELECT count(*) FROM outbox WHERE state = s.state)\n"
	"FROM (SELECT 'pending' AS state UNION ALL SELECT 'sending' UNION ALL SELECT 'sent'\n"
	"	UNION ALL SELECT 'failed' UNION ALL SELECT 'cancelled') AS s";

/* The oldest pending item's age, and how far the most overdue one is past
 * its time.  Only the head of a target's queue has a next_attempt_at (the
 * items behind it and a message waiting for its conversation item have
 * none), so an item with a time is due at that time. */
static const char pending_sql[] =
	"SELECT (SELECT max(unixepoch('now') - unixepoch(created_at))\n"
	"	 FROM outbox WHERE state = 'pending'),\n"
	"	(SELECT unixepoch('now') - unixepoch(min(next_attempt_at))\n"
	"	 FROM outbox WHERE state = 'pending' AND next_attempt_at IS NOT NULL)";

/* Items in 'sending': how many, and the one sending longest (its id and
 * seconds; NULL seconds when its sending_at is missing, not a time or in
 * the future: set by hand or by a dexsync before 0.2, and listed first). */
static const char sending_sql[] =
	"SELECT (SELECT count(*) FROM outbox WHERE state = 'sending'), id, age\n"
	"FROM (SELECT id, sending_at, CASE WHEN unixepoch(sending_at) <= unixepoch('now')\n"
	"		THEN unixepoch('now') - unixepoch(sending_at) END AS age\n"
	"      FROM outbox WHERE state = 'sending')\n"
	"ORDER BY age IS NOT NULL, age DESC, id\n"
	"LIMIT 1";

/* What is wrong, worst first: exit 2 problems, then exit 1 ones. */
struct health {
	char *text; /* "; "-separated, malloc'd */
	int level;  /* the exit status: 0, 1 or 2 */
};

static void problem(struct health *h, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Add a problem of exit status level; those of level 2 go first. */
static void problem(struct health *h, int level, const char *fmt, ...)
{
	char *one = NULL, *all = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&one, fmt, ap);
	va_end(ap);
	if (n < 0)
		one = NULL;
	if (one && h->text)
		n = level > h->level ? asprintf(&all, "%s; %s", one, h->text) :
				       asprintf(&all, "%s; %s", h->text, one);
	else if (one)
		n = asprintf(&all, "%s", one);
	if (n < 0 || !one)
		all = NULL;
	if (all) {
		free(h->text);
		h->text = all;
	}
	free(one);
	if (level > h->level)
		h->level = level;
}

static int query(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
	if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK) {
		db_error(db);
		return -1;
	}
	return 0;
}

/* Column i as text, "" for NULL. */
static const char *col(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	return t ? (const char *)t : "";
}

/* Column i as text from the database (a row anyone may have written),
 * escaped: "label<escaped column>tail" on out. */
static void put_col(FILE *out, const char *label, sqlite3_stmt *st, int i, const char *tail)
{
	fputs(label, out);
	escape_fputs(col(st, i), out);
	fputs(tail, out);
}

/* The last walk's line; a failed or stale walk is a problem, and so is
 * one still 'running' when no dexsyncd runs: its daemon died, or could not
 * record its end (the next walk marks it interrupted).  daemon is
 * lock_holder's answer. */
static int show_last_walk(sqlite3 *db, const struct conf *c, long daemon, FILE *out, struct health *h)
{
	sqlite3_stmt *st = NULL;

	if (query(db, last_walk_sql, &st) < 0)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW) {
		long long age = sqlite3_column_int64(st, 8);
		int orphan = daemon == -1 && !strcmp(col(st, 1), "running");

		put_col(out, "last walk:     ", st, 0, ", ");
		if (orphan)
			fputs("not ended (recorded as running, but no dexsyncd runs)", out);
		else
			put_col(out, "", st, 1, "");
		fprintf(out, ", %lld s: %lld pages, %lld seen, %lld inserted, %lld changed, %lld gone",
			sqlite3_column_int64(st, 7), sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3),
			sqlite3_column_int64(st, 4), sqlite3_column_int64(st, 5),
			sqlite3_column_int64(st, 6));
		put_col(out, *col(st, 9) ? ": " : "", st, 9, "\n");
		if (!strcmp(col(st, 1), "failed"))
			problem(h, 2, "the last walk failed");
		else if (orphan)
			problem(h, 2,
				"the last walk did not end: its dexsyncd stopped before it could record the end");
		else if (age > 3 * c->sync_interval)
			problem(h, 2, "the last walk ended %lld s ago, over 3 intervals of %ld s", age,
				c->sync_interval);
	} else {
		fprintf(out, "last walk:     none yet\n");
		problem(h, 2, "no walk has run yet");
	}
	sqlite3_finalize(st);
	return 0;
}

/* The outbox by state, the oldest pending item, the items in sending;
 * an overdue item (exit 2) and one sending too long (exit 1) are
 * problems.  daemon is lock_holder's answer. */
static int show_outbox(sqlite3 *db, const struct conf *c, long daemon, FILE *out, struct health *h)
{
	sqlite3_stmt *st = NULL;
	long long overdue = -1;

	if (query(db, outbox_sql, &st) < 0)
		return -1;
	fputs("outbox:        ", out);
	for (int i = 0; sqlite3_step(st) == SQLITE_ROW; i++)
		fprintf(out, "%s%lld %s", i ? ", " : "", sqlite3_column_int64(st, 1), col(st, 0));
	sqlite3_finalize(st);
	if (query(db, pending_sql, &st) < 0)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW) {
		if (sqlite3_column_type(st, 0) != SQLITE_NULL)
			fprintf(out, "; oldest pending %lld s", sqlite3_column_int64(st, 0));
		if (sqlite3_column_type(st, 1) != SQLITE_NULL)
			overdue = sqlite3_column_int64(st, 1);
	}
	fputc('\n', out);
	sqlite3_finalize(st);
	if (overdue > c->max_backoff + c->poll_interval)
		problem(h, 2,
			"an outbox item is %lld s past its time (max-backoff + poll-interval is "
			"%ld s): is dexsyncd running?",
			overdue, c->max_backoff + c->poll_interval);

	if (query(db, sending_sql, &st) < 0)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW) {
		long long n = sqlite3_column_int64(st, 0), id = sqlite3_column_int64(st, 1);
		int known = sqlite3_column_type(st, 2) != SQLITE_NULL;
		long long age = sqlite3_column_int64(st, 2);

		fprintf(out, "sending:       %lld item%s", n, n == 1 ? "" : "s");
		if (known)
			fprintf(out, ", item %lld for %lld s", id, age);
		else
			fprintf(out, ", item %lld since an unknown time", id);
		if (daemon == -1 && kept_waiting(c->database))
			fprintf(out,
				"; answers a stopped dexsyncd kept wait in %s.answers: start dexsyncd to "
				"record them ('dexsync retry' would send them again)",
				c->database);
		else if (daemon == -1)
			fprintf(out, "; no dexsyncd serves the database: 'dexsync retry ID' puts %s back",
				n == 1 ? "it" : "them");
		fputc('\n', out);
		if (known && age > SENDING_TOO_LONG)
			problem(h, 1, "item %lld has been sending for %lld s, over 10 minutes%s", id, age,
				daemon == -1 ? " (no dexsyncd runs: 'dexsync retry' it)" : "");
		else if (!known)
			problem(h, 1, "item %lld is sending since an unknown time%s", id,
				daemon == -1 ? " (no dexsyncd runs: 'dexsync retry' it)" : "");
	}
	sqlite3_finalize(st);
	return 0;
}

int status_run(sqlite3 *db, const char *database, const struct conf *c, FILE *out)
{
	struct health h = { NULL, 0 };
	sqlite3_stmt *st = NULL;
	long daemon = lock_holder(database);
	int rc = -1;

	if (show_last_walk(db, c, daemon, out, &h) < 0)
		goto out;
	if (query(db, counts_sql, &st) < 0)
		goto out;
	if (sqlite3_step(st) == SQLITE_ROW)
		fprintf(out,
			"conversations: %lld live, %lld gone\nusers:         %lld\nmessages:      %lld\n",
			sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2),
			sqlite3_column_int64(st, 3));
	sqlite3_finalize(st);
	if (show_outbox(db, c, daemon, out, &h) < 0)
		goto out;
	if (daemon > 0)
		fprintf(out, "daemon:        dexsyncd pid %ld\n", daemon);
	else if (daemon == 0)
		fprintf(out, "daemon:        dexsyncd (pid unknown)\n");
	else if (daemon == -1)
		fprintf(out, "daemon:        none running\n");
	else {
		fprintf(out, "daemon:        unknown (the lock file cannot be read)\n");
		problem(&h, 1,
			"whether a dexsyncd serves the database is unknown: its lock file cannot "
			"be read (above)");
	}
	fprintf(out, "health:        %s\n", h.text ? h.text : h.level ? "(out of memory)" : "ok");
	rc = h.level;
out:
	free(h.text);
	return rc < 0 ? 1 : rc;
}
