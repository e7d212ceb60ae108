/* mirror.h - writing the mirror tables: conversations, messages, participants,
 * walk checkpoints and sync_runs, through statements prepared once */
#ifndef DEXSYNC_MIRROR_H
#define DEXSYNC_MIRROR_H

#include <jansson.h>
#include <sqlite3.h>

#include "page.h"
#include "result.h"

struct mirror;

enum upsert_result {
	UPSERT_ERROR = -1,
	UPSERT_INSERTED,
	UPSERT_CHANGED,
	UPSERT_UNCHANGED,
};

struct walk_counts {
	long pages, seen, inserted, changed, unchanged, gone, details, requests, retries;
};

/* Prepare the statements and the TEMP table of rows seen by this walk.
 * Every function below that can fail returns DX_OK, or DX_DB (DX_NOMEM
 * where it says) after logging the database's message. */
struct mirror *mirror_open(sqlite3 *db);
void mirror_close(struct mirror *m);

enum dx_result mirror_begin(struct mirror *m);
enum dx_result mirror_commit(struct mirror *m);
void mirror_rollback(struct mirror *m);

/* The end of a walk, complete or not: empty its TEMP tables (the rows and
 * cursors it saw), giving their space back. */
enum dx_result mirror_walk_end(struct mirror *m);

/* Store one listed conversation and its last message (an upsert_result
 * rather than a dx_result: which of three successes it was counts).  row->json must be
 * set (the item's compact JSON, stored as raw); a row whose raw equals the
 * stored one is not written at all.  *rowid gets the row's rowid. */
enum upsert_result mirror_upsert(struct mirror *m, const struct conv_row *row, const char *now,
				 sqlite3_int64 *rowid);

/* Rows are expected to be new (an initial mirror): each is inserted first,
 * and looked for only when its id is taken. */
void mirror_expect_new(struct mirror *m);

/* Remember a row as listed in this walk (for gone_at); forget all with reset. */
enum dx_result mirror_seen(struct mirror *m, sqlite3_int64 rowid);
enum dx_result mirror_seen_reset(struct mirror *m);
/* Set gone_at on live rows this walk did not list, up to last_rowid (the
 * last row when it started: rows inserted since, by the outbox, are not
 * gone); *gone gets the count. */
enum dx_result mirror_mark_gone(struct mirror *m, const char *now, sqlite3_int64 last_rowid, long *gone);
/* The largest rowid of conversations (0 when empty). */
enum dx_result mirror_last_rowid(struct mirror *m, sqlite3_int64 *rowid);

/* Add cursor to the set of cursors of this walk: DX_LOOPING if it was
 * there already (the server is looping; not logged), DX_OK if new, DX_DB.
 * Reset empties the set. */
enum dx_result mirror_cursor_repeated(struct mirror *m, const char *cursor);
enum dx_result mirror_cursors_reset(struct mirror *m);

/* The stored cursor of an interrupted walk for key (malloc'd), NULL if none. */
enum dx_result mirror_cursor_get(struct mirror *m, const char *key, char **cursor);
/* Store (cursor != NULL) or clear the cursor for key. */
enum dx_result mirror_cursor_set(struct mirror *m, const char *key, const char *cursor);

/* A conversation id as stored: it may hold a NUL, len says where it ends. */
struct mirror_id {
	char *id; /* NUL-terminated as well */
	size_t len;
};

/* Up to limit ids that need GET /conversations/:id, oldest change first,
 * then those whose detail failed permanently (behind them, oldest first).
 * *n gets the count (ids malloc'd into *ids, free with mirror_ids_free);
 * DX_NOMEM or DX_DB with none. */
enum dx_result mirror_details_due(struct mirror *m, long limit, struct mirror_id **ids, int *n);
void mirror_ids_free(struct mirror_id *ids, int n);
/* Store a retrieved conversation and replace its participants, in a
 * transaction of its own (DX_NOMEM, DX_DB). */
enum dx_result mirror_store_detail(struct mirror *m, const struct mirror_id *id, json_t *detail,
				   long *details);
/* Stop asking for the detail of id (it no longer exists upstream). */
enum dx_result mirror_detail_done(struct mirror *m, const struct mirror_id *id);
/* Its detail failed permanently: ask for it after the others from now on
 * (detail_needed = 2), until it changes again or its detail comes. */
enum dx_result mirror_detail_behind(struct mirror *m, const struct mirror_id *id);

/* sync_runs bookkeeping.  Between start and finish each transaction of
 * mirror_begin holds the run's id in sync_state ('history:run'), where the
 * history trigger finds it (the changes it makes are this walk's events),
 * and commits the counts n, which the walk keeps, into the run's row. */
enum dx_result mirror_run_start(struct mirror *m, const char *now, int resumed, const struct walk_counts *n);
enum dx_result mirror_run_finish(struct mirror *m, const char *outcome, const char *error);
/* A walk of everything from its first page, started at started, listed
 * every live row: the old value of a later change was seen at least then
 * ('history:seen_all', the earliest `after` of an event). */
enum dx_result mirror_history_seen_all(struct mirror *m, const char *started);

#endif
