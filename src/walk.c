/* walk.c - the cursor walk of GET /conversations into the mirror
 *
 * A lister thread fetches and parses the pages ahead (lister.c); this side
 * stores them, each transaction with the cursor its last page leads to, so
 * a walk cut short by a crash, a signal or a failed request resumes from
 * the last committed page.  Unchanged rows cost a lookup and no write.
 * Rows listed by a walk that started from the first page are kept in a TEMP
 * table (temp_store=FILE: it does not grow our memory) for gone_at. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "lister.h"
#include "log.h"
#include "mirror.h"
#include "notify.h"
#include "page.h"
#include "walk.h"

#define WALK_NO_TOTAL_PAGES	1000000	/* page guard when meta.total is absent */
#define WALK_TX_MS		1000	/* longest a transaction of pages stays open */
#define WALK_LINGER_MS		20	/* how long it waits open for a page */

struct walk {
	sqlite3 *db;
	struct api *api;
	const struct conf *c;
	struct mirror *m;
	volatile sig_atomic_t *stop;
	struct walk_counts n;
	int track_seen;             /* this walk may set gone_at at its end */
	int initial;                /* into an empty mirror */
	/* The open transaction of pages, if any. */
	int in_tx;
	struct timespec tx_start;
	struct walk_counts before;  /* the counts at its start */
	char *reached;              /* the cursor its last page leads to */
	char error[512];
};

static void walk_fail(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void walk_fail(struct walk *w, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->error, sizeof(w->error), fmt, ap);
	va_end(ap);
}

/* Store one page's rows inside the open transaction. */
static int store_rows(struct walk *w, const struct page *p, const char *now)
{
	sqlite3_int64 rowid;

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
			return -1;
		}
		w->n.seen++;
		if (w->track_seen && mirror_seen(w->m, rowid) < 0)
			return -1;
	}
	return 0;
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
static int walk_commit(struct walk *w, const char *key)
{
	if (!w->in_tx)
		return 0;
	if (mirror_cursor_set(w->m, key, w->reached) < 0 || mirror_commit(w->m) < 0) {
		walk_fail(w, "storing page %ld failed: %s", w->n.pages, sqlite3_errmsg(w->db));
		walk_abandon(w);
		return -1;
	}
	w->in_tx = 0;
	return 0;
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
static int store_page(struct walk *w, struct listed *p)
{
	char now[32];

	if (!p->page.rows && page_rows(&p->page, 0) < 0) {
		walk_fail(w, "page %ld: out of memory", w->n.pages + 1);
		return -1;
	}
	if (!w->in_tx) {
		if (mirror_begin(w->m) < 0) {
			walk_fail(w, "cannot start a transaction: %s", sqlite3_errmsg(w->db));
			return -1;
		}
		w->in_tx = 1;
		w->before = w->n;
		clock_gettime(CLOCK_MONOTONIC, &w->tx_start);
	}
	db_now(now, sizeof(now));
	if (store_rows(w, &p->page, now) < 0) {
		walk_fail(w, "storing page %ld failed: %s", w->n.pages + 1, sqlite3_errmsg(w->db));
		walk_abandon(w);
		return -1;
	}
	w->n.pages++;
	free(w->reached);
	w->reached = p->next_cursor;
	p->next_cursor = NULL;
	return 0;
}

/* The guards against a server that lists forever: more pages than its own
 * total allows, or a cursor it gave before in this walk. */
static int walk_guard(struct walk *w, const struct listed *p, long *pages, long *limit)
{
	int seen;

	if (p->page.total >= 0)
		*limit = 2 * p->page.total / w->c->page_size + 10;
	if (++*pages > *limit) {
		walk_fail(w, "more than %ld pages for %ld conversations: the server is looping",
			  *limit, p->page.total);
		return -1;
	}
	if (p->next_cursor && (seen = mirror_cursor_repeated(w->m, p->next_cursor)) != 0) {
		walk_fail(w, seen > 0 ? "the server repeated a cursor: it is looping"
				      : "cannot record the cursor: %s", sqlite3_errmsg(w->db));
		return -1;
	}
	return 0;
}

/* Walk one status filter (NULL: everything) from its stored cursor or the
 * first page to the end.  Returns 0 when the end was reached. */
static int walk_status(struct walk *w, const char *status)
{
	char key[64], *cursor = NULL;
	struct lister *l;
	struct listed p;
	long pages = 0, limit = WALK_NO_TOTAL_PAGES;
	int rc = -1, next;

	snprintf(key, sizeof(key), "walk_cursor:%s", status ? status : "*");
	if (mirror_cursors_reset(w->m) < 0 || mirror_cursor_get(w->m, key, &cursor) < 0) {
		walk_fail(w, "cannot read the stored cursor: %s", sqlite3_errmsg(w->db));
		return -1;
	}
	l = lister_start(w->api, w->c, status, cursor, w->initial, w->stop);
	free(cursor);
	if (!l) {
		walk_fail(w, "cannot start listing");
		return -1;
	}
	for (;;) {
		if (*w->stop) {
			walk_fail(w, "stopped by a signal");
			break;
		}
		/* No lock held while the next page is on its way (beyond a moment:
		 * the lister is often just behind), nor for long. */
		if (w->in_tx && (ms_since(&w->tx_start) >= WALK_TX_MS ||
				 !lister_ready(l, WALK_LINGER_MS)) &&
		    walk_commit(w, key) < 0)
			break;
		next = lister_next(l, &p);
		if (next <= 0) {
			if (next == 0)
				rc = 0;
			else
				walk_fail(w, "%s", lister_error(l));
			break;
		}
		if (p.restart && mirror_cursors_reset(w->m) < 0)
			walk_fail(w, "cannot reset the cursors: %s", sqlite3_errmsg(w->db));
		else if (walk_guard(w, &p, &pages, &limit) == 0 && store_page(w, &p) == 0) {
			listed_free(&p);
			notify_watchdog();
			continue;
		}
		listed_free(&p);
		break;
	}
	/* Pages stored before a failure are good: keep them. */
	if (walk_commit(w, key) < 0)
		rc = -1;
	lister_finish(l, &w->n.retries);
	return rc;
}

/* GET /conversations/:id for the rows that are new or changed, oldest
 * change first, at most max-details.  Failures are logged, not fatal: the
 * rows stay marked and are asked for again next cycle. */
static void walk_details(struct walk *w)
{
	char **ids = NULL, err[256], path[512];
	struct api_response r;
	int n;

	if (!w->c->fetch_details)
		return;
	n = mirror_details_due(w->m, w->c->max_details, &ids);
	for (int i = 0; i < n && !*w->stop; i++) {
		char *esc = api_escape(w->api, ids[i]);
		json_t *j;

		if (!esc)
			break;
		snprintf(path, sizeof(path), "/conversations/%.400s", esc);
		curl_free(esc);
		if (lister_get(w->api, path, &r, w->stop, &w->n.retries) != API_OK) {
			if (r.status == 404 || r.status == 410)
				mirror_detail_done(w->m, ids[i]);
			log_warning("conversation detail: %s", r.error);
			continue;
		}
		if (!(j = api_json(&r, err, sizeof(err))) || !json_is_object(j)) {
			log_warning("conversation detail: GET %s: %s", path,
				    j ? "not a JSON object" : err);
			json_decref(j);
			continue;
		}
		if (mirror_store_detail(w->m, ids[i], j) == 0)
			w->n.details++;
		json_decref(j);
	}
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

/* Is any status of this walk resuming from a stored cursor? */
static int walk_resumes(struct walk *w)
{
	char key[64], *cursor;
	unsigned n = w->c->nstatus ? w->c->nstatus : 1;
	int resumes = 0;

	for (unsigned i = 0; i < n && !resumes; i++) {
		snprintf(key, sizeof(key), "walk_cursor:%s", w->c->nstatus ? w->c->status[i] : "*");
		if (mirror_cursor_get(w->m, key, &cursor) < 0)
			return -1;
		resumes = cursor != NULL;
		free(cursor);
	}
	return resumes;
}

/* What ends a complete walk: the deferred indexes and gone_at, both built
 * by sorting, in the place of the page cache (db_cache_small). */
static int walk_end(struct walk *w)
{
	char now[32];

	if (db_indexes_restore(w->db) < 0) {
		walk_fail(w, "building the deferred indexes failed: %s", sqlite3_errmsg(w->db));
		return -1;
	}
	if (!w->track_seen)
		return 0;
	db_now(now, sizeof(now));
	if (mirror_mark_gone(w->m, now, &w->n.gone) < 0) {
		walk_fail(w, "marking gone conversations failed: %s", sqlite3_errmsg(w->db));
		return -1;
	}
	return 0;
}

static int walk_all(struct walk *w)
{
	unsigned n = w->c->nstatus ? w->c->nstatus : 1;
	char *cache;
	int rc;

	for (unsigned i = 0; i < n; i++)
		if (walk_status(w, w->c->nstatus ? w->c->status[i] : NULL) < 0)
			return -1;
	if (db_cache_small(w->db, &cache) < 0) {
		walk_fail(w, "cannot shrink the page cache: %s", sqlite3_errmsg(w->db));
		return -1;
	}
	rc = walk_end(w);
	if (db_cache_restore(w->db, cache) < 0 && rc == 0) {
		walk_fail(w, "cannot restore the page cache: %s", sqlite3_errmsg(w->db));
		rc = -1;
	}
	if (rc == 0)
		walk_details(w);
	return rc;
}

int walk_run(sqlite3 *db, struct api *api, const struct conf *c, volatile sig_atomic_t *stop,
	     struct walk_counts *counts)
{
	struct walk w = { .db = db, .api = api, .c = c, .stop = stop };
	struct timespec t0, t1;
	unsigned long req0 = api_requests(api);
	long long run_id;
	char now[32];
	int resumed, initial, rc = -1;
	double secs;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!(w.m = mirror_open(db)))
		return -1;
	resumed = walk_resumes(&w);
	db_now(now, sizeof(now));
	run_id = resumed < 0 ? -1 : mirror_run_start(w.m, now, resumed);
	if (run_id < 0) {
		mirror_close(w.m);
		return -1;
	}
	/* Nothing can be gone from an empty mirror: no seen set to keep. */
	initial = resumed ? 0 : db_indexes_defer(db);
	w.initial = initial > 0;
	if (w.initial)
		mirror_expect_new(w.m);
	w.track_seen = !resumed && !initial && walks_everything(c);
	if (initial < 0)
		walk_fail(&w, "cannot defer the indexes: %s", sqlite3_errmsg(db));
	else if (w.track_seen && mirror_seen_reset(w.m) < 0)
		walk_fail(&w, "cannot reset the seen set: %s", sqlite3_errmsg(db));
	else
		rc = walk_all(&w);

	w.n.requests = (long)(api_requests(api) - req0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	mirror_run_finish(w.m, run_id, rc == 0 ? "ok" : *stop ? "interrupted" : "failed", &w.n,
			  rc == 0 ? NULL : w.error);
	if (rc == 0)
		log_info("walk %s: %ld pages, %ld seen, %ld inserted, %ld changed, %ld unchanged, "
			 "%ld gone, %ld details, %ld requests, %.2f s",
			 resumed ? "resumed and completed" : "completed", w.n.pages, w.n.seen,
			 w.n.inserted, w.n.changed, w.n.unchanged, w.n.gone, w.n.details,
			 w.n.requests, secs);
	else
		log_err("walk failed after %ld pages (%ld seen, %ld inserted, %ld changed, %.2f s): %s; "
			"resuming from the last stored page next cycle",
			w.n.pages, w.n.seen, w.n.inserted, w.n.changed, secs, w.error);
	/* Empty the walk's TEMP tables with the temp journal off: under the
	 * memory journal, freeing a million-row table would copy every page of
	 * it into RAM first, for a rollback nobody needs. */
	sqlite3_exec(db, "PRAGMA temp.journal_mode = OFF;"
		     "DROP INDEX IF EXISTS temp.walk_seen_rid; DELETE FROM temp.walk_seen;"
		     "DELETE FROM temp.walk_cursors;"
		     "PRAGMA temp.journal_mode = MEMORY", NULL, NULL, NULL);
	if (counts)
		*counts = w.n;
	free(w.reached);
	mirror_close(w.m);
	return rc;
}
