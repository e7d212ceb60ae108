/* walk.c - the cursor walk of GET /conversations into the mirror
 *
 * Each page is stored in one transaction together with the cursor it leads
 * to, so a walk cut short by a crash, a signal or a failed request resumes
 * from the last committed page.  Unchanged rows cost a lookup and no write.
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
#include "log.h"
#include "mirror.h"
#include "notify.h"
#include "page.h"
#include "walk.h"

#define WALK_RETRIES		3	/* transient failures retried per request */
#define WALK_MAX_WAIT		60	/* longer Retry-After: leave it to the next cycle */
#define WALK_NO_TOTAL_PAGES	1000000	/* page guard when meta.total is absent */
#define WALK_BATCH_PAGES	10	/* pages stored per transaction ... */
#define WALK_BATCH_BYTES	(1u << 20)	/* ... or this much JSON, whichever first */

/* Pages fetched but not stored yet.  Storing several pages per transaction
 * divides the rewriting of index pages that each commit costs; the pages
 * wait in memory, not in an open transaction, so no lock is held while we
 * talk to the server. */
struct batch {
	struct page page[WALK_BATCH_PAGES];
	int n;
	size_t bytes;
};

struct walk {
	sqlite3 *db;
	struct api *api;
	const struct conf *c;
	struct mirror *m;
	volatile sig_atomic_t *stop;
	struct walk_counts n;
	int track_seen;             /* this walk may set gone_at at its end */
	char *raw;                  /* reused buffer for each item's JSON */
	size_t raw_size;
	char error[512];
};

int walk_sleep(long secs, volatile sig_atomic_t *stop)
{
	struct timespec ts = { secs, 0 };

	while (!(stop && *stop) && nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	return stop && *stop;
}

static void walk_fail(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void walk_fail(struct walk *w, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->error, sizeof(w->error), fmt, ap);
	va_end(ap);
}

/* GET path, retrying transient failures with a growing pause (1, 2, 4 s,
 * or the server's Retry-After when longer).  Returns the final outcome. */
static enum api_outcome walk_get(struct walk *w, const char *path, struct api_response *r)
{
	enum api_outcome o;
	long wait;

	for (int attempt = 0;; attempt++) {
		o = api_request(w->api, "GET", path, NULL, NULL, r);
		if (o != API_TRANSIENT || attempt == WALK_RETRIES || *w->stop)
			return o;
		wait = 1L << attempt;
		if (r->retry_after > wait)
			wait = r->retry_after;
		if (wait > WALK_MAX_WAIT)
			return o;
		log_notice("%s; retrying in %ld s", r->error, wait);
		w->n.retries++;
		if (walk_sleep(wait, w->stop))
			return o;
	}
}

/* The compact JSON of item into w->raw; returns its length or -1. */
static long item_raw(struct walk *w, json_t *item)
{
	size_t need = json_dumpb(item, w->raw, w->raw_size, JSON_COMPACT);

	if (need == 0)
		return -1;
	if (need > w->raw_size) {
		size_t size = need * 2;
		char *p = realloc(w->raw, size);

		if (!p)
			return -1;
		w->raw = p;
		w->raw_size = size;
		need = json_dumpb(item, w->raw, w->raw_size, JSON_COMPACT);
	}
	return (long)need;
}

/* Store one page's items inside the open transaction. */
static int store_items(struct walk *w, const struct page *p, const char *now)
{
	char err[160];
	struct conv_row row;
	sqlite3_int64 rowid;
	size_t i;
	json_t *item;
	long len;

	json_array_foreach(p->data, i, item) {
		if (conv_row_map(item, &row, err, sizeof(err)) < 0) {
			log_warning("page %ld, item %zu skipped: %s", w->n.pages + 1, i, err);
			continue;
		}
		len = item_raw(w, item);
		if (len < 0)
			return -1;
		switch (mirror_upsert(w->m, &row, w->raw, (size_t)len, now, &rowid)) {
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

/* Store the batched pages and the cursor the last one leads to, in one
 * transaction, and empty the batch.  On failure the counts are as before. */
static int store_batch(struct walk *w, struct batch *b, const char *key)
{
	struct walk_counts before = w->n;
	char now[32];
	int rc = -1;

	if (b->n == 0)
		return 0;
	db_now(now, sizeof(now));
	if (mirror_begin(w->m) < 0) {
		walk_fail(w, "cannot start a transaction: %s", sqlite3_errmsg(w->db));
		goto out;
	}
	for (int i = 0; i < b->n; i++) {
		if (store_items(w, &b->page[i], now) < 0)
			goto fail;
		w->n.pages++;
	}
	if (mirror_cursor_set(w->m, key, b->page[b->n - 1].next_cursor) < 0 || mirror_commit(w->m) < 0)
		goto fail;
	rc = 0;
	goto out;
fail:
	walk_fail(w, "storing page %ld failed: %s", w->n.pages + 1, sqlite3_errmsg(w->db));
	mirror_rollback(w->m);
	before.requests = w->n.requests;
	before.retries = w->n.retries;
	w->n = before;
out:
	for (int i = 0; i < b->n; i++)
		page_free(&b->page[i]);
	b->n = 0;
	b->bytes = 0;
	return rc;
}

/* "/conversations?limit=N[&status=S][&cursor=C]", malloc'd. */
static char *list_path(struct walk *w, const char *status, const char *cursor)
{
	char *esc = cursor ? api_escape(w->api, cursor) : NULL;
	size_t size = 64 + (status ? strlen(status) : 0) + (esc ? strlen(esc) : 0);
	char *path = malloc(size);

	if (path && (!cursor || esc))
		snprintf(path, size, "/conversations?limit=%ld%s%s%s%s", w->c->page_size,
			 status ? "&status=" : "", status ? status : "",
			 esc ? "&cursor=" : "", esc ? esc : "");
	else {
		free(path);
		path = NULL;
	}
	curl_free(esc);
	return path;
}

/* Walk one status filter (NULL: everything) from its stored cursor or the
 * first page to the end.  Returns 0 when the end was reached. */
static int walk_status(struct walk *w, const char *status)
{
	char key[64], err[256];
	char *cursor = NULL, *path = NULL;
	struct api_response r;
	struct batch b = { .n = 0 };
	struct page *p;
	long pages = 0, limit = WALK_NO_TOTAL_PAGES;
	int restarted = 0, rc = -1;

	snprintf(key, sizeof(key), "walk_cursor:%s", status ? status : "*");
	if (mirror_cursors_reset(w->m) < 0 || mirror_cursor_get(w->m, key, &cursor) < 0) {
		walk_fail(w, "cannot read the stored cursor: %s", sqlite3_errmsg(w->db));
		return -1;
	}
	for (;;) {
		if (*w->stop) {
			walk_fail(w, "stopped by a signal");
			break;
		}
		free(path);
		if (!(path = list_path(w, status, cursor))) {
			walk_fail(w, "out of memory");
			break;
		}
		if (walk_get(w, path, &r) != API_OK) {
			/* An expired or rejected cursor: start over, once. */
			if (r.outcome == API_PERMANENT && cursor && !restarted) {
				log_notice("%s; the server rejected the cursor, starting the walk over",
					   r.error);
				restarted = 1;
				if (store_batch(w, &b, key) < 0)
					break;
				mirror_cursors_reset(w->m);
				free(cursor);
				cursor = NULL;
				continue;
			}
			walk_fail(w, "%s", r.error);
			break;
		}
		p = &b.page[b.n];
		if (page_parse(r.body, r.len, p, err, sizeof(err)) < 0) {
			walk_fail(w, "GET %.120s: %s", path, err);
			break;
		}
		b.n++;
		b.bytes += r.len;
		if (p->total >= 0)
			limit = 2 * p->total / w->c->page_size + 10;
		if (++pages > limit) {
			walk_fail(w, "more than %ld pages for %ld conversations: the server is looping",
				  limit, p->total);
			b.n--;
			page_free(p);
			break;
		}
		if (p->next_cursor) {
			int seen = mirror_cursor_repeated(w->m, p->next_cursor);

			if (seen) {
				walk_fail(w, seen > 0 ? "the server repeated a cursor: it is looping"
						      : "cannot record the cursor: %s",
					  sqlite3_errmsg(w->db));
				break;
			}
		}
		free(cursor);
		cursor = p->next_cursor ? strdup(p->next_cursor) : NULL;
		if (p->next_cursor && !cursor) {
			walk_fail(w, "out of memory");
			break;
		}
		if ((b.n == WALK_BATCH_PAGES || b.bytes >= WALK_BATCH_BYTES || !cursor) &&
		    store_batch(w, &b, key) < 0)
			break;
		notify_watchdog();
		if (!cursor) {
			rc = 0;
			break;
		}
	}
	/* Pages fetched before a failure are good: keep them. */
	if (store_batch(w, &b, key) < 0)
		rc = -1;
	free(path);
	free(cursor);
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
		if (walk_get(w, path, &r) != API_OK) {
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

static int walk_all(struct walk *w)
{
	char now[32];
	unsigned n = w->c->nstatus ? w->c->nstatus : 1;

	for (unsigned i = 0; i < n; i++)
		if (walk_status(w, w->c->nstatus ? w->c->status[i] : NULL) < 0)
			return -1;
	if (db_indexes_restore(w->db) < 0) {
		walk_fail(w, "building the deferred indexes failed: %s", sqlite3_errmsg(w->db));
		return -1;
	}
	if (w->track_seen) {
		db_now(now, sizeof(now));
		if (mirror_mark_gone(w->m, now, &w->n.gone) < 0) {
			walk_fail(w, "marking gone conversations failed: %s", sqlite3_errmsg(w->db));
			return -1;
		}
	}
	walk_details(w);
	return 0;
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
	free(w.raw);
	mirror_close(w.m);
	return rc;
}
