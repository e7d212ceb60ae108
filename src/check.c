/* check.c - dexsync check: integrity, schema, rows, search index, stranded items
 *
 * Everything here reads; nothing writes the mirror or takes its write lock.
 * The one check SQLite offers only as a write is FTS5's 'integrity-check'
 * (an INSERT into the table, refused on a read-only connection), with
 * rank = 1 so that the index is compared with the rows of its external
 * content table; SQLite 3.40 (Debian 12) has no read-only way to run it.
 * So it runs on a private copy of the mirror, made with the
 * backup API in $TMPDIR (else /var/tmp) and removed at once: it costs the
 * time and the space of a copy, and never the daemon's lock. */
#include "config.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup.h"
#include "check.h"
#include "db.h"
#include "kept.h"
#include "lock.h"
#include "log.h"

/* An item sending for longer than this, with a daemon running, is stuck
 * (status.c says the same). */
#define CHECK_SENDING_TOO_LONG 600

struct check {
	sqlite3 *db;
	const char *database;
	FILE *out;
	int problems;
};

static void problem(struct check *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One problem, one line (escaped by the logger). */
static void problem(struct check *k, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_ERR, fmt, ap);
	va_end(ap);
	k->problems++;
}

static void integrity_problem(void *arg, const char *line)
{
	problem(arg, "integrity: %s", line);
}

/* The first column of sql's first row as an integer; -1 on an error (a
 * problem). */
static long long count_of(struct check *k, const char *sql)
{
	sqlite3_stmt *st = NULL;
	long long n = -1;

	if (sqlite3_prepare_v2(k->db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	else
		problem(k, "rows: %s: %s", sql, sqlite3_errmsg(k->db));
	sqlite3_finalize(st);
	return n;
}

static void check_integrity(struct check *k)
{
	int n = backup_integrity(k->db, integrity_problem, k);

	if (n < 0)
		problem(k, "integrity: the check could not run");
	else if (n == 0)
		fprintf(k->out, "integrity: ok\n");
}

static void check_rows(struct check *k)
{
	static const char *const tables[] = { "messages", "participants", "users",
					      "outbox",	  "sync_runs",	  "conversation_events" };
	long long all, live;

	all = count_of(k, "SELECT count(*) FROM conversations");
	live = count_of(k, "SELECT count(*) FROM conversations WHERE gone_at IS NULL");
	if (all < 0 || live < 0)
		return;
	fprintf(k->out, "rows: conversations %lld (%lld live, %lld gone)", all, live, all - live);
	for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
		char *sql = sqlite3_mprintf("SELECT count(*) FROM \"%w\"", tables[i]);
		sqlite3_stmt *st = NULL;

		/* conversation_events comes with a later schema: counted when there. */
		if (sql && sqlite3_prepare_v2(k->db, sql, -1, &st, NULL) == SQLITE_OK &&
		    sqlite3_step(st) == SQLITE_ROW)
			fprintf(k->out, ", %s %lld", tables[i], sqlite3_column_int64(st, 0));
		sqlite3_finalize(st);
		sqlite3_free(sql);
	}
	fprintf(k->out, "\n");
}

/* The FTS5 tables' names, a NULL-terminated sqlite3_malloc'd list of
 * sqlite3_mprintf'd names (free with free_names); NULL on error. */
static char **fts_tables(struct check *k, int *n)
{
	sqlite3_stmt *st = NULL;
	char **names = sqlite3_malloc(sizeof(char *));

	*n = 0;
	if (!names ||
	    sqlite3_prepare_v2(k->db,
			       "SELECT name FROM sqlite_schema\n"
			       "WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%USING fts5%'\n"
			       "ORDER BY name",
			       -1, &st, NULL) != SQLITE_OK) {
		problem(k, "search index: %s", sqlite3_errmsg(k->db));
		sqlite3_free(names);
		return NULL;
	}
	names[0] = NULL;
	while (sqlite3_step(st) == SQLITE_ROW) {
		char **more = sqlite3_realloc(names, (int)sizeof(char *) * (*n + 2));

		if (!more)
			break;
		names = more;
		names[(*n)++] = sqlite3_mprintf("%s", sqlite3_column_text(st, 0));
		names[*n] = NULL;
	}
	sqlite3_finalize(st);
	return names;
}

static void free_names(char **names)
{
	for (int i = 0; names && names[i]; i++)
		sqlite3_free(names[i]);
	sqlite3_free(names);
}

/* Is the full-text index name waiting to be built (db_indexes_defer), in
 * db, the copy checked (the mirror itself may have built it since the copy
 * was made)?  An initial mirror drops its triggers and builds it at its
 * end; until then (or until the next start, after an interrupted one) it
 * holds less than its table, which is no damage. */
static int fts_deferred(sqlite3 *db, const char *name)
{
	sqlite3_stmt *st = NULL;
	int deferred = 0;

	if (sqlite3_prepare_v2(db, "SELECT 1 FROM sync_state WHERE key = '" DB_DEFERRED "' || ?1", -1, &st,
			       NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
		deferred = sqlite3_step(st) == SQLITE_ROW;
	}
	sqlite3_finalize(st);
	return deferred;
}

/* FTS5's integrity-check of each table in names, on a private copy. */
static void check_fts_on_copy(struct check *k, char **names)
{
	const char *dir = getenv("TMPDIR");
	sqlite3 *copy = NULL;
	char *path = NULL, *name = NULL;
	long pages;
	int fd;

	if (!dir || !*dir)
		dir = "/var/tmp";
	if (asprintf(&path, "%s/dexsync-check-XXXXXX", dir) < 0) {
		problem(k, "search index: out of memory");
		return;
	}
	if ((fd = mkstemp(path)) < 0) {
		problem(k, "search index: cannot make a copy to check in %s: %m", dir);
		free(path);
		return;
	}
	close(fd);
	if (!(name = db_file_name(path)) ||
	    sqlite3_open_v2(name, &copy, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
	    backup_copy(k->db, copy, NULL, &pages) != DX_OK) {
		problem(k, "search index: cannot copy the mirror to %s to check it: %s", path,
			copy ? sqlite3_errmsg(copy) : "out of memory");
	} else {
		for (int i = 0; names[i]; i++) {
			char *sql;

			if (fts_deferred(copy, names[i])) {
				fprintf(k->out,
					"search index %s: not built yet (an initial mirror builds it at "
					"its end; an interrupted one at dexsyncd's next start)\n",
					names[i]);
				continue;
			}
			sql = sqlite3_mprintf("INSERT INTO \"%w\"(\"%w\", rank) VALUES ('integrity-check', 1)",
					      names[i], names[i]);

			if (!sql || sqlite3_exec(copy, sql, NULL, NULL, NULL) != SQLITE_OK)
				problem(k,
					"search index %s: %s (dexsyncd's user can rebuild it: "
					"INSERT INTO %s(%s) VALUES ('rebuild'))",
					names[i], sql ? sqlite3_errmsg(copy) : "out of memory", names[i],
					names[i]);
			else
				fprintf(k->out, "search index %s: ok\n", names[i]);
			sqlite3_free(sql);
		}
	}
	sqlite3_close(copy);
	unlink(path);
	free(name);
	free(path);
}

static void check_fts(struct check *k)
{
	int n;
	char **names = fts_tables(k, &n);

	if (!names)
		return;
	if (n == 0)
		fprintf(k->out, "search index: none in this schema\n");
	else
		check_fts_on_copy(k, names);
	free_names(names);
}

/* Items in 'sending': stranded when no daemon serves the database (only
 * a crash leaves them so; the next dexsyncd puts them back), stuck when
 * one does and the item has been sending for over 10 minutes. */
static void check_sending(struct check *k)
{
	sqlite3_stmt *st = NULL;
	long holder = lock_holder(k->database);
	int n = 0, rc, kept = kept_waiting(k->database);

	if (holder == -2)
		problem(k, "outbox: cannot tell whether a dexsyncd serves %s", k->database);
	if (sqlite3_prepare_v2(k->db,
			       "SELECT id, unixepoch('now') - unixepoch(sending_at) FROM outbox\n"
			       "WHERE state = 'sending' ORDER BY id",
			       -1, &st, NULL) != SQLITE_OK) {
		problem(k, "outbox: %s", sqlite3_errmsg(k->db));
		return;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		long long id = sqlite3_column_int64(st, 0), age = sqlite3_column_int64(st, 1);

		n++;
		if (holder == -1 && kept)
			problem(k,
				"outbox: item %lld is in 'sending' and no dexsyncd serves the database: "
				"start dexsyncd, which records the answers kept in %s.answers first "
				"(dexsync retry %lld would send it again)",
				id, k->database, id);
		else if (holder == -1)
			problem(k,
				"outbox: item %lld is stranded in 'sending' and no dexsyncd serves the "
				"database: start dexsyncd (it puts the item back), or dexsync retry %lld",
				id, id);
		else if (holder >= 0 && sqlite3_column_type(st, 1) != SQLITE_NULL &&
			 age > CHECK_SENDING_TOO_LONG)
			problem(k,
				"outbox: item %lld has been sending for %lld s, over 10 minutes "
				"(dexsyncd pid %ld hangs?)",
				id, age, holder);
	}
	if (rc != SQLITE_DONE)
		problem(k, "outbox: %s", sqlite3_errmsg(k->db));
	sqlite3_finalize(st);
	fprintf(k->out, "outbox: %d item%s in 'sending', %s\n", n, n == 1 ? "" : "s",
		holder >= 0  ? "a dexsyncd serves the database" :
		holder == -1 ? "no dexsyncd serves the database" :
			       "whether a dexsyncd serves the database is unknown");
}

int check_run(sqlite3 *db, const char *database, FILE *out)
{
	struct check k = { db, database, out, 0 };

	check_integrity(&k);
	fprintf(out, "schema: version %d, this dexsync's\n", db_schema_version());
	check_rows(&k);
	check_fts(&k);
	check_sending(&k);
	if (k.problems)
		fprintf(out, "check: %d problem%s\n", k.problems, k.problems == 1 ? "" : "s");
	else
		fprintf(out, "check: ok\n");
	return k.problems ? 1 : 0;
}
