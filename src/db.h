/* db.h - opening the mirror database and keeping its schema current */
#ifndef DEXSYNC_DB_H
#define DEXSYNC_DB_H

#include <sqlite3.h>
#include <stddef.h>

#include "result.h"

enum db_mode {
	DB_DAEMON,   /* create if missing, synchronous=NORMAL (WAL keeps it safe) */
	DB_CLIENT,   /* must exist, synchronous=FULL: a queued write survives power loss */
	DB_READONLY, /* must exist and be a current dexsync mirror; never written */
};

/* Open path.  DB_DAEMON and DB_CLIENT set WAL, busy_timeout and the other
 * pragmas, and apply pending migrations in one transaction (taking the
 * write lock only when there is one to apply).  DB_READONLY opens the file
 * read-only, changes nothing in it, and refuses a file that is not a
 * dexsync mirror or whose schema is not this program's.  NULL after
 * logging the reason. */
sqlite3 *db_open(const char *path, enum db_mode mode);
void db_close(sqlite3 *db);

/* path as SQLite is to open it: a name starting "file:" would be read as
 * a URI (Debian's SQLite reads them in every open), naming another file,
 * so it gets "./" before it.  A malloc'd copy, or NULL out of memory. */
char *db_file_name(const char *path);

/* A second connection to the file db has open, for another thread:
 * read-only (query_only) for DB_READONLY, else read-write with the
 * daemon's busy timeout; the WAL stays when it closes.  Opened by the name
 * SQLite resolved for db, never through a link, and without db_open's
 * header check, whose open and close of the file would drop the POSIX
 * locks this process holds on it (SQLite's own connections share theirs).
 * Call it in db's thread.  NULL after a notice (the callers go on
 * without it), also when the name no longer leads to db's file (replaced
 * or removed meanwhile). */
sqlite3 *db_open_beside(sqlite3 *db, enum db_mode mode);

/* The schema version this build creates. */
int db_schema_version(void);

/* Log a database error as "[who: ]database FILE: MESSAGE", the one form
 * every database error takes: FILE is path, or db's main file when path is
 * NULL; MESSAGE is msg, or SQLite's last message on db when msg is NULL;
 * who (NULL: none) names the part of dexsync that speaks.  Returns DX_DB. */
enum dx_result db_error_at(const char *who, sqlite3 *db, const char *path, const char *msg);
/* The same, of db's main file, with SQLite's last message on db. */
enum dx_result db_error(sqlite3 *db);
/* The same, with what failed before SQLite's message ("WHAT: MESSAGE"). */
enum dx_result db_error_in(sqlite3 *db, const char *what);

/* Run SQL with no result rows; DX_OK, or DX_DB after logging. */
enum dx_result db_exec(sqlite3 *db, const char *sql);

/* A write transaction (BEGIN IMMEDIATE: the write lock at once, waiting
 * busy_timeout for it), its commit, and its rollback, which does nothing
 * when no transaction is open (SQLite may have rolled it back itself).
 * DX_OK, or DX_DB after logging, who (may be NULL) first. */
enum dx_result db_begin(sqlite3 *db, const char *who);
enum dx_result db_commit(sqlite3 *db, const char *who);
void db_rollback(sqlite3 *db);

/* Prepare a statement that lives as long as the connection (SQLITE_PREPARE_PERSISTENT);
 * logs and returns NULL on error. */
sqlite3_stmt *db_prepare(sqlite3 *db, const char *sql);

/* Step st, a statement that returns no rows, then reset it and clear its
 * bindings.  DX_OK, or DX_DB after logging. */
enum dx_result db_run(sqlite3_stmt *st);
/* Step st once: DX_OK with *row 1 (a row to read, then db_reset) or 0 (no
 * more: st is reset already), or DX_DB after logging (st reset).  who as
 * for db_error_at. */
enum dx_result db_step(sqlite3_stmt *st, const char *who, int *row);
/* The first column of the first row of sql, with param (NULL: none)
 * bound to ?1, as a string for sqlite3_free into *text (text NULL: only
 * whether there is a row): 1 with a row, 0 without, -1 after logging an
 * error. */
int db_first_text(sqlite3 *db, const char *sql, const char *param, char **text);
/* Reset st and clear its bindings, for its next use. */
void db_reset(sqlite3_stmt *st);

/* Bind the string s (NULL: SQL NULL) to parameter i; SQLite does not copy
 * it, so it must stay until the statement is reset. */
void db_bind_text(sqlite3_stmt *st, int i, const char *s);
/* Bind the len bytes at s (NULL: SQL NULL) as text: a string from the
 * server may hold a NUL, and is stored whole. */
void db_bind_len(sqlite3_stmt *st, int i, const char *s, size_t len);

/* An initial mirror (an empty conversations table) drops the schema's own
 * secondary indexes of the mirror tables (never one a user created) and
 * builds them once at its end: inserting a million rows into several
 * random-order indexes costs more than the rows, sorting them once costs a
 * fraction.  The indexes' SQL waits in sync_state under DB_DEFERRED, so a
 * walk cut short goes on without them, the daemon's next start or a later
 * migration builds them.  Each index is built in a transaction of its own,
 * so the write lock is never held for all of them at once.
 * db_indexes_defer sets *initial to 1 for an initial mirror, else 0; both
 * return DX_OK, or DX_DB after logging an error. */
#define DB_DEFERRED "deferred_index:"
/* The keys of the deferred full-text indexes among them (a GLOB), and the
 * query that tells whether any waits (for db_first_text: 1 row or none). */
#define DB_DEFERRED_FTS	   DB_DEFERRED "*_fts"
#define DB_FTS_PENDING_SQL "SELECT 1 FROM sync_state WHERE key GLOB '" DB_DEFERRED_FTS "'"
enum dx_result db_indexes_defer(sqlite3 *db, int *initial);
enum dx_result db_indexes_restore(sqlite3 *db);

/* The daemon's page cache (db_open, DB_DAEMON), and the smaller one
 * db_cache_small sets (SQLite's cache_size: negative is KiB). */
#define DB_DAEMON_CACHE "-1000"
#define DB_SMALL_CACHE	"-500"

/* Building an index sorts in memory as large as the page cache (at the
 * least SQLite's PMA size, which db_sort_small lowers), and a walk ends with
 * such sorts (the deferred indexes, the set of rows it saw) while the cache
 * it filled is still held.  db_cache_small empties the cache, gives its
 * memory back to the system and keeps it small, so that the sort takes its
 * place instead of adding to it (building an index writes in order and
 * needs little cache); *old gets the size db_cache_restore puts back (and
 * frees).  DX_OK, or DX_DB after logging. */
enum dx_result db_cache_small(sqlite3 *db, char **old);
enum dx_result db_cache_restore(sqlite3 *db, char *old);

/* No memory statistics in SQLite, for the whole process: they take one
 * global mutex for every allocation, which threads working at once then
 * contend for (the two full-text builds at the end of an initial mirror:
 * 6.49 against 6.68 s at 1,000,000, the means of four runs each,
 * alternated; dexsync search's two threads were slower than one with
 * them), and nothing here reads them.  Only before SQLite is first used. */
void db_no_memory_stats(void);

/* Lower the memory a sort may take before it spills to a temporary file
 * (SQLite's minimum PMA size, 1 MiB by default) to DB_SORT_PAGES pages, for
 * the whole process: the index builds at the end of an initial mirror then
 * fit in DB_SMALL_CACHE.  Only before SQLite is first used (a connection
 * opened); DX_OK, or DX_DB if SQLite refused. */
#define DB_SORT_PAGES 64
enum dx_result db_sort_small(void);

/* Current UTC time as YYYY-MM-DDTHH:MM:SSZ into buf (at least 21 bytes). */
void db_now(char *buf, size_t size);

/* How long a connection waits for another's write lock.  The daemon's
 * transactions last about a second at most, and queuing from the command
 * line must never fail because a walk is running: it waits a minute. */
#define DB_BUSY_TIMEOUT_MS	  10000
#define DB_CLIENT_BUSY_TIMEOUT_MS 60000

/* Wait up to ms for a lock, trying every millisecond.  SQLite's own busy
 * handler tries every 100 ms once it has waited a while, and so never sees
 * the lock free between two of a walk's transactions, which follow one
 * another within microseconds; a walk leaves it free a few milliseconds
 * after each (db_write_turn).  A wait of this process's other thread is
 * also seen by db_write_wanted. */
void db_busy_timeout(sqlite3 *db, int ms);

/* Is another thread of this process waiting for the write lock now? */
int db_write_wanted(void);

/* After a commit: leave the write lock free to whoever waits for it, for a
 * few milliseconds, or until this process's other thread waiting for it
 * has it (at most a second). */
void db_write_turn(void);

#endif
