/* mirror.c - the mirror tables, written through statements prepared once */
#include "config.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "mirror.h"

enum {
	S_PEEK,
	S_LOOKUP,
	S_INSERT,
	S_UPDATE,
	S_MESSAGE,
	S_SEEN,
	S_SEEN_RESET,
	S_SEEN_INDEX,
	S_GONE,
	S_LOOP_ADD,
	S_LOOP_RESET,
	S_CURSOR_GET,
	S_CURSOR_SET,
	S_CURSOR_DEL,
	S_DUE,
	S_DUE_BEHIND,
	S_DETAIL,
	S_DETAIL_DONE,
	S_DETAIL_BEHIND,
	S_PART_DEL,
	S_PART_ADD,
	S_RUN_ABANDONED,
	S_RUN_START,
	S_RUN_COUNTS,
	S_RUN_FINISH,
	S_HISTORY_SET,
	S_HISTORY_DEL,
	S_LAST_ROWID,
	S_COUNT
};

static const char *const sql[S_COUNT] = {
	/* 1 when the stored copy differs or was gone, and the rowid; no row
	 * when new.  PEEK tries the row after the previous one, by rowid. */
	[S_PEEK] =
		"SELECT raw IS NOT ?2 OR gone_at IS NOT NULL, rowid\n"
		"FROM conversations\n"
		"WHERE rowid = ?3 AND id = ?1",
	[S_LOOKUP] =
		"SELECT raw IS NOT ?2 OR gone_at IS NOT NULL, rowid\n"
		"FROM conversations\n"
		"WHERE id = ?1",
	[S_INSERT] =
		"INSERT INTO conversations(id, status, subject, created_at, last_message_id,\n"
		"	last_message_text, user_id, raw, first_seen_at, changed_at)\n"
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)\n"
		"ON CONFLICT(id) DO NOTHING",
	[S_UPDATE] =
		"UPDATE conversations\n"
		"SET status = ?2, subject = ?3, created_at = ?4, last_message_id = ?5,\n"
		"	last_message_text = ?6, user_id = ?7, raw = ?8, changed_at = ?9,\n"
		"	gone_at = NULL, detail_needed = 1\n"
		"WHERE id = ?1",
	[S_MESSAGE] =
		"INSERT INTO messages(id, conversation_id, text, origin, raw)\n"
		"VALUES (?1, ?2, ?3, 'listed', ?4)\n"
		"ON CONFLICT(id) DO UPDATE\n"
		"SET text = excluded.text, raw = excluded.raw\n"
		"WHERE origin = 'listed' AND raw IS NOT excluded.raw",
	[S_SEEN] = "INSERT INTO temp.walk_seen(rid) VALUES (?1)",
	[S_SEEN_RESET] = "DELETE FROM temp.walk_seen",
	[S_SEEN_INDEX] = "CREATE INDEX IF NOT EXISTS temp.walk_seen_rid ON walk_seen(rid)",
	/* A row inserted since the walk started (a rowid past the last one
	 * then) and not listed by it was created by the outbox meanwhile: it
	 * is not gone. */
	[S_GONE] =
		"UPDATE conversations\n"
		"SET gone_at = ?1\n"
		"WHERE gone_at IS NULL AND rowid NOT IN (SELECT rid FROM temp.walk_seen)\n"
		"	AND rowid <= ?2",
	[S_LAST_ROWID] = "SELECT coalesce(max(rowid), 0) FROM conversations",
	[S_LOOP_ADD] = "INSERT INTO temp.walk_cursors(cursor) VALUES (?1)",
	[S_LOOP_RESET] = "DELETE FROM temp.walk_cursors",
	[S_CURSOR_GET] = "SELECT value FROM sync_state WHERE key = ?1",
	[S_CURSOR_SET] =
		"INSERT INTO sync_state(key, value) VALUES (?1, ?2)\n"
		"ON CONFLICT(key) DO UPDATE SET value = excluded.value",
	[S_CURSOR_DEL] = "DELETE FROM sync_state WHERE key = ?1",
	/* detail_needed is 1 (new or changed) or 2 (its detail failed
	 * permanently: asked for after the others).  The bare "detail_needed"
	 * term lets both walk the partial index conversations_detail_needed in
	 * changed_at order and stop at the limit, without a sort. */
	[S_DUE] =
		"SELECT id\n"
		"FROM conversations\n"
		"WHERE detail_needed AND detail_needed = 1 AND gone_at IS NULL\n"
		"ORDER BY changed_at\n"
		"LIMIT ?1",
	[S_DUE_BEHIND] =
		"SELECT id\n"
		"FROM conversations\n"
		"WHERE detail_needed AND detail_needed <> 1 AND gone_at IS NULL\n"
		"ORDER BY changed_at\n"
		"LIMIT ?1",
	[S_DETAIL] = "UPDATE conversations SET detail = ?2, detail_needed = 0 WHERE id = ?1",
	[S_DETAIL_DONE] = "UPDATE conversations SET detail_needed = 0 WHERE id = ?1",
	[S_DETAIL_BEHIND] = "UPDATE conversations SET detail_needed = 2 WHERE id = ?1 AND detail_needed = 1",
	[S_PART_DEL] = "DELETE FROM participants WHERE conversation_id = ?1",
	[S_PART_ADD] =
		"INSERT INTO participants(conversation_id, position, user_id, raw)\n"
		"VALUES (?1, ?2, ?3, ?4)",
	/* A walk still 'running' when another starts was cut short by a
	 * SIGKILL or a crash (only the daemon holding the lock walks), or its
	 * end could not be written (walk.c says so in the log). */
	[S_RUN_ABANDONED] =
		"UPDATE sync_runs\n"
		"SET outcome = 'interrupted',\n"
		"	error = coalesce(error, 'the walk''s end was not recorded: its daemon was killed or crashed, or the database refused the write')\n"
		"WHERE outcome = 'running'",
	[S_RUN_START] = "INSERT INTO sync_runs(started_at, resumed) VALUES (?1, ?2)",
	[S_RUN_COUNTS] =
		"UPDATE sync_runs\n"
		"SET pages = ?2, seen = ?3, inserted = ?4, changed = ?5, unchanged = ?6,\n"
		"	gone = ?7, details = ?8, requests = ?9, retries = ?10\n"
		"WHERE id = ?1",
	[S_RUN_FINISH] =
		"UPDATE sync_runs\n"
		"SET finished_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now'), outcome = ?2, error = ?3\n"
		"WHERE id = ?1",
	/* The keys the history trigger reads (src/sql/0004-history.sql). */
	[S_HISTORY_SET] =
		"INSERT INTO sync_state(key, value) VALUES (?1, ?2)\n"
		"ON CONFLICT(key) DO UPDATE SET value = excluded.value",
	[S_HISTORY_DEL] = "DELETE FROM sync_state WHERE key = 'history:run'",
};

struct mirror {
	sqlite3 *db;
	sqlite3_stmt *st[S_COUNT];
	sqlite3_int64 prev; /* rowid of the row stored last */
	int expect_new;	    /* insert first, look only when the id is taken */
	char run[32];	    /* the walk's sync_runs id, "" before it starts */
	long long run_id;
	const struct walk_counts *n; /* the walk's counts, kept by walk.c */
};

/* Step statement which, one that returns no rows; DX_OK or DX_DB. */
static enum dx_result run(struct mirror *m, int which)
{
	return db_run(m->st[which]);
}

struct mirror *mirror_open(sqlite3 *db)
{
	struct mirror *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->db = db;
	/* The rowids a walk saw, appended in list order: a keyless table grows
	 * at its end, so a page's commit writes a page or two of it, where a
	 * keyed one would rewrite a random page per entry.  The set is indexed
	 * once, by the gone step.  The temp journal is kept in memory: nothing
	 * in TEMP has to survive a crash.  The set is only ever appended to and
	 * sorted once, so its cache can be small (SQLite's default is 2 MiB). */
	if (db_exec(db,
		    "PRAGMA temp.journal_mode = MEMORY; PRAGMA temp.cache_size = -256;"
		    "CREATE TEMP TABLE IF NOT EXISTS walk_seen(rid INTEGER);"
		    "CREATE TEMP TABLE IF NOT EXISTS walk_cursors(cursor TEXT PRIMARY KEY) WITHOUT ROWID") !=
	    DX_OK)
		goto fail;
	for (int i = 0; i < S_COUNT; i++)
		if (!(m->st[i] = db_prepare(db, sql[i])))
			goto fail;
	return m;
fail:
	mirror_close(m);
	return NULL;
}

void mirror_close(struct mirror *m)
{
	if (!m)
		return;
	for (int i = 0; i < S_COUNT; i++)
		sqlite3_finalize(m->st[i]);
	free(m);
}

static enum dx_result history_set(struct mirror *m, const char *key, const char *value);
static enum dx_result run_counts(struct mirror *m);

/* A walk's transaction holds the run's id in sync_state ('history:run'),
 * where the history trigger finds it, from its start to its commit: it is
 * never committed, so no other connection ever sees it, and a change made
 * with sqlite3 during a walk, or after a walk a crash cut short, is no
 * walk's event.  Each commits the run's counts too, so that `dexsync
 * status` shows a long walk's progress, and one a crash cut short what it
 * stored. */
enum dx_result mirror_begin(struct mirror *m)
{
	if (db_begin(m->db, "walk") != DX_OK)
		return DX_DB;
	if (*m->run && history_set(m, "history:run", m->run) != DX_OK) {
		db_rollback(m->db);
		return DX_DB;
	}
	return DX_OK;
}

enum dx_result mirror_commit(struct mirror *m)
{
	if (*m->run && (run(m, S_HISTORY_DEL) != DX_OK || run_counts(m) != DX_OK))
		return DX_DB;
	return db_commit(m->db, "walk");
}

void mirror_rollback(struct mirror *m)
{
	db_rollback(m->db);
}

enum dx_result mirror_walk_end(struct mirror *m)
{
	/* Empty the walk's TEMP tables with the temp journal off: under the
	 * memory journal, freeing a million-row table would copy every page of
	 * it into RAM first, for a rollback nobody needs. */
	return db_exec(m->db,
		       "PRAGMA temp.journal_mode = OFF;"
		       "DROP INDEX IF EXISTS temp.walk_seen_rid; DELETE FROM temp.walk_seen;"
		       "DELETE FROM temp.walk_cursors;"
		       "PRAGMA temp.journal_mode = MEMORY");
}

static void bind_row(sqlite3_stmt *st, const struct conv_row *row, const char *now)
{
	db_bind_len(st, 1, row->id, row->id_len);
	db_bind_len(st, 2, row->status, row->status_len);
	db_bind_len(st, 3, row->subject, row->subject_len);
	db_bind_len(st, 4, row->created_at, row->created_at_len);
	db_bind_len(st, 5, row->last_message_id, row->last_message_id_len);
	db_bind_len(st, 6, row->last_message_text, row->last_message_text_len);
	db_bind_len(st, 7, row->user_id, row->user_id_len);
	db_bind_len(st, 8, row->json, row->json_len);
	db_bind_text(st, 9, now);
}

/* The listed last message goes to messages, once per change of it. */
static enum dx_result store_last_message(struct mirror *m, const struct conv_row *row)
{
	sqlite3_stmt *st = m->st[S_MESSAGE];
	char *raw = NULL;
	enum dx_result rc;

	if (!row->last_message_id)
		return DX_OK;
	if (!row->message_json && !(raw = json_dumps(row->last_message, JSON_COMPACT)))
		return DX_NOMEM;
	db_bind_len(st, 1, row->last_message_id, row->last_message_id_len);
	db_bind_len(st, 2, row->id, row->id_len);
	db_bind_len(st, 3, row->last_message_text, row->last_message_text_len);
	if (raw)
		db_bind_text(st, 4, raw);
	else
		db_bind_len(st, 4, row->message_json, row->message_json_len);
	rc = run(m, S_MESSAGE);
	free(raw);
	return rc;
}

static void bind_key(sqlite3_stmt *st, const struct conv_row *row)
{
	db_bind_len(st, 1, row->id, row->id_len);
	db_bind_len(st, 2, row->json, row->json_len);
}

/* Step a lookup: 1 and *differs with a row, 0 without one, -1 on error. */
static int lookup(struct mirror *m, int which, int *differs, sqlite3_int64 *rowid)
{
	sqlite3_stmt *st = m->st[which];
	int row;

	if (db_step(st, NULL, &row) != DX_OK)
		return -1;
	if (row) {
		*differs = sqlite3_column_int(st, 0);
		*rowid = sqlite3_column_int64(st, 1);
		db_reset(st);
	}
	return row;
}

/* Is the row stored, and does it differ?  A walk lists rows in the order
 * it listed them before, which is the order they were inserted in, so the
 * row is most often the one after the previous: a look at the next rowid
 * reads table pages in order, where the lookup by id reads a random page of
 * the id index per row (at a million rows, most of an unchanged walk). */
static int find(struct mirror *m, const struct conv_row *row, int *differs, sqlite3_int64 *rowid)
{
	int rc;

	if (m->prev > 0) {
		sqlite3_bind_int64(m->st[S_PEEK], 3, m->prev + 1);
		bind_key(m->st[S_PEEK], row);
		if ((rc = lookup(m, S_PEEK, differs, rowid)) != 0)
			return rc;
	}
	bind_key(m->st[S_LOOKUP], row);
	return lookup(m, S_LOOKUP, differs, rowid);
}

void mirror_expect_new(struct mirror *m)
{
	m->expect_new = 1;
}

/* Insert row unless its id is taken: 1 inserted (*rowid set), 0 taken,
 * -1 on error. */
static int insert(struct mirror *m, const struct conv_row *row, const char *now, sqlite3_int64 *rowid)
{
	bind_row(m->st[S_INSERT], row, now);
	if (run(m, S_INSERT) != DX_OK)
		return -1;
	if (sqlite3_changes(m->db) == 0)
		return 0;
	*rowid = sqlite3_last_insert_rowid(m->db);
	return 1;
}

/* A row was written: its last message next, and the row after it is where
 * the next one is looked for first. */
static enum upsert_result written(struct mirror *m, const struct conv_row *row, sqlite3_int64 rowid,
				  enum upsert_result res)
{
	m->prev = rowid;
	return store_last_message(m, row) != DX_OK ? UPSERT_ERROR : res;
}

enum upsert_result mirror_upsert(struct mirror *m, const struct conv_row *row, const char *now,
				 sqlite3_int64 *rowid)
{
	int differs = 0, found;

	/* In an initial mirror nearly every row is new: it is inserted straight
	 * away, and looked for only when its id is taken (listed twice). */
	if (m->expect_new) {
		switch (insert(m, row, now, rowid)) {
		case 1:
			return written(m, row, *rowid, UPSERT_INSERTED);
		case -1:
			return UPSERT_ERROR;
		}
	}
	if ((found = find(m, row, &differs, rowid)) < 0)
		return UPSERT_ERROR;
	if (!found)
		return insert(m, row, now, rowid) == 1 ? written(m, row, *rowid, UPSERT_INSERTED) :
							 UPSERT_ERROR;
	m->prev = *rowid;
	if (!differs)
		return UPSERT_UNCHANGED;
	bind_row(m->st[S_UPDATE], row, now);
	if (run(m, S_UPDATE) != DX_OK)
		return UPSERT_ERROR;
	return written(m, row, *rowid, UPSERT_CHANGED);
}

enum dx_result mirror_seen(struct mirror *m, sqlite3_int64 rowid)
{
	sqlite3_bind_int64(m->st[S_SEEN], 1, rowid);
	return run(m, S_SEEN);
}

enum dx_result mirror_seen_reset(struct mirror *m)
{
	return run(m, S_SEEN_RESET);
}

enum dx_result mirror_cursor_repeated(struct mirror *m, const char *cursor)
{
	sqlite3_stmt *st = m->st[S_LOOP_ADD];
	int rc;

	db_bind_text(st, 1, cursor);
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE && (rc & 0xff) != SQLITE_CONSTRAINT)
		db_error(m->db);
	db_reset(st);
	return rc == SQLITE_DONE ? DX_OK : (rc & 0xff) == SQLITE_CONSTRAINT ? DX_LOOPING : DX_DB;
}

enum dx_result mirror_cursors_reset(struct mirror *m)
{
	return run(m, S_LOOP_RESET);
}

enum dx_result mirror_last_rowid(struct mirror *m, sqlite3_int64 *rowid)
{
	sqlite3_stmt *st = m->st[S_LAST_ROWID];
	int row;

	*rowid = 0;
	if (db_step(st, NULL, &row) != DX_OK)
		return DX_DB;
	assert(row); /* an aggregate has a row */
	*rowid = sqlite3_column_int64(st, 0);
	db_reset(st);
	return DX_OK;
}

enum dx_result mirror_mark_gone(struct mirror *m, const char *now, sqlite3_int64 last_rowid, long *gone)
{
	long before;

	/* Index the rowids now, once: SQLite's sorter does it in bounded memory,
	 * where NOT IN (SELECT ...) would build a million-entry set in RAM.
	 * The live rowids come from a partial index (WHERE gone_at IS NULL),
	 * not from the table: a million rows are read as 20 MB, not 1.4 GB. */
	if (run(m, S_SEEN_INDEX) != DX_OK || mirror_begin(m) != DX_OK)
		return DX_DB;
	db_bind_text(m->st[S_GONE], 1, now);
	sqlite3_bind_int64(m->st[S_GONE], 2, last_rowid);
	if (run(m, S_GONE) != DX_OK) {
		mirror_rollback(m);
		return DX_DB;
	}
	before = *gone;
	*gone = sqlite3_changes(m->db); /* counted in the commit */
	if (mirror_commit(m) != DX_OK) {
		mirror_rollback(m);
		*gone = before;
		return DX_DB;
	}
	return DX_OK;
}

enum dx_result mirror_cursor_get(struct mirror *m, const char *key, char **cursor)
{
	sqlite3_stmt *st = m->st[S_CURSOR_GET];
	enum dx_result rc = DX_OK;
	int row;

	*cursor = NULL;
	db_bind_text(st, 1, key);
	if (db_step(st, NULL, &row) != DX_OK)
		return DX_DB;
	if (row) {
		const char *v = (const char *)sqlite3_column_text(st, 0);

		if (v && !(*cursor = strdup(v)))
			rc = db_error_at(NULL, m->db, NULL, sqlite3_errstr(SQLITE_NOMEM));
		db_reset(st);
	}
	return rc;
}

enum dx_result mirror_cursor_set(struct mirror *m, const char *key, const char *cursor)
{
	int which = cursor ? S_CURSOR_SET : S_CURSOR_DEL;

	db_bind_text(m->st[which], 1, key);
	if (cursor)
		db_bind_text(m->st[which], 2, cursor);
	return run(m, which);
}

/* Append up to limit - *n ids of statement which to v[*n ...]. */
static enum dx_result due(struct mirror *m, int which, long limit, struct mirror_id *v, int *n)
{
	sqlite3_stmt *st = m->st[which];
	int rc = SQLITE_DONE;

	if (*n >= limit)
		return DX_OK;
	sqlite3_bind_int64(st, 1, limit - *n);
	while (*n < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const void *id = sqlite3_column_blob(st, 0);
		size_t len = (size_t)sqlite3_column_bytes(st, 0);

		/* All its bytes: an id may hold a NUL. */
		if (!(v[*n].id = malloc(len + 1))) {
			rc = SQLITE_NOMEM;
			break;
		}
		if (len)
			memcpy(v[*n].id, id, len);
		v[*n].id[len] = '\0';
		v[*n].len = len;
		(*n)++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return db_error_at(NULL, m->db, NULL, sqlite3_errstr(rc));
	return DX_OK;
}

enum dx_result mirror_details_due(struct mirror *m, long limit, struct mirror_id **ids, int *n)
{
	struct mirror_id *v;

	*ids = NULL;
	*n = 0;
	if (limit <= 0)
		return DX_OK;
	v = calloc((size_t)limit, sizeof(*v));
	if (!v)
		return DX_NOMEM;
	if (due(m, S_DUE, limit, v, n) != DX_OK || due(m, S_DUE_BEHIND, limit, v, n) != DX_OK) {
		mirror_ids_free(v, *n);
		*n = 0;
		return DX_DB;
	}
	*ids = v;
	return DX_OK;
}

void mirror_ids_free(struct mirror_id *ids, int n)
{
	for (int i = 0; ids && i < n; i++)
		free(ids[i].id);
	free(ids);
}

static enum dx_result store_participants(struct mirror *m, const struct mirror_id *id, json_t *list)
{
	sqlite3_stmt *st = m->st[S_PART_ADD];
	size_t i, len;
	json_t *p;

	db_bind_len(m->st[S_PART_DEL], 1, id->id, id->len);
	if (run(m, S_PART_DEL) != DX_OK)
		return DX_DB;
	if (!json_is_array(list))
		return DX_OK;
	json_array_foreach(list, i, p) {
		char *raw = json_dumps(p, JSON_COMPACT | JSON_ENCODE_ANY);
		const char *user;
		enum dx_result rc;

		if (!raw)
			return DX_NOMEM;
		db_bind_len(st, 1, id->id, id->len);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)i);
		user = participant_user_id(p, &len);
		db_bind_len(st, 3, user, len);
		db_bind_text(st, 4, raw);
		rc = run(m, S_PART_ADD);
		free(raw);
		if (rc != DX_OK)
			return rc;
	}
	return DX_OK;
}

enum dx_result mirror_store_detail(struct mirror *m, const struct mirror_id *id, json_t *detail,
				   long *details)
{
	char *raw = json_dumps(detail, JSON_COMPACT);
	enum dx_result rc;

	if (!raw)
		return DX_NOMEM;
	if ((rc = mirror_begin(m)) != DX_OK)
		goto out;
	db_bind_len(m->st[S_DETAIL], 1, id->id, id->len);
	db_bind_text(m->st[S_DETAIL], 2, raw);
	++*details; /* counted in the commit */
	if ((rc = run(m, S_DETAIL)) != DX_OK ||
	    (rc = store_participants(m, id, json_object_get(detail, "participants"))) != DX_OK ||
	    (rc = mirror_commit(m)) != DX_OK) {
		mirror_rollback(m);
		--*details;
	}
out:
	free(raw);
	return rc;
}

enum dx_result mirror_detail_done(struct mirror *m, const struct mirror_id *id)
{
	db_bind_len(m->st[S_DETAIL_DONE], 1, id->id, id->len);
	return run(m, S_DETAIL_DONE);
}

enum dx_result mirror_detail_behind(struct mirror *m, const struct mirror_id *id)
{
	db_bind_len(m->st[S_DETAIL_BEHIND], 1, id->id, id->len);
	return run(m, S_DETAIL_BEHIND);
}

/* Set sync_state key to value (the history trigger's context). */
static enum dx_result history_set(struct mirror *m, const char *key, const char *value)
{
	db_bind_text(m->st[S_HISTORY_SET], 1, key);
	db_bind_text(m->st[S_HISTORY_SET], 2, value);
	return run(m, S_HISTORY_SET);
}

enum dx_result mirror_run_start(struct mirror *m, const char *now, int resumed, const struct walk_counts *n)
{
	/* (An older dexsyncd committed the key for the whole walk: one a
	 * crash left would make later hand edits its events.) */
	if (run(m, S_RUN_ABANDONED) != DX_OK || run(m, S_HISTORY_DEL) != DX_OK)
		return DX_DB;
	db_bind_text(m->st[S_RUN_START], 1, now);
	sqlite3_bind_int(m->st[S_RUN_START], 2, resumed);
	if (run(m, S_RUN_START) != DX_OK)
		return DX_DB;
	m->run_id = sqlite3_last_insert_rowid(m->db);
	m->n = n;
	/* From now on the trigger records what this walk's transactions
	 * change (mirror_begin). */
	snprintf(m->run, sizeof(m->run), "%lld", m->run_id);
	return DX_OK;
}

enum dx_result mirror_history_seen_all(struct mirror *m, const char *started)
{
	return history_set(m, "history:seen_all", started);
}

/* The run's counts as the walk has them now. */
static enum dx_result run_counts(struct mirror *m)
{
	sqlite3_stmt *st = m->st[S_RUN_COUNTS];
	const struct walk_counts *n = m->n;
	const long v[] = { n->pages, n->seen,	 n->inserted, n->changed, n->unchanged,
			   n->gone,  n->details, n->requests, n->retries };

	sqlite3_bind_int64(st, 1, m->run_id);
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		sqlite3_bind_int64(st, (int)i + 2, v[i]);
	return run(m, S_RUN_COUNTS);
}

enum dx_result mirror_run_finish(struct mirror *m, const char *outcome, const char *error)
{
	sqlite3_stmt *st = m->st[S_RUN_FINISH];

	if (run_counts(m) != DX_OK)
		return DX_DB;
	sqlite3_bind_int64(st, 1, m->run_id);
	db_bind_text(st, 2, outcome);
	db_bind_text(st, 3, error);
	if (run(m, S_RUN_FINISH) != DX_OK)
		return DX_DB;
	*m->run = '\0';
	return DX_OK;
}
