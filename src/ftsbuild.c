/* ftsbuild.c - the deferred full-text indexes, built two at once
 *
 * An initial mirror drops the full-text triggers and builds each index
 * once at its end (db_indexes_defer).  FTS5 builds an index on one core;
 * this machine's kind has two, and the indexes are independent: the
 * first (conversations_fts, the longer) is built by a second thread into a
 * scratch file beside the database while the daemon's connection rebuilds
 * the others in place, then its pages are copied in.  At 1,000,000
 * conversations: 7.3 s against 13.3 s one after the other (issue 15).
 *
 * Why the copy is sound: the scratch index is made by the table's own
 * CREATE VIRTUAL TABLE, so its shadow tables (%_data, %_idx, %_docsize)
 * hold what FTS5 would have written in place (FTS5's own format, which
 * the sqlite3 shell's .dump copies the same way); its %_config, which
 * holds the build's settings, is not copied.  What it indexes cannot
 * change under it: the daemon's connection takes the write lock before
 * the thread's connection reads, and holds it until the copy, the
 * in-place builds and the triggers are committed together.  The copy goes
 * into the table made new (dropped and created again), so that FTS5 on
 * the daemon's connection holds nothing it read of the old one; other
 * connections see the commit (PRAGMA data_version) and read it again.
 *
 * Any failure of the two at once (no thread, no room for the scratch
 * file or for its copy) is logged, and the indexes are built in place
 * instead, one after the other: slower, never wrong. */
#include "config.h"

#ifdef HAVE_MALLOC_TRIM
#include <malloc.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "ftsbuild.h"
#include "log.h"

/* While it builds an index, FTS5 gathers its entries in memory up to the
 * table's hashsize, writes them out as a segment, and merges segments
 * level by level: every automerge segments of a level make one of the
 * next.  Merging 16 at a time, not FTS5's 4, writes each entry fewer times
 * (conversations_fts at 1,000,000: 5.4 s against 7.1 s in place); the
 * in-place index gets FTS5's 4 back for the triggers' small writes, and
 * the copied one never had it.  Searches were as fast (40 ms for a common
 * word at 1,000,000, 14 and 20 segments against 12 and 6).
 *
 * Memory (issue 17: 16 MiB of RSS at most): two builds at once hold two
 * hashes, page caches and a second connection (its schema alone 314 KB).
 * The thread's index is the longer one, so it gets the larger hash (256
 * KiB cost it 1.7 s at 1,000,000); the daemon's connection waits for it
 * anyway.  A scan and a copy need few pages.  Smaller hashes did not lower
 * the peak, which went from 15.9 to 16.4 MiB at 1,000,000 (tests/bench). */
#define FTS_HASH_BESIDE	  "786432"
#define FTS_HASH_IN_PLACE "393216"
#define FTS_MERGE	  "16"
#define FTS_MERGE_DEF	  "4"
#define CACHE_SCAN	  "-64"	 /* KiB: the thread's reads of the content */
#define CACHE_BUILD	  "-128" /* KiB: where an index is built */

/* The CREATE statement of the table ?1, as the schema holds it. */
#define TABLE_SQL "SELECT sql FROM main.sqlite_schema WHERE type = 'table' AND name = ?1"

/* The attached scratch database's name, and its file's name beside the
 * database's. */
#define SCRATCH	       "fts_build"
#define SCRATCH_SUFFIX "-ftsbuild"

/* A pending build: the index's name and its triggers' SQL, the part of
 * its key's value after the rebuild (db.c, DEFER_FTS_NEXT); sqlite3_malloc'd. */
struct pending {
	char *name, *triggers;
	double secs; /* its build's time */
	int beside;  /* built by the thread */
};

/* The index built beside: by the thread into the scratch file. */
struct beside {
	const char *path, *scratch, *name;
	sqlite3 *db; /* the thread's connection (db_open_beside), which it closes */
	enum dx_result rc;
	double secs;
};

static double since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Run sql, an sqlite3_mprintf'd string (NULL: out of memory), and free it. */
static enum dx_result exec_made(sqlite3 *db, char *sql)
{
	enum dx_result rc = sql ? db_exec(db, sql) : db_error_in(db, "full-text build: out of memory");

	sqlite3_free(sql);
	return rc;
}

/* A new, empty scratch file, only ours: what a crash left is removed
 * first (never read: the index is built again), and what is in the way
 * (a directory, or a link someone put there while it was missing) is not
 * opened.  1, or 0 after a notice. */
static int make_scratch(const char *path, const char *scratch)
{
	int fd;

	if (unlink(scratch) < 0 && errno != ENOENT) {
		log_notice("database %s: cannot remove %s: %s", path, scratch, strerror(errno));
		return 0;
	}
	if ((fd = open(scratch, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0) {
		log_notice("database %s: cannot make %s: %s", path, scratch, strerror(errno));
		return 0;
	}
	close(fd);
	return 1;
}

/* Attach the scratch file by name, which is all SQLite takes: the thread
 * attaches scratch itself, on a connection that refuses a link anywhere in
 * it (db_open_beside's SQLITE_OPEN_NOFOLLOW, which ATTACH inherits); the
 * daemon's connection, which only reads it, attaches it read-only (a URI,
 * uri 1), so that nothing put in its place since make_scratch is ever made
 * or written through. */
static enum dx_result attach_scratch(sqlite3 *db, const char *scratch, int uri)
{
	sqlite3_stmt *st = NULL;
	sqlite3_str *name = sqlite3_str_new(db);
	int rc;

	if (uri) {
		/* RFC 3986 as SQLite reads it: a path of / ends nowhere
		 * but at ?, # and the % of an escape. */
		sqlite3_str_appendall(name, "file:");
		for (const char *p = scratch; *p; p++)
			if (*p == '%' || *p == '?' || *p == '#')
				sqlite3_str_appendf(name, "%%%02X", (unsigned char)*p);
			else
				sqlite3_str_appendchar(name, 1, *p);
		sqlite3_str_appendall(name, "?mode=ro");
	} else {
		sqlite3_str_appendall(name, scratch);
	}
	if (sqlite3_str_errcode(name) != SQLITE_OK) {
		sqlite3_free(sqlite3_str_finish(name));
		return db_error_in(db, "full-text build: out of memory");
	}
	if (sqlite3_prepare_v2(db, "ATTACH ?1 AS " SCRATCH, -1, &st, NULL) != SQLITE_OK) {
		sqlite3_free(sqlite3_str_finish(name));
		return db_error_in(db, "full-text build");
	}
	sqlite3_bind_text(st, 1, sqlite3_str_finish(name), -1, sqlite3_free);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? DX_OK : db_error_in(db, "full-text build: ATTACH");
}

/* The build's settings of the index name in schema ("" or SCRATCH "."). */
static enum dx_result settings(sqlite3 *db, const char *schema, const char *name, const char *hash)
{
	return exec_made(db,
			 sqlite3_mprintf("INSERT INTO %s\"%w\"(\"%w\", rank) VALUES ('hashsize', %s); "
					 "INSERT INTO %s\"%w\"(\"%w\", rank) VALUES ('automerge', " FTS_MERGE
					 ")",
					 schema, name, name, hash, schema, name, name));
}

/* In the scratch database, the index name as the schema makes it (its own
 * CREATE VIRTUAL TABLE), filled from its content table (the schema's
 * convention: the index of table T is T_fts, src/sql/0005-search.sql). */
static enum dx_result fill_beside(sqlite3 *db, const char *name)
{
	const char *create = "CREATE VIRTUAL TABLE ";
	char *sql = NULL, *cols = NULL;
	enum dx_result rc = DX_DB;
	int len = (int)strlen(name);

	if (db_first_text(db, TABLE_SQL, name, &sql) > 0 &&
	    db_first_text(
		    db,
		    "SELECT group_concat(printf('\"%w\"', name), ', ') FROM pragma_table_info(?1, 'main')",
		    name, &cols) > 0) {
		if (strncmp(sql, create, strlen(create)))
			log_err("database %s: full-text build: %s is not an index of the schema's",
				sqlite3_db_filename(db, "main"), name);
		else if ((rc = exec_made(db, sqlite3_mprintf("CREATE VIRTUAL TABLE " SCRATCH ".%s",
							     sql + strlen(create)))) == DX_OK &&
			 (rc = settings(db, SCRATCH ".", name, FTS_HASH_BESIDE)) == DX_OK)
			rc = exec_made(db, sqlite3_mprintf("INSERT INTO " SCRATCH ".\"%w\"(rowid, %s) "
							   "SELECT rowid, %s FROM main.\"%.*w\"",
							   name, cols, cols, len - 4, name));
	}
	sqlite3_free(sql);
	sqlite3_free(cols);
	return rc;
}

/* Lookaside off: its slots (SQLite's default, 120 KB a connection) pay
 * for many small statements, and these connections run a few long ones. */
static void lean(sqlite3 *db)
{
	sqlite3_db_config(db, SQLITE_DBCONFIG_LOOKASIDE, NULL, 0, 0);
}

/* The thread: b->name into the scratch file, on its connection b->db
 * (which it closes) that only reads the database, whose snapshot the write
 * lock held by build_all keeps current. */
static void *build_beside(void *arg)
{
	struct beside *b = arg;
	struct timespec t0;
	sqlite3 *db = b->db;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	b->rc = DX_DB;
	lean(db);
	if (attach_scratch(db, b->scratch, 0) == DX_OK &&
	    db_exec(db, "PRAGMA cache_size = " CACHE_SCAN "; PRAGMA " SCRATCH ".cache_size = " CACHE_BUILD
			"; PRAGMA " SCRATCH ".journal_mode = OFF; PRAGMA " SCRATCH
			".synchronous = OFF; BEGIN") == DX_OK &&
	    fill_beside(db, b->name) == DX_OK && db_exec(db, "COMMIT") == DX_OK)
		b->rc = DX_OK;
	db_rollback(db);
	db_close(db);
	b->secs = since(&t0);
	return NULL;
}

static enum dx_result build_in_place(sqlite3 *db, struct pending *p)
{
	const char *name = p->name;
	struct timespec t0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (settings(db, "", name, FTS_HASH_IN_PLACE) != DX_OK ||
	    exec_made(db,
		      sqlite3_mprintf("INSERT INTO \"%w\"(\"%w\") VALUES ('rebuild'); "
				      "INSERT INTO \"%w\"(\"%w\", rank) VALUES ('automerge', " FTS_MERGE_DEF
				      ")",
				      name, name, name, name)) != DX_OK)
		return DX_DB;
	p->secs = since(&t0);
	return DX_OK;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct pending *)a)->name, ((const struct pending *)b)->name);
}

static void free_pending(struct pending *p, int n)
{
	for (int i = 0; p && i < n; i++) {
		sqlite3_free(p[i].name);
		sqlite3_free(p[i].triggers);
	}
	sqlite3_free(p);
}

/* The pending builds, taken: their keys deleted (db's first write, which
 * takes the write lock), into *p (n of them, by name). */
static enum dx_result take_pending(sqlite3 *db, struct pending **p, int *n)
{
	sqlite3_stmt *st = NULL;
	int rc;

	*p = NULL;
	*n = 0;
	if (sqlite3_prepare_v2(db,
			       "DELETE FROM sync_state WHERE key GLOB '" DB_DEFERRED_FTS "'\n"
			       "RETURNING substr(key, length('" DB_DEFERRED "') + 1),\n"
			       "	substr(value, instr(value, 'CREATE TRIGGER'))",
			       -1, &st, NULL) != SQLITE_OK)
		return db_error_in(db, "full-text build");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct pending *more = sqlite3_realloc(*p, (int)sizeof(**p) * (*n + 1));

		if (!more)
			break;
		*p = more;
		more[*n] = (struct pending){ 0 };
		more[*n].name = sqlite3_mprintf("%s", sqlite3_column_text(st, 0));
		more[*n].triggers = sqlite3_mprintf("%s", sqlite3_column_text(st, 1));
		if (!more[(*n)++].name || !more[*n - 1].triggers)
			break;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return db_error_in(db,
				   rc == SQLITE_ROW ? "full-text build: out of memory" : "full-text build");
	if (*n > 1)
		qsort(*p, (size_t)*n, sizeof(**p), by_name);
	return DX_OK;
}

/* The index name, built beside, over its own: the table made new first
 * (dropped and made by its own SQL), so that this connection's FTS5 holds
 * nothing it read of the old one, then the scratch file's pages copied. */
static enum dx_result copy_in(sqlite3 *db, const char *name)
{
	static const char *const shadow[] = { "data", "idx", "docsize" };
	enum dx_result rc = DX_DB;
	char *sql = NULL;

	if (db_first_text(db, TABLE_SQL, name, &sql) > 0 &&
	    exec_made(db, sqlite3_mprintf("DROP TABLE main.\"%w\"", name)) == DX_OK &&
	    db_exec(db, sql) == DX_OK) {
		rc = DX_OK;
		for (size_t i = 0; rc == DX_OK && i < sizeof(shadow) / sizeof(shadow[0]); i++)
			rc = exec_made(
				db, sqlite3_mprintf("DELETE FROM main.\"%w_%s\"; INSERT INTO main.\"%w_%s\" "
						    "SELECT * FROM " SCRATCH ".\"%w_%s\"",
						    name, shadow[i], name, shadow[i], name, shadow[i]));
	}
	sqlite3_free(sql);
	return rc;
}

/* In db's transaction, which holds the write lock: the first index
 * beside (b NULL: all in place), the others in place, the first copied in,
 * every trigger back. */
static enum dx_result build_all(sqlite3 *db, struct beside *b, struct pending *p, int n)
{
	enum dx_result rc = DX_OK;
	pthread_t thread;
	int err;

	if (b && n > 1) {
		b->name = p[0].name;
		if (!(b->db = db_open_beside(db, DB_DAEMON)))
			return DX_DB;
		if ((err = pthread_create(&thread, NULL, build_beside, b)) != 0) {
			log_notice("database %s: no thread for the full-text index %s: %s", b->path, b->name,
				   strerror(err));
			db_close(b->db);
			return DX_DB;
		}
	}
	for (int i = b && n > 1; rc == DX_OK && i < n; i++)
		rc = build_in_place(db, &p[i]);
	if (b && n > 1) {
		pthread_join(thread, NULL);
		if (rc != DX_OK || b->rc != DX_OK || copy_in(db, b->name) != DX_OK)
			return DX_DB;
		p[0].secs = b->secs;
		p[0].beside = 1;
	}
	for (int i = 0; rc == DX_OK && i < n; i++)
		rc = db_exec(db, p[i].triggers);
	return rc;
}

/* The heap's free pages given back before the build: what the walk and the
 * B-tree builds freed would otherwise stay resident beside it.  Always 1. */
static int trimmed(void)
{
#ifdef HAVE_MALLOC_TRIM
	malloc_trim(0);
#endif
	return 1;
}

/* One attempt, on the daemon's connection db, its page cache small
 * meanwhile: scratch NULL for all in place.  *n counts the indexes built. */
static enum dx_result build_once(sqlite3 *db, struct beside *b, const char *scratch, int *n)
{
	enum dx_result rc = DX_DB;
	struct pending *p = NULL;
	char *cache = NULL;
	int attached = 0;

	*n = 0;
	if (db_first_text(db, "PRAGMA cache_size", NULL, &cache) <= 0)
		return DX_DB;
	if (scratch)
		attached = attach_scratch(db, scratch, 1) == DX_OK;
	if (attached == !!scratch &&
	    (!attached || db_exec(db, "PRAGMA " SCRATCH ".cache_size = " CACHE_SCAN) == DX_OK) &&
	    db_exec(db, "PRAGMA cache_size = " CACHE_BUILD "; PRAGMA shrink_memory") == DX_OK && trimmed() &&
	    db_exec(db, "BEGIN") == DX_OK && take_pending(db, &p, n) == DX_OK &&
	    (*n == 0 || build_all(db, attached ? b : NULL, p, *n) == DX_OK))
		rc = db_commit(db, "full-text build");
	/* Said once committed: an attempt rolled back built nothing. */
	for (int i = 0; rc == DX_OK && i < *n; i++)
		log_info("database %s: built the deferred full-text index %s in %.2f s%s", b->path, p[i].name,
			 p[i].secs, p[i].beside ? " (beside the others)" : "");
	db_rollback(db);
	if (attached && db_exec(db, "DETACH " SCRATCH) != DX_OK)
		rc = DX_DB;
	if (db_cache_restore(db, cache) != DX_OK)
		rc = DX_DB;
	free_pending(p, *n);
	return rc;
}

enum dx_result fts_build_deferred(sqlite3 *daemon)
{
	struct beside b = { .path = sqlite3_db_filename(daemon, "main") };
	struct timespec t0;
	enum dx_result rc = DX_DB;
	char *scratch;
	int n = 0;

	switch (db_first_text(daemon, DB_FTS_PENDING_SQL, NULL, NULL)) {
	case 0:
		return DX_OK;
	case 1:
		break;
	default:
		return DX_DB;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!(scratch = sqlite3_mprintf("%s" SCRATCH_SUFFIX, b.path)))
		return db_error_in(daemon, "full-text build: out of memory");
	b.scratch = scratch;
	/* Any failure beside (no thread, no room for the scratch file or for
	 * its copy) is logged, and the indexes are built in place, the scratch
	 * file's room given back first. */
	if (make_scratch(b.path, scratch)) {
		rc = build_once(daemon, &b, scratch, &n);
		if (unlink(scratch) < 0)
			log_notice("database %s: cannot remove %s: %s", b.path, scratch, strerror(errno));
	}
	if (rc != DX_OK) {
		log_notice(
			"database %s: the full-text indexes are built in place, one after the other "
			"(not beside, above)",
			b.path);
		rc = build_once(daemon, &b, NULL, &n);
	}
	if (rc == DX_OK && n > 0)
		log_info("database %s: the %d deferred full-text indexes are built in %.2f s", b.path, n,
			 since(&t0));
	sqlite3_free(scratch);
	return rc;
}
