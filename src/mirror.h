/* mirror.h - writing the mirror tables: conversations, messages, participants,
 * walk checkpoints and sync_runs, through statements prepared once */
#ifndef DEXSYNC_MIRROR_H
#define DEXSYNC_MIRROR_H

#include <jansson.h>
#include <sqlite3.h>

#include "page.h"

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

/* Prepare the statements and the TEMP table of rows seen by this walk. */
struct mirror *mirror_open(sqlite3 *db);
void mirror_close(struct mirror *m);

int mirror_begin(struct mirror *m);
int mirror_commit(struct mirror *m);
void mirror_rollback(struct mirror *m);

/* Store one listed conversation and its last message.  row->json must be
 * set (the item's compact JSON, stored as raw); a row whose raw equals the
 * stored one is not written at all.  *rowid gets the row's rowid. */
enum upsert_result mirror_upsert(struct mirror *m, const struct conv_row *row, const char *now,
				 sqlite3_int64 *rowid);

/* Rows are expected to be new (an initial mirror): each is inserted first,
 * and looked for only when its id is taken. */
void mirror_expect_new(struct mirror *m);

/* Remember a row as listed in this walk (for gone_at); forget all with reset. */
int mirror_seen(struct mirror *m, sqlite3_int64 rowid);
int mirror_seen_reset(struct mirror *m);
/* Set gone_at on live rows this walk did not list, up to last_rowid (the
 * last row when it started: rows inserted since, by the outbox, are not
 * gone); *gone gets the count. */
int mirror_mark_gone(struct mirror *m, const char *now, sqlite3_int64 last_rowid, long *gone);
/* The largest rowid of conversations (0 when empty). */
int mirror_last_rowid(struct mirror *m, sqlite3_int64 *rowid);

/* Add cursor to the set of cursors of this walk: 1 if it was there already
 * (the server is looping), 0 if new, -1 on error.  Reset empties the set. */
int mirror_cursor_repeated(struct mirror *m, const char *cursor);
int mirror_cursors_reset(struct mirror *m);

/* The stored cursor of an interrupted walk for key (malloc'd), NULL if none.
 * Returns -1 on a database error. */
int mirror_cursor_get(struct mirror *m, const char *key, char **cursor);
/* Store (cursor != NULL) or clear the cursor for key. */
int mirror_cursor_set(struct mirror *m, const char *key, const char *cursor);

/* A conversation id as stored: it may hold a NUL, len says where it ends. */
struct mirror_id {
	char *id;                   /* NUL-terminated as well */
	size_t len;
};

/* Up to limit ids that need GET /conversations/:id, oldest change first,
 * then those whose detail failed permanently (behind them, oldest first).
 * Returns the count (ids malloc'd into *ids, free with mirror_ids_free) or -1. */
int mirror_details_due(struct mirror *m, long limit, struct mirror_id **ids);
void mirror_ids_free(struct mirror_id *ids, int n);
/* Store a retrieved conversation and replace its participants. */
int mirror_store_detail(struct mirror *m, const struct mirror_id *id, json_t *detail);
/* Stop asking for the detail of id (it no longer exists upstream). */
int mirror_detail_done(struct mirror *m, const struct mirror_id *id);
/* Its detail failed permanently: ask for it after the others from now on
 * (detail_needed = 2), until it changes again or its detail comes. */
int mirror_detail_behind(struct mirror *m, const struct mirror_id *id);

/* sync_runs bookkeeping.  Between start and finish the run's id is in
 * sync_state ('history:run'), where the history trigger finds it: changes
 * made meanwhile are recorded as this walk's events. */
long long mirror_run_start(struct mirror *m, const char *now, int resumed);
int mirror_run_finish(struct mirror *m, long long run, const char *outcome,
		      const struct walk_counts *n, const char *error);
/* A walk of everything from its first page, started at started, listed
 * every live row: the old value of a later change was seen at least then
 * ('history:seen_all', the earliest `after` of an event). */
int mirror_history_seen_all(struct mirror *m, const char *started);

#endif
