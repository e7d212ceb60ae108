/* walk.c - the cursor walk of GET /conversations into the mirror
 *
 * A lister thread fetches and parses the pages ahead (lister.c); this side
 * stores them, each transaction with the cursor its last page leads to, so
 * a walk cut short by a crash, a signal or a failed request resumes from
 * the last committed page.  Unchanged rows cost a lookup and no write.
 * Rows listed by a walk that started from the first page are kept in a TEMP
 * table (temp_store=FILE: it does not grow our memory) for gone_at.
 *
 * A server that lists forever is stopped (SPEC 3.3) by a cursor it gave
 * before, by more items than twice its own total, or by pages in a row that
 * list no conversation this walk had not listed yet; for the last, each
 * status walk keeps a bit per rowid it listed (struct idset). */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "history.h"
#include "lister.h"
#include "log.h"
#include "mirror.h"
#include "notify.h"
#include "page.h"
#include "walk.h"

#define WALK_TX_MS     1000 /* longest a transaction of pages stays open */
#define WALK_LINGER_MS 20   /* how long it waits open for a page */
/* Pages in a row that list nothing new end the walk.  One such page is
 * normal while data changes (rows inserted ahead of the walk's position
 * shift the next page back over rows it listed), two can happen when the
 * shift spans more than a page; three in a row is the server going round. */
#define WALK_STALE_PAGES  3
#define WALK_DETAIL_FAILS 3 /* transient failures in a row end the details */

/* The set of rowids one status walk listed: a bit per rowid, in blocks of
 * 32768 rowids (4 KiB), found by an open-addressed table.  Our rowids run
 * from 1 up, so a million rows take 31 blocks (124 KiB).  The table holds at
 * most IDS_MAX_BLOCKS blocks (2 MiB, 16 million rowids); a row beyond that
 * counts as new, so memory stays bounded and the guard can only miss a loop
 * there (the cursor and total guards remain), never stop a good walk. */
#define IDS_SHIFT      15
#define IDS_BLOCK      ((1u << IDS_SHIFT) / 8)
#define IDS_SLOT_BITS  10
#define IDS_SLOTS      (1u << IDS_SLOT_BITS)
#define IDS_MAX_BLOCKS (IDS_SLOTS / 2)

struct idblock {
	uint64_t key;	     /* rowid >> IDS_SHIFT */
	unsigned char *bits; /* NULL: a free slot */
};

struct idset {
	struct idblock *slot; /* IDS_SLOTS, allocated with the first */
	unsigned blocks;
	struct idblock *last; /* rows come in runs: the block used last */
};

struct walk {
	sqlite3 *db;
	struct api *api;
	const struct conf *c;
	struct mirror *m;
	volatile sig_atomic_t *stop;
	const struct walk_tick *tick;
	struct walk_counts n;
	int track_seen;		  /* this walk may set gone_at at its end */
	int initial;		  /* into an empty mirror */
	sqlite3_int64 last_rowid; /* conversations' last rowid when it started */
	/* The loop guards of the status walk under way. */
	struct idset ids; /* rowids it listed */
	long items;	  /* items it listed */
	long total;	  /* the server's count on its last page, -1 unknown */
	int stale;	  /* pages in a row that listed nothing new */
	/* The open transaction of pages, if any. */
	int in_tx;
	struct timespec tx_start;
	struct walk_counts before; /* the counts at its start */
	char *reached;		   /* the cursor its last page leads to */
	char error[512];	   /* why it failed, for the log and sync_runs */
};

static void walk_tick(struct walk *w)
{
	if (w->tick)
		w->tick->fn(w->tick->arg);
}

/* The walk failed with code, for the reason fmt says: kept for the log
 * line and sync_runs.  Returns code. */
static enum dx_result walk_fail(struct walk *w, enum dx_result code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static enum dx_result walk_fail(struct walk *w, enum dx_result code, const char *fmt, ...)
{
	va_list ap;

	assert(code != DX_OK);
	va_start(ap, fmt);
	vsnprintf(w->error, sizeof(w->error), fmt, ap);
	va_end(ap);
	return code;
}

/* Add rowid to the set: 1 if it was not in it, else 0.  A rowid the set
 * has no room for counts as new (see IDS_MAX_BLOCKS). */
static int ids_add(struct idset *s, sqlite3_int64 rowid)
{
	uint64_t key = (uint64_t)rowid >> IDS_SHIFT;
	size_t bit = (size_t)((uint64_t)rowid & ((1u << IDS_SHIFT) - 1));
	unsigned char mask = (unsigned char)(1u << (bit & 7));
	struct idblock *b = s->last;
	size_t i;

	assert(s->blocks <= IDS_MAX_BLOCKS); /* at most half full: a probe ends */
	if (!b || b->key != key) {
		if (!s->slot && !(s->slot = calloc(IDS_SLOTS, sizeof(*s->slot))))
			return 1;
		/* Fibonacci hashing; at most half full, so a probe ends. */
		for (i = (size_t)((key * 0x9E3779B97F4A7C15u) >> (64 - IDS_SLOT_BITS));
		     s->slot[i].bits && s->slot[i].key != key; i = (i + 1) % IDS_SLOTS)
			;
		b = &s->slot[i];
		if (!b->bits) {
			if (s->blocks == IDS_MAX_BLOCKS || !(b->bits = calloc(1, IDS_BLOCK)))
				return 1;
			b->key = key;
			s->blocks++;
		}
		s->last = b;
	}
	if (b->bits[bit / 8] & mask)
		return 0;
	b->bits[bit / 8] |= mask;
	return 1;
}

/* Empty the set and give its memory back. */
static void ids_reset(struct idset *s)
{
	for (size_t i = 0; s->slot && i < IDS_SLOTS; i++)
		free(s->slot[i].bits);
	free(s->slot);
	memset(s, 0, sizeof(*s));
}

/* A status walk (re)starts from its first page or its stored cursor: the
 * loop guards start over. */
static void guards_reset(struct walk *w)
{
	ids_reset(&w->ids);
	w->items = 0;
	w->total = -1;
	w->stale = 0;
}

/* Store one page's rows inside the open transaction; *fresh counts the
 * rows this status walk had not listed before. */
static enum dx_result store_rows(struct walk *w, const struct page *p, const char *now, size_t *fresh)
{
	sqlite3_int64 rowid;

	assert(p->rows || p->nrows == 0); /* turned into rows: the arena holds them */
	for (size_t i = 0; i < p->nrows; i++) {
		const struct conv_row *row = &p->rows[i];

		if (!row->id) {
			log_warning("page %ld, item %zu skipped: %s", w->n.pages + 1, i, row->skip);
			continue;
		}
		switch (mirror_upsert(w->m, row, now, &rowid)) {
		case UPSERT_INSERTED:
			w->n.inserted++;
			break;
		case UPSERT_CHANGED:
			w->n.changed++;
			break;
		case UPSERT_UNCHANGED:
			w->n.unchanged++;
			break;
		case UPSERT_ERROR:
			return DX_DB;
		}
		w->n.seen++;
		*fresh += (size_t)ids_add(&w->ids, rowid);
		if (w->track_seen && mirror_seen(w->m, rowid) != DX_OK)
			return DX_DB;
	}
	return DX_OK;
}

/* Roll back the open transaction: its pages are listed again next time. */
static void walk_abandon(struct walk *w)
{
	struct walk_counts now = w->n;

	mirror_rollback(w->m);
	w->in_tx = 0;
	w->n = w->before;
	w->n.requests = now.requests;
	w->n.retries = now.retries;
}

/* Commit the open transaction with the cursor its last page leads to (none
 * after the last page: the walk is complete). */
static enum dx_result walk_commit(struct walk *w, const char *key)
{
	if (!w->in_tx)
		return DX_OK;
	if (mirror_cursor_set(w->m, key, w->reached) != DX_OK || mirror_commit(w->m) != DX_OK) {
		walk_fail(w, DX_DB, "storing page %ld failed: %s", w->n.pages, sqlite3_errmsg(w->db));
		walk_abandon(w);
		return DX_DB;
	}
	w->in_tx = 0;
	return DX_OK;
}

static long ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Store a page in the open transaction, opening one if needed.  Pages share
 * a transaction while the next one is already here, up to WALK_TX_MS: each
 * commit rewrites every index page it touched, and the ids are random, so
 * a commit per page would write the id index again for every page. */
static enum dx_result store_page(struct walk *w, struct listed *p)
{
	char now[32];
	size_t fresh = 0;
	enum dx_result rc;

	if (!p->page.rows && page_rows(&p->page, 0) != DX_OK)
		return walk_fail(w, DX_NOMEM, "page %ld: out of memory", w->n.pages + 1);
	if (!w->in_tx) {
		if (mirror_begin(w->m) != DX_OK)
			return walk_fail(w, DX_DB, "cannot start a transaction: %s", sqlite3_errmsg(w->db));
		w->in_tx = 1;
		w->before = w->n;
		clock_gettime(CLOCK_MONOTONIC, &w->tx_start);
	}
	db_now(now, sizeof(now));
	if ((rc = store_rows(w, &p->page, now, &fresh)) != DX_OK) {
		walk_fail(w, rc, "storing page %ld failed: %s", w->n.pages + 1, sqlite3_errmsg(w->db));
		walk_abandon(w);
		return rc;
	}
	w->stale = fresh > 0 ? 0 : w->stale + 1;
	w->n.pages++;
	free(w->reached);
	w->reached = p->next_cursor;
	p->next_cursor = NULL;
	return DX_OK;
}

/* The guards against a server that lists forever, before a page is stored:
 * more items than twice its own total (its latest) and a thousand, or a
 * cursor it gave before in this status walk.  Items, not pages: limit is
 * a maximum, a server may well answer with shorter pages. */
static enum dx_result walk_guard(struct walk *w, const struct listed *p)
{
	long total = p->page.total;

	w->items += (long)(p->page.rows ? p->page.nrows : json_array_size(p->page.data));
	w->total = total;
	if (total >= 0 && w->items > 2 * total + 1000)
		return walk_fail(w, DX_LOOPING,
				 "%ld items listed where the server counts %ld "
				 "conversations (at most 2 x %ld + 1000): the server is looping",
				 w->items, total, total);
	if (!p->next_cursor)
		return DX_OK;
	switch (mirror_cursor_repeated(w->m, p->next_cursor)) {
	case DX_OK:
		return DX_OK;
	case DX_LOOPING:
		return walk_fail(w, DX_LOOPING, "the server repeated a cursor: it is looping");
	default:
		return walk_fail(w, DX_DB, "cannot record the cursor: %s", sqlite3_errmsg(w->db));
	}
}

/* The guard after a page is stored: WALK_STALE_PAGES in a row that listed
 * no conversation this status walk had not listed (repeats only, or none:
 * an empty page or one of items without an id) end the walk. */
static enum dx_result walk_progress(struct walk *w)
{
	if (w->stale < WALK_STALE_PAGES)
		return DX_OK;
	return walk_fail(w, DX_LOOPING,
			 "%d pages in a row listed no conversation this walk had "
			 "not listed: the server is looping",
			 w->stale);
}

/* A complete list that holds fewer than half the conversations the server
 * itself counts (its last meta.total) is not trusted to say which are gone:
 * one empty page answered 200 by a server in trouble would otherwise mark
 * the whole mirror gone, with an event each.  The walk stands; gone_at is
 * left as it was until a walk lists them. */
static void walk_short(struct walk *w, const char *status)
{
	if (!w->track_seen || w->total < 0 || 2 * w->items >= w->total)
		return;
	w->track_seen = 0;
	log_warning(
		"the server counts %ld conversations%s%s but listed %ld: "
		"none is marked gone after this walk",
		w->total, status ? " with status " : "", status ? status : "", w->items);
}

/* Walk one status filter (NULL: everything) from its stored cursor or the
 * first page to the end.  Returns 0 when the end was reached. */
static enum dx_result walk_status(struct walk *w, const char *status)
{
	char key[64], *cursor = NULL;
	struct lister *l;
	struct listed p;
	enum dx_result rc;
	int page;

	snprintf(key, sizeof(key), "walk_cursor:%s", status ? status : "*");
	if (mirror_cursors_reset(w->m) != DX_OK || mirror_cursor_get(w->m, key, &cursor) != DX_OK)
		return walk_fail(w, DX_DB, "cannot read the stored cursor: %s", sqlite3_errmsg(w->db));
	guards_reset(w);
	l = lister_start(w->api, w->c, status, cursor, w->initial, w->stop);
	free(cursor);
	if (!l)
		return walk_fail(w, DX_SYSTEM, "cannot start listing");
	for (;;) {
		if (*w->stop) {
			rc = walk_fail(w, DX_STOPPED, "stopped by a signal");
			break;
		}
		/* No lock held while the next page is on its way (beyond a moment:
		 * the lister is often just behind), nor for long, nor while the
		 * outbox waits for it; then a turn for whoever waits. */
		if (w->in_tx && (ms_since(&w->tx_start) >= WALK_TX_MS || db_write_wanted() ||
				 !lister_ready(l, WALK_LINGER_MS))) {
			if ((rc = walk_commit(w, key)) != DX_OK)
				break;
			db_write_turn();
		}
		if ((rc = lister_next(l, &p, &page)) != DX_OK) {
			walk_fail(w, rc, "%s", lister_error(l));
			break;
		}
		if (!page)
			break; /* the end of the list */
		if (p.restart)
			guards_reset(w);
		if (p.restart && mirror_cursors_reset(w->m) != DX_OK)
			rc = walk_fail(w, DX_DB, "cannot reset the cursors: %s", sqlite3_errmsg(w->db));
		else if ((rc = walk_guard(w, &p)) == DX_OK && (rc = store_page(w, &p)) == DX_OK &&
			 (rc = walk_progress(w)) == DX_OK) {
			listed_free(&p);
			notify_watchdog();
			walk_tick(w);
			continue;
		}
		listed_free(&p);
		break;
	}
	/* Pages stored before a failure are good: keep them. */
	if (walk_commit(w, key) != DX_OK && rc == DX_OK)
		rc = DX_DB;
	if (rc == DX_OK)
		walk_short(w, status);
	lister_finish(l, &w->n.retries);
	guards_reset(w);
	return rc;
}

/* "/conversations/" and all of id percent-encoded, malloc'd; NULL when out
 * of memory (or id is empty).  Not api_escape, which ends at a NUL: an id may hold one.
 * (libcurl ignores the handle: it served character-set conversion on
 * non-ASCII systems only.)  An id "." or ".." is a dot segment libcurl would
 * remove from the path: its dots are escaped too. */
static char *detail_path(const struct mirror_id *id)
{
	static const char prefix[] = "/conversations/";
	char *esc, *path;
	const char *seg;
	size_t size;

	if (id->len == 0 || id->len > INT_MAX || !(esc = curl_easy_escape(NULL, id->id, (int)id->len)))
		return NULL;
	seg = !strcmp(esc, ".") ? "%2E" : !strcmp(esc, "..") ? "%2E%2E" : esc;
	size = sizeof(prefix) + strlen(seg);
	if ((path = malloc(size)))
		snprintf(path, size, "%s%s", prefix, seg);
	curl_free(esc);
	return path;
}

/* The detail answer as a JSON object (\u0000 in strings accepted), or NULL
 * with the reason in err. */
static json_t *detail_parse(const struct api_response *r, char *err, size_t errlen)
{
	json_t *j = api_json(r, err, errlen);

	if (j && !json_is_object(j)) {
		snprintf(err, errlen, "not a JSON object");
		json_decref(j);
		j = NULL;
	}
	return j;
}

/* Fetch and store the detail of one conversation.  A 404 or 410 ends the
 * asking (it is gone upstream); another permanent failure, or an answer we
 * cannot read, puts it behind the others so that it never blocks them; a
 * transient one leaves it for the next cycle. */
static void walk_detail(struct walk *w, const struct mirror_id *id, int *fails)
{
	struct api_response r;
	char err[256], *path = detail_path(id);
	json_t *j;

	if (id->len == 0) {
		/* Not from the list (it skips such items): no path names it. */
		log_warning("conversation detail: a conversation with an empty id; not asked for again");
		mirror_detail_done(w->m, id);
		free(path);
		return;
	}
	if (!path) {
		log_warning("conversation detail of %s: out of memory; asked for again next cycle", id->id);
		return;
	}
	switch (api_get(w->api, path, &r, &w->n.retries, fails, WALK_DETAIL_FAILS)) {
	case DX_OK:
		if (!(j = detail_parse(&r, err, sizeof(err)))) {
			log_warning("conversation detail: GET %s: %s; asked for again after the others", path,
				    err);
			mirror_detail_behind(w->m, id);
			break;
		}
		mirror_store_detail(w->m, id, j, &w->n.details); /* counted when stored */
		json_decref(j);
		break;
	case DX_GONE:
		log_warning("conversation detail: %s; not asked for again", r.error);
		mirror_detail_done(w->m, id);
		break;
	case DX_TRANSIENT:
		log_warning("conversation detail: %s; asked for again next cycle", r.error);
		break;
	default:
		log_warning("conversation detail: %s; asked for again after the others", r.error);
		mirror_detail_behind(w->m, id);
		break;
	}
	free(path);
}

/* GET /conversations/:id for the rows that are new or changed, oldest
 * change first, then those whose detail failed permanently, at most
 * max-details.  Failures are logged, not fatal; WALK_DETAIL_FAILS transient
 * failures in a row (the server is down or overloaded) end the phase for
 * this cycle, so that it never takes the retries of every row. */
static void walk_details(struct walk *w)
{
	struct mirror_id *ids = NULL;
	int n, i, fails = 0, failed = 0, before;

	if (!w->c->fetch_details || mirror_details_due(w->m, w->c->max_details, &ids, &n) != DX_OK)
		return;
	for (i = 0; i < n && !*w->stop && fails < WALK_DETAIL_FAILS; i++) {
		before = fails;
		walk_detail(w, &ids[i], &fails);
		failed += fails > before; /* a transient failure: it waits too */
		walk_tick(w);
	}
	if (fails >= WALK_DETAIL_FAILS && !*w->stop)
		log_notice(
			"conversation details: %d transient failures in a row; "
			"%d conversations wait for the next cycle",
			fails, n - i + failed);
	mirror_ids_free(ids, n);
}

/* Does the configuration list every conversation? */
static int walks_everything(const struct conf *c)
{
	int open = 0, closed = 0, snoozed = 0;

	if (c->nstatus == 0)
		return 1;
	for (unsigned i = 0; i < c->nstatus; i++) {
		open |= !strcmp(c->status[i], "open");
		closed |= !strcmp(c->status[i], "closed");
		snoozed |= !strcmp(c->status[i], "snoozed");
	}
	return open && closed && snoozed;
}

/* Is any status of this walk resuming from a stored cursor (*resumes)? */
static enum dx_result walk_resumes(struct walk *w, int *resumes)
{
	char key[64], *cursor;
	unsigned n = w->c->nstatus ? w->c->nstatus : 1;

	*resumes = 0;
	for (unsigned i = 0; i < n && !*resumes; i++) {
		snprintf(key, sizeof(key), "walk_cursor:%s", w->c->nstatus ? w->c->status[i] : "*");
		if (mirror_cursor_get(w->m, key, &cursor) != DX_OK)
			return DX_DB;
		*resumes = cursor != NULL;
		free(cursor);
	}
	return DX_OK;
}

/* What ends a complete walk: the deferred indexes and gone_at, both built
 * by sorting, in the place of the page cache (db_cache_small). */
static enum dx_result walk_end(struct walk *w)
{
	char now[32];

	if (db_indexes_restore(w->db) != DX_OK)
		return walk_fail(w, DX_DB, "building the deferred indexes failed: %s", sqlite3_errmsg(w->db));
	if (!w->track_seen)
		return DX_OK;
	db_now(now, sizeof(now));
	if (mirror_mark_gone(w->m, now, w->last_rowid, &w->n.gone) != DX_OK)
		return walk_fail(w, DX_DB, "marking gone conversations failed: %s", sqlite3_errmsg(w->db));
	return DX_OK;
}

/* A walk that deferred the indexes and failed short of walk_end builds
 * them now, in the page cache's place like walk_end: the mirror is not left
 * without them (SPEC 3.9).  If that fails too, the next start builds them. */
static void walk_indexes_back(struct walk *w)
{
	char *cache = NULL;
	int small = db_cache_small(w->db, &cache) == DX_OK;

	if (db_indexes_restore(w->db) != DX_OK)
		log_err("database %s: building the deferred indexes failed: %s; "
			"they are built at the end of the next walk, or at the next start",
			sqlite3_db_filename(w->db, "main"), sqlite3_errmsg(w->db));
	if (small)
		db_cache_restore(w->db, cache);
}

/* Fold the first closes of the events this walk (or any writer since the
 * last fold) wrote, for report_time_to_close (history.c); a failure costs
 * the report time, not rows, so it is only logged. */
static void walk_fold_closes(sqlite3 *db)
{
	struct timespec t0, t1;
	long folded;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (history_fold_closes(db, &folded) != DX_OK) {
		log_warning(
			"database %s: cannot fold the first closes; report time-to-close reads them "
			"from the events until a walk's end folds them",
			sqlite3_db_filename(db, "main"));
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (folded > 0)
		log_info("history: the first closes of %ld conversations folded in %.2f s", folded,
			 (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
}

static enum dx_result walk_all(struct walk *w)
{
	unsigned n = w->c->nstatus ? w->c->nstatus : 1;
	enum dx_result rc;
	char *cache;

	for (unsigned i = 0; i < n; i++)
		if ((rc = walk_status(w, w->c->nstatus ? w->c->status[i] : NULL)) != DX_OK)
			return rc;
	if (db_cache_small(w->db, &cache) != DX_OK)
		return walk_fail(w, DX_DB, "cannot shrink the page cache: %s", sqlite3_errmsg(w->db));
	rc = walk_end(w);
	if (db_cache_restore(w->db, cache) != DX_OK && rc == DX_OK)
		rc = walk_fail(w, DX_DB, "cannot restore the page cache: %s", sqlite3_errmsg(w->db));
	if (rc == DX_OK)
		walk_details(w);
	return rc;
}

enum dx_result walk_run(sqlite3 *db, struct api *api, const struct conf *c, volatile sig_atomic_t *stop,
			struct walk_counts *counts, const struct walk_tick *tick)
{
	struct walk w = { .db = db, .api = api, .c = c, .stop = stop, .tick = tick };
	struct timespec t0, t1;
	unsigned long req0 = api_requests(api);
	char now[32];
	int resumed, initial = 0;
	enum dx_result rc;
	double secs;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!(w.m = mirror_open(db)))
		return DX_DB;
	db_now(now, sizeof(now));
	if (walk_resumes(&w, &resumed) != DX_OK || mirror_last_rowid(w.m, &w.last_rowid) != DX_OK ||
	    mirror_run_start(w.m, now, resumed, &w.n) != DX_OK) {
		mirror_close(w.m);
		return DX_DB;
	}
	/* Nothing can be gone from an empty mirror: no seen set to keep. */
	if (!resumed && db_indexes_defer(db, &initial) != DX_OK)
		rc = walk_fail(&w, DX_DB, "cannot defer the indexes: %s", sqlite3_errmsg(db));
	else if ((w.track_seen = !initial && !resumed && walks_everything(c)) &&
		 mirror_seen_reset(w.m) != DX_OK)
		rc = walk_fail(&w, DX_DB, "cannot reset the seen set: %s", sqlite3_errmsg(db));
	else {
		w.initial = initial;
		if (w.initial)
			mirror_expect_new(w.m);
		rc = walk_all(&w);
	}

	/* Listed every live row from the first page: the old value of a later
	 * change was seen at least at this walk's start (history's `after`). */
	if (rc == DX_OK && !resumed && walks_everything(c) && mirror_history_seen_all(w.m, now) != DX_OK)
		log_warning("database %s: cannot record the walk for the history: %s",
			    sqlite3_db_filename(db, "main"), sqlite3_errmsg(db));
	w.n.requests = (long)(api_requests(api) - req0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (mirror_run_finish(w.m,
			      rc == DX_OK ? "ok" :
			      *stop	  ? "interrupted" :
					    "failed",
			      rc == DX_OK ? NULL : w.error) != DX_OK)
		log_warning(
			"database %s: cannot record the walk's end: %s; its row says 'running' until the "
			"next walk marks it interrupted",
			sqlite3_db_filename(db, "main"), sqlite3_errmsg(db));
	if (rc == DX_OK)
		log_info(
			"walk %s: %ld pages, %ld seen, %ld inserted, %ld changed, %ld unchanged, "
			"%ld gone, %ld details, %ld requests, %.2f s",
			resumed ? "resumed and completed" : "completed", w.n.pages, w.n.seen, w.n.inserted,
			w.n.changed, w.n.unchanged, w.n.gone, w.n.details, w.n.requests, secs);
	else if (*stop)
		log_notice(
			"walk interrupted by a signal after %ld pages (%ld seen, %ld inserted, "
			"%ld changed, %.2f s): they are stored, and the next walk resumes from "
			"the page after them",
			w.n.pages, w.n.seen, w.n.inserted, w.n.changed, secs);
	else
		log_err("walk failed after %ld pages (%ld seen, %ld inserted, %ld changed, %.2f s): %s; "
			"resuming from the last stored page next cycle",
			w.n.pages, w.n.seen, w.n.inserted, w.n.changed, secs, w.error);
	/* Stopped by a signal, it exits now (building the indexes of a large
	 * mirror takes seconds): the daemon builds them at its next start. */
	if (rc != DX_OK && w.initial && !*stop)
		walk_indexes_back(&w);
	else if (rc != DX_OK && w.initial)
		log_notice("database %s: the deferred indexes are built at the next start",
			   sqlite3_db_filename(db, "main"));
	mirror_walk_end(w.m);
	/* Before the pruning, which keeps the folded closes right itself. */
	walk_fold_closes(db);
	if (c->history_days > 0) {
		long pruned;

		if (history_prune(db, c->history_days, &pruned) == DX_OK && pruned > 0)
			log_info("history: %ld events older than %ld days deleted", pruned, c->history_days);
	}
	if (counts)
		*counts = w.n;
	free(w.reached);
	mirror_close(w.m);
	return rc;
}
