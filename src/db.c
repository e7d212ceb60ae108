/* db.c - the mirror database: open, pragmas, forward-only migrations */
#include "config.h"

#ifdef HAVE_MALLOC_TRIM
#include <malloc.h>
#endif
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "ftsbuild.h"
#include "lock.h"
#include "log.h"

struct migration {
	int version;
	const char *name;
	const char *sql;
};

/* Generated from src/sql/NNNN-*.sql by the Makefile, in order. */
static const struct migration migrations[] = {
#include "migrations.inc"
};

#define N_MIGRATIONS (sizeof(migrations) / sizeof(migrations[0]))

int db_schema_version(void)
{
	return migrations[N_MIGRATIONS - 1].version;
}

enum dx_result db_error_at(const char *who, sqlite3 *db, const char *path, const char *msg)
{
	if (!path)
		path = db ? sqlite3_db_filename(db, "main") : "(none)";
	if (!msg)
		msg = db ? sqlite3_errmsg(db) : "out of memory";
	log_err("%s%sdatabase %s: %s", who ? who : "", who ? ": " : "", path, msg);
	return DX_DB;
}

enum dx_result db_error(sqlite3 *db)
{
	return db_error_at(NULL, db, NULL, NULL);
}

enum dx_result db_error_in(sqlite3 *db, const char *what)
{
	char *msg = sqlite3_mprintf("%s: %s", what, sqlite3_errmsg(db));

	db_error_at(NULL, db, NULL, msg);
	sqlite3_free(msg);
	return DX_DB;
}

/* An error naming the statement by its first line ("UPDATE outbox",
 * "COMMIT"): SQLite's message alone ("database or disk is full") does not
 * say which step of the daemon failed.  msg NULL: the connection's. */
static void error_in_sql(const char *who, sqlite3 *db, const char *sql, const char *msg)
{
	char *line = sqlite3_mprintf("%s (in %.*s)", msg ? msg : sqlite3_errmsg(db),
				     sql ? (int)strcspn(sql, "\n") : 0, sql ? sql : "");

	db_error_at(who, db, NULL, line);
	sqlite3_free(line);
}

enum dx_result db_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		error_in_sql(NULL, db, sql, msg);
		sqlite3_free(msg);
		return DX_DB;
	}
	return DX_OK;
}

enum dx_result db_begin(sqlite3 *db, const char *who)
{
	assert(sqlite3_get_autocommit(db)); /* transactions do not nest */
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		error_in_sql(who, db, "BEGIN IMMEDIATE", NULL);
		return DX_DB;
	}
	return DX_OK;
}

enum dx_result db_commit(sqlite3 *db, const char *who)
{
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		error_in_sql(who, db, "COMMIT", NULL);
		return DX_DB;
	}
	return DX_OK;
}

void db_rollback(sqlite3 *db)
{
	if (!sqlite3_get_autocommit(db))
		db_exec(db, "ROLLBACK");
}

sqlite3_stmt *db_prepare(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
		db_error(db);
		return NULL;
	}
	return st;
}

void db_reset(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

enum dx_result db_step(sqlite3_stmt *st, const char *who, int *row)
{
	int rc;

	rc = sqlite3_step(st);
	*row = rc == SQLITE_ROW;
	if (rc == SQLITE_ROW)
		return DX_OK;
	if (rc != SQLITE_DONE)
		error_in_sql(who, sqlite3_db_handle(st), sqlite3_sql(st), NULL);
	db_reset(st);
	return rc == SQLITE_DONE ? DX_OK : DX_DB;
}

enum dx_result db_run(sqlite3_stmt *st)
{
	enum dx_result rc;
	int row;

	/* Every use of a statement ends with its reset: one still running
	 * is one a caller forgot to reset. */
	assert(!sqlite3_stmt_busy(st));
	rc = db_step(st, NULL, &row);
	assert(!row); /* a statement that returns no rows */
	return rc;
}

void db_bind_text(sqlite3_stmt *st, int i, const char *s)
{
	sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

void db_bind_len(sqlite3_stmt *st, int i, const char *s, size_t len)
{
	sqlite3_bind_text64(st, i, s, len, SQLITE_STATIC, SQLITE_UTF8);
}

void db_now(char *buf, size_t size)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int user_version(sqlite3 *db)
{
	sqlite3_stmt *st;
	int v = -1;

	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

int db_first_text(sqlite3 *db, const char *sql, const char *param, char **text)
{
	sqlite3_stmt *st = NULL;
	int rc;

	if (text)
		*text = NULL;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		error_in_sql(NULL, db, sql, NULL);
		return -1;
	}
	if (param)
		sqlite3_bind_text(st, 1, param, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		rc = !text || (*text = sqlite3_mprintf("%s", sqlite3_column_text(st, 0))) ? 1 : -1;
	else
		rc = rc == SQLITE_DONE ? 0 : -1;
	if (rc < 0)
		error_in_sql(NULL, db, sql, NULL);
	sqlite3_finalize(st);
	return rc;
}

/* Run the statement that query builds, and again, until it builds none;
 * *n counts them.  One at a time: a schema change must not run under an
 * open SELECT. */
static enum dx_result run_each(sqlite3 *db, const char *query, int *n)
{
	enum dx_result rc;
	char *stmt;
	int found;

	while ((found = db_first_text(db, query, NULL, &stmt)) > 0) {
		rc = db_exec(db, stmt);
		sqlite3_free(stmt);
		if (rc != DX_OK)
			return rc;
		(*n)++;
	}
	return found < 0 ? DX_DB : DX_OK;
}

/* Each secondary index the schema (src/sql) puts on the mirror tables: its
 * SQL into sync_state, then dropped.  Only those, by name: an index a user
 * made is never dropped.  A migration that adds an index to these tables
 * adds its name here (test_walk.py checks the list against src/sql). */
#define DEFER_NEXT                                                                                 \
	"SELECT printf('INSERT INTO sync_state(key, value) VALUES (%Q, %Q); DROP INDEX \"%w\"',\n" \
	"	'" DB_DEFERRED                                                                     \
	"' || name, sql, name)\n"                                                                  \
	"FROM sqlite_schema\n"                                                                     \
	"WHERE type = 'index' AND sql IS NOT NULL\n"                                               \
	"	AND tbl_name IN ('conversations', 'messages', 'participants')\n"                         \
	"	AND name IN ('conversations_detail_needed', 'conversations_live_status',\n"              \
	"		'conversations_live_day', 'conversations_gone', 'conversations_odd_created',\n"         \
	"		'messages_conversation_id',\n"                                                          \
	"		'participants_user_id')\n"                                                              \
	"LIMIT 1"

/* Each full-text index of the mirror tables (src/sql/0005-search.sql)
 * whose triggers are there: a rebuild of the index and its triggers' SQL
 * into sync_state under its name, like a deferred index's, then the
 * triggers dropped, so that an initial mirror does no index work per row.
 * fts_build_deferred (ftsbuild.c) builds the indexes its own way and puts
 * the triggers back, all in one transaction; a migration runs the rebuild
 * (RESTORE_NEXT).  The value keeps the form dexsync 0.1 wrote and reads:
 * a mirror cut short by this dexsync and taken up by an older one is
 * still built whole.  Only these triggers, by name. */
#define DB_FTS_HASH "524288"
#define DEFER_FTS_NEXT                                                                        \
	"SELECT printf('INSERT INTO sync_state(key, value) VALUES (%Q, %Q); %s',\n"           \
	"	'" DB_DEFERRED                                                                \
	"' || fts,\n"                                                                         \
	"	printf('INSERT INTO \"%w\"(\"%w\", rank) VALUES (''hashsize'', %s); ', fts, fts,\n" \
	"		'" DB_FTS_HASH                                                        \
	"') ||\n"                                                                             \
	"	printf('INSERT INTO \"%w\"(\"%w\") VALUES (''rebuild''); ', fts, fts) ||\n"         \
	"		group_concat('CREATE TRIGGER IF NOT EXISTS' || substr(sql, 15), '; '),\n"          \
	"	group_concat(printf('DROP TRIGGER \"%w\"', name), '; '))\n"                         \
	"FROM (SELECT name, sql, substr(name, 1, instr(name, '_fts_') + 3) AS fts\n"          \
	"	FROM sqlite_schema\n"                                                               \
	"	WHERE type = 'trigger' AND sql GLOB 'CREATE TRIGGER *'\n"                           \
	"		AND name IN ('conversations_fts_insert', 'conversations_fts_delete',\n"            \
	"			'conversations_fts_update', 'messages_fts_insert',\n"                             \
	"			'messages_fts_delete', 'messages_fts_update'))\n"                                 \
	"GROUP BY fts\n"                                                                      \
	"LIMIT 1"

/* Each deferred index: built (unless one of its name is there again), and
 * its key deleted.  Those of a kind: where is "1" for all, or a condition
 * on key that picks. */
#define RESTORE_NEXT_OF(where)                                                            \
	"SELECT printf('%s; DELETE FROM sync_state WHERE key = %Q',\n"                    \
	"	CASE WHEN value GLOB 'CREATE INDEX *'\n"                                        \
	"		THEN 'CREATE INDEX IF NOT EXISTS' || substr(value, 13) ELSE value END, key)\n" \
	"FROM sync_state WHERE key GLOB '" DB_DEFERRED "*' AND " where " ORDER BY key LIMIT 1"
#define RESTORE_NEXT RESTORE_NEXT_OF("1")
/* The deferred B-tree indexes, and the name of the one RESTORE_INDEX
 * builds; the full-text ones are built two at once (ftsbuild.c). */
#define NOT_FTS	      "key NOT GLOB '" DB_DEFERRED_FTS "'"
#define RESTORE_INDEX RESTORE_NEXT_OF(NOT_FTS)
#define RESTORE_NAME                                                     \
	"SELECT substr(key, length('" DB_DEFERRED                        \
	"') + 1)\n"                                                      \
	"FROM sync_state WHERE key GLOB '" DB_DEFERRED "*' AND " NOT_FTS \
	"\n"                                                             \
	"ORDER BY key LIMIT 1"

enum dx_result db_indexes_defer(sqlite3 *db, int *initial)
{
	char *empty;
	int n = 0, nfts = 0, rc;

	*initial = 0;
	if (db_begin(db, NULL) != DX_OK)
		return DX_DB;
	rc = db_first_text(db, "SELECT NOT EXISTS (SELECT 1 FROM conversations)", NULL, &empty);
	*initial = rc > 0 && !strcmp(empty, "1");
	sqlite3_free(empty);
	if (rc < 0 || (*initial && run_each(db, DEFER_NEXT, &n) != DX_OK) ||
	    (*initial && run_each(db, DEFER_FTS_NEXT, &nfts) != DX_OK) || db_commit(db, NULL) != DX_OK) {
		db_rollback(db);
		*initial = 0;
		return DX_DB;
	}
	if (n > 0)
		log_info("database %s: an initial mirror: %d indexes are built at its end",
			 sqlite3_db_filename(db, "main"), n);
	if (nfts > 0)
		log_info("database %s: an initial mirror: %d full-text indexes are built at its end",
			 sqlite3_db_filename(db, "main"), nfts);
	return DX_OK;
}

enum dx_result db_cache_small(sqlite3 *db, char **old)
{
	if (db_first_text(db, "PRAGMA cache_size", NULL, old) <= 0)
		return DX_DB;
	if (db_exec(db, "PRAGMA shrink_memory; PRAGMA cache_size = " DB_SMALL_CACHE) != DX_OK) {
		sqlite3_free(*old);
		*old = NULL;
		return DX_DB;
	}
#ifdef HAVE_MALLOC_TRIM
	malloc_trim(0);
#endif
	return DX_OK;
}

enum dx_result db_cache_restore(sqlite3 *db, char *old)
{
	char sql[64];

	snprintf(sql, sizeof(sql), "PRAGMA cache_size = %s", old);
	sqlite3_free(old);
	return db_exec(db, sql);
}

void db_no_memory_stats(void)
{
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

enum dx_result db_sort_small(void)
{
	return sqlite3_config(SQLITE_CONFIG_PMASZ, (unsigned)DB_SORT_PAGES) == SQLITE_OK ? DX_OK : DX_DB;
}

/* Each deferred B-tree index is built in a transaction of its own, so that
 * the write lock is held for one index at a time (SPEC 3, "the database
 * lock is held briefly") and a crash keeps those built; each one's time is
 * logged.  Then the full-text indexes, together (ftsbuild.c). */
enum dx_result db_indexes_restore(sqlite3 *db)
{
	struct timespec t0, t1;
	char *name = NULL, *stmt = NULL;
	int n = 0, rc;

	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &t0);
		if (db_begin(db, NULL) != DX_OK)
			return DX_DB;
		rc = db_first_text(db, RESTORE_NAME, NULL, &name);
		if (rc > 0 && (rc = db_first_text(db, RESTORE_INDEX, NULL, &stmt)) > 0)
			rc = db_exec(db, stmt) != DX_OK ? -1 : 1;
		sqlite3_free(stmt);
		stmt = NULL;
		if (rc < 0 || db_commit(db, NULL) != DX_OK) {
			sqlite3_free(name);
			db_rollback(db);
			return DX_DB;
		}
		if (rc == 0)
			break;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		log_info("database %s: built the deferred index %s in %.2f s",
			 sqlite3_db_filename(db, "main"), name,
			 (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
		sqlite3_free(name);
		name = NULL;
		n++;
	}
	sqlite3_free(name);
	if (n > 0)
		log_info("database %s: the %d deferred indexes are built", sqlite3_db_filename(db, "main"),
			 n);
	return fts_build_deferred(db);
}

/* Apply every migration newer than the database, all in one transaction,
 * so that a crash leaves the old schema or the new one, never a mix.  A
 * current schema is read without taking the write lock. */
static enum dx_result migrate(sqlite3 *db, const char *path)
{
	enum dx_result rc = DX_DB;
	char sql[64];
	int have, deferred = 0;

	if (user_version(db) == db_schema_version())
		return DX_OK;
	if (db_begin(db, NULL) != DX_OK)
		return DX_DB;
	have = user_version(db);
	if (have < 0) {
		db_error_at(NULL, db, path, NULL);
		goto fail;
	}
	if (have > db_schema_version()) {
		log_err("database %s: schema version %d is newer than this dexsync knows (%d); upgrade dexsync",
			path, have, db_schema_version());
		rc = DX_SCHEMA;
		goto fail;
	}
	/* A migration may alter a deferred index: put them back first. */
	if (have < db_schema_version() && have >= 1 && run_each(db, RESTORE_NEXT, &deferred) != DX_OK)
		goto fail;
	for (size_t i = 0; i < N_MIGRATIONS; i++) {
		struct timespec t0, t1;

		if (migrations[i].version <= have)
			continue;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		if (db_exec(db, migrations[i].sql) != DX_OK) {
			log_err("database %s: migration %s failed", path, migrations[i].name);
			goto fail;
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		/* Its time: a migration may build an index of the rows there. */
		log_info("database %s: applied migration %s in %.2f s", path, migrations[i].name,
			 (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	}
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", db_schema_version());
	if (db_exec(db, sql) != DX_OK || db_commit(db, NULL) != DX_OK)
		goto fail;
	return DX_OK;
fail:
	db_rollback(db);
	return rc;
}

/* A file that is no mirror yet while a dexsyncd serves it is one that
 * daemon is making at its first start: say so, rather than that it is not
 * one.  1 when it said so. */
static int being_made(const char *path)
{
	long pid = lock_holder(path);

	if (pid < 0)
		return 0;
	log_err("database %s: dexsyncd (pid %ld) is making it; try again in a moment", path, pid);
	return 1;
}

/* Is the read-only db a dexsync mirror of this program's schema?  DX_OK,
 * or DX_SCHEMA after logging what it is instead (DX_DB when it cannot be
 * read).  Reads, never writes. */
static enum dx_result check_schema(sqlite3 *db, const char *path)
{
	char *ours;
	int have = user_version(db), rc;

	if (have < 0)
		return db_error_at(NULL, db, path, NULL);
	rc = db_first_text(db,
			   "SELECT count(*) = 3 FROM sqlite_schema WHERE type = 'table'\n"
			   "	AND name IN ('conversations', 'outbox', 'sync_runs')",
			   NULL, &ours);
	if (rc < 0)
		return DX_DB;
	rc = rc > 0 && !strcmp(ours, "1");
	sqlite3_free(ours);
	if (!rc || have < 1) {
		if (have != 0 || !being_made(path))
			log_err("database %s: not a dexsync mirror (left untouched)", path);
		return DX_SCHEMA;
	}
	if (have < db_schema_version()) {
		log_err("database %s: schema version %d is older than this dexsync's (%d); "
			"start dexsyncd once to migrate it",
			path, have, db_schema_version());
		return DX_SCHEMA;
	}
	if (have > db_schema_version()) {
		log_err("database %s: schema version %d is newer than this dexsync knows (%d); upgrade dexsync",
			path, have, db_schema_version());
		return DX_SCHEMA;
	}
	return DX_OK;
}

/* May the daemon make the database at path its mirror?  An empty file
 * (new), or a dexsync mirror; not another program's database (no
 * user_version, and tables), which is left as it is: nothing is written
 * before this says yes.  DX_OK, or DX_SCHEMA (DX_DB) after logging why
 * not. */
static enum dx_result adoptable(sqlite3 *db, const char *path)
{
	char *other = NULL;
	int rc;

	if (user_version(db) != 0)
		return DX_OK;
	rc = db_first_text(db, "SELECT name FROM sqlite_schema LIMIT 1", NULL, &other);
	if (rc > 0)
		log_err("database %s: holds other tables ('%s') and no dexsync schema: not a "
			"dexsync mirror (left untouched)",
			path, other);
	sqlite3_free(other);
	return rc == 0 ? DX_OK : rc > 0 ? DX_SCHEMA : DX_DB;
}

/* The pragmas of a connection that may write, then the migrations.  Our
 * connections keep the -wal and -shm files when they close (the daemon's,
 * and dexsync's that queue: the last to close would remove them): a reader
 * who may not write the directory (the dexsync-read group) can open a WAL
 * database read-only only while they exist. */
static enum dx_result setup_writer(sqlite3 *db, const char *path, enum db_mode mode)
{
	enum dx_result rc;
	int persist = 1;

	sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
	db_busy_timeout(db, mode == DB_DAEMON ? DB_BUSY_TIMEOUT_MS : DB_CLIENT_BUSY_TIMEOUT_MS);
	/* The command line queues into a mirror the daemon made and keeps
	 * current; it never migrates, nor adopts another file. */
	if (mode == DB_CLIENT) {
		if ((rc = check_schema(db, path)) == DX_OK &&
		    (rc = db_exec(db, "PRAGMA synchronous = FULL")) == DX_OK)
			rc = db_exec(db, "PRAGMA temp_store = FILE");
		return rc;
	}
	/* The daemon's page cache is 1 MiB, not SQLite's 2 (issue 17: peak
	 * RSS, 16 MiB at most): the second MiB was about 1 MiB of a walk's
	 * peak.  It costs CPU where the mirror outgrows the cache: an
	 * unchanged walk of 1,000,000 conversations took 13.0 s of CPU against
	 * 12.5 s with 2 MiB (medians of three, a loaded machine); 100,000
	 * took the same. */
	if ((rc = adoptable(db, path)) != DX_OK || (rc = db_exec(db, "PRAGMA journal_mode = WAL")) != DX_OK ||
	    (rc = db_exec(db, "PRAGMA synchronous = NORMAL")) != DX_OK ||
	    (rc = db_exec(db, "PRAGMA temp_store = FILE")) != DX_OK ||
	    (rc = db_exec(db, "PRAGMA cache_size = " DB_DAEMON_CACHE)) != DX_OK)
		return rc;
	return migrate(db, path);
}

/* Is path an SQLite database, or empty (or missing), as far as its size
 * tells?  SQLite takes a file shorter than its header for an empty
 * database and writes over it, while a database is a page (512 bytes) at
 * least; a longer file of something else SQLite refuses itself.  No file
 * descriptor is opened: closing one would drop the POSIX locks the
 * process's other connections hold on the file (fcntl(2)), and with them
 * the WAL's protection.  1, or 0 after logging what it is. */
static int sqlite_or_empty(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0 || st.st_size == 0 || st.st_size >= 512)
		return 1;
	log_err("database %s: not an SQLite database (%lld bytes; left untouched)", path,
		(long long)st.st_size);
	return 0;
}

/* Can the existing file at path be a dexsync mirror?  Told from its first
 * 100 bytes where they are the whole truth, before SQLite opens it (which
 * would make -wal and -shm files beside a WAL database).  Only for a
 * process's first connection to the file: closing the descriptor drops the
 * POSIX locks of any other (see sqlite_or_empty).  An SQLite header,
 * and, unless a WAL file holds newer pages, a user_version (bytes 60-63,
 * big-endian) from 1 up.  DX_OK, or DX_SCHEMA (DX_SYSTEM when it cannot
 * be read) after logging what it is instead. */
static enum dx_result header_check(const char *path)
{
	unsigned char h[100];
	char *wal = NULL;
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK), pending;
	long version;
	ssize_t n;

	if (fd < 0) {
		db_error_at(NULL, NULL, path, strerror(errno));
		return DX_SYSTEM;
	}
	n = read(fd, h, sizeof(h));
	close(fd);
	if (n == 0 && being_made(path))
		return DX_SCHEMA;
	if (n != (ssize_t)sizeof(h) || memcmp(h, "SQLite format 3", 16)) {
		log_err("database %s: not a dexsync mirror (%s; left untouched)", path,
			n < 0  ? strerror(errno) :
			n == 0 ? "an empty file" :
				 "not an SQLite database");
		return n < 0 ? DX_SYSTEM : DX_SCHEMA;
	}
	pending = asprintf(&wal, "%s-wal", path) >= 0 && stat(wal, &st) == 0 && st.st_size > 0;
	free(wal);
	version = (long)h[60] << 24 | (long)h[61] << 16 | (long)h[62] << 8 | h[63];
	if (!pending && version == 0) {
		if (!being_made(path))
			log_err("database %s: not a dexsync mirror (left untouched)", path);
		return DX_SCHEMA;
	}
	if (!pending && version > db_schema_version()) {
		log_err("database %s: schema version %ld is newer than this dexsync knows (%d); "
			"upgrade dexsync (left untouched)",
			path, version, db_schema_version());
		return DX_SCHEMA;
	}
	return DX_OK;
}

/* The last time (ms, CLOCK_MONOTONIC) a thread of this process waited for
 * a lock, and which thread's wait that was (its own stamp). */
static atomic_llong last_wait_ms;
static _Thread_local long long my_wait_ms = -1, wait_started_ms;

#define WRITE_GAP_MS  2	   /* the lock left free after a walk's commit */
#define WRITE_TURN_MS 1000 /* the longest it waits for another thread */

static long long mono_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* SQLite calls it while a lock is held elsewhere, count the calls before
 * this one: go on waiting (1) until arg's milliseconds have passed since
 * the first call, measured (a busy machine sleeps longer than asked). */
static int busy_wait(void *arg, int count)
{
	long long now = mono_ms();

	if (count == 0)
		wait_started_ms = now;
	if (now - wait_started_ms >= (intptr_t)arg)
		return 0;
	my_wait_ms = now;
	atomic_store(&last_wait_ms, my_wait_ms);
	usleep(1000);
	return 1;
}

void db_busy_timeout(sqlite3 *db, int ms)
{
	sqlite3_busy_handler(db, busy_wait, (void *)(intptr_t)ms);
}

int db_write_wanted(void)
{
	long long last = atomic_load(&last_wait_ms);

	/* A waiter stamps every millisecond or so. */
	return last != my_wait_ms && mono_ms() - last <= 3;
}

void db_write_turn(void)
{
	long long start = mono_ms();

	usleep(WRITE_GAP_MS * 1000);
	while (db_write_wanted() && mono_ms() - start < WRITE_TURN_MS)
		usleep(1000);
}

/* A read-only connection: nothing it runs can write (query_only), and it
 * waits only a moment for a lock (in WAL mode a reader never waits for a
 * writer). */
static enum dx_result reader_settings(sqlite3 *db)
{
	db_busy_timeout(db, 1000);
	if (db_exec(db, "PRAGMA query_only = 1") != DX_OK || db_exec(db, "PRAGMA temp_store = FILE") != DX_OK)
		return DX_DB;
	return DX_OK;
}

/* The same, for a file that must be a current dexsync mirror. */
static enum dx_result setup_reader(sqlite3 *db, const char *path)
{
	return reader_settings(db) == DX_OK ? check_schema(db, path) : DX_DB;
}

char *db_file_name(const char *path)
{
	char *name;

	return asprintf(&name, "%s%s", strncmp(path, "file:", 5) ? "" : "./", path) < 0 ? NULL : name;
}

sqlite3 *db_open(const char *path, enum db_mode mode)
{
	/* URI: ftsbuild.c attaches its scratch file read-only by one.  Debian's
	 * SQLite is built to read URIs anyway (SQLITE_USE_URI): see
	 * db_file_name(). */
	int flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI, fd, rc;
	sqlite3 *db = NULL;
	char *name;

	flags |= mode == DB_READONLY ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
	/* A new database is made here rather than by SQLite (0644), so that
	 * the umask decides its mode (the unit's 0007: 0660, the group dexsync
	 * queues writes); SQLite gives its -wal and -shm files the same. */
	if (mode == DB_DAEMON &&
	    (fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0666)) >= 0)
		close(fd);
	if (mode == DB_DAEMON) {
		flags |= SQLITE_OPEN_CREATE;
		if (!sqlite_or_empty(path))
			return NULL;
	} else if (access(path, F_OK) < 0) {
		log_err("database %s: does not exist (has dexsyncd run yet? see -d and -f)", path);
		return NULL;
	} else if (header_check(path) != DX_OK) {
		return NULL;
	}
	if (!(name = db_file_name(path))) {
		log_err("database %s: out of memory", path);
		return NULL;
	}
	rc = sqlite3_open_v2(name, &db, flags, NULL);
	free(name);
	if (rc != SQLITE_OK) {
		db_error_at(NULL, db, path, NULL);
		sqlite3_close(db);
		return NULL;
	}
	sqlite3_extended_result_codes(db, 1);
	if ((mode == DB_READONLY ? setup_reader(db, path) : setup_writer(db, path, mode)) != DX_OK) {
		sqlite3_close(db);
		return NULL;
	}
	return db;
}

/* Has the name db's main file was opened by been removed, or does it lead
 * to another file now? */
static int moved(sqlite3 *db)
{
	int moved = 1;

	return sqlite3_file_control(db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) != SQLITE_OK || moved;
}

sqlite3 *db_open_beside(sqlite3 *db, enum db_mode mode)
{
	int flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, persist = 1;
	const char *path = sqlite3_db_filename(db, "main");
	sqlite3 *beside = NULL;

	flags |= mode == DB_READONLY ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
	if (sqlite3_open_v2(path, &beside, flags, NULL) != SQLITE_OK) {
		log_notice("database %s: no second connection: %s", path,
			   beside ? sqlite3_errmsg(beside) : "out of memory");
		goto fail;
	}
	sqlite3_extended_result_codes(beside, 1);
	/* Both still named by path: the same file. */
	if (moved(db) || moved(beside)) {
		log_notice("database %s: no second connection: the file was replaced or removed", path);
		goto fail;
	}
	sqlite3_file_control(beside, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
	if (mode != DB_READONLY)
		db_busy_timeout(beside, DB_BUSY_TIMEOUT_MS);
	else if (reader_settings(beside) != DX_OK)
		goto fail;
	return beside;
fail:
	sqlite3_close(beside);
	return NULL;
}

void db_close(sqlite3 *db)
{
	if (db && sqlite3_close(db) != SQLITE_OK)
		db_error_in(db, "close");
}
