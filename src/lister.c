/* lister.c - the pages of one list walk, fetched and parsed ahead in a thread
 *
 * Fetching a page and parsing it cost about as much as storing it, and need
 * no database: a thread of its own does them while the walk's thread stores
 * the pages before, so on two cores a walk takes the longer of the two, not
 * their sum.  The thread owns the API handle until lister_finish(); pages
 * pass through a queue of LISTER_DEPTH, which bounds the memory.  In an
 * initial mirror, where storing is the slower side, the thread also turns
 * the pages into rows (rendering the JSON the mirror stores, and freeing
 * the parsed tree in the thread that allocated it); in a re-walk it leaves
 * that to the store, which is then the one waiting.  Signals are blocked
 * in the thread: they reach the walk's thread, which alone
 * reads the flag they set and ends the lister through its cancel flag. */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lister.h"
#include "log.h"

#define LISTER_DEPTH	2   /* parsed pages waiting for the store */
#define LISTER_SLICE_MS 100 /* how often a wait looks at the flags */

struct lister {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* the queue changed or the thread ended */
	struct listed queue[LISTER_DEPTH];
	int head, count;
	int ended;	       /* set by the thread as it ends, */
	enum dx_result result; /* with what the list came to */
	atomic_int cancel;     /* set by lister_finish */
	long retries;
	char error[768];	     /* as long as an api_response's */
	volatile sig_atomic_t *stop; /* the walk's thread's */
	/* The thread's own, from lister_start on. */
	struct api *api;
	const struct conf *c;
	char *status, *cursor;
	int rows;
};

void listed_free(struct listed *p)
{
	page_free(&p->page);
	free(p->next_cursor);
	p->next_cursor = NULL;
}

/* "/conversations?limit=N[&status=S][&cursor=C]", malloc'd. */
static char *list_path(struct lister *l)
{
	char *esc = l->cursor ? api_escape(l->api, l->cursor) : NULL;
	size_t size = 64 + (l->status ? strlen(l->status) : 0) + (esc ? strlen(esc) : 0);
	char *path = malloc(size);

	if (path && (!l->cursor || esc))
		snprintf(path, size, "/conversations?limit=%ld%s%s%s%s", l->c->page_size,
			 l->status ? "&status=" : "", l->status ? l->status : "", esc ? "&cursor=" : "",
			 esc ? esc : "");
	else {
		free(path);
		path = NULL;
	}
	curl_free(esc);
	return path;
}

/* Queue a page, waiting for room; 0, or -1 when cancelled (page freed). */
static int push(struct lister *l, struct listed *p)
{
	int rc = 0;

	pthread_mutex_lock(&l->lock);
	while (l->count == LISTER_DEPTH && !atomic_load(&l->cancel))
		pthread_cond_wait(&l->cond, &l->lock);
	assert(l->count >= 0 && l->count <= LISTER_DEPTH);
	if (atomic_load(&l->cancel))
		rc = -1;
	else {
		l->queue[(l->head + l->count) % LISTER_DEPTH] = *p;
		l->count++;
		pthread_cond_broadcast(&l->cond);
	}
	pthread_mutex_unlock(&l->lock);
	if (rc < 0)
		listed_free(p);
	return rc;
}

/* Fetch and parse the next page into *p: DX_OK with a page, or with
 * *again set and none (the cursor was rejected: go round again from the
 * first page), or the failure's code with l->error set. */
static enum dx_result fetch(struct lister *l, struct listed *p, int *restarted, int *again)
{
	char *path = list_path(l), err[256];
	struct api_response r;
	enum dx_result rc;

	p->next_cursor = NULL;
	*again = 0;
	if (!path) {
		snprintf(l->error, sizeof(l->error), "out of memory");
		return DX_NOMEM;
	}
	switch ((rc = api_get(l->api, path, &r, &l->retries, NULL, 0))) {
	case DX_OK:
		if (page_parse(r.body, r.len, &p->page, err, sizeof(err)) != DX_OK) {
			snprintf(l->error, sizeof(l->error), "GET %.120s: %s", path, err);
			rc = DX_BAD_ANSWER;
		} else if ((p->page.next_cursor && !(p->next_cursor = strdup(p->page.next_cursor))) ||
			   (l->rows && page_rows(&p->page, 1) != DX_OK)) {
			snprintf(l->error, sizeof(l->error), "out of memory");
			listed_free(p);
			rc = DX_NOMEM;
		}
		break;
	case DX_PERMANENT:
	case DX_GONE:
		/* An expired or rejected cursor: start over, once. */
		if (l->cursor && !*restarted) {
			log_notice("%s; the server rejected the cursor, starting the walk over", r.error);
			*restarted = p->restart = *again = 1;
			free(l->cursor);
			l->cursor = NULL;
			rc = DX_OK;
			break;
		}
		/* fall through */
	default:
		snprintf(l->error, sizeof(l->error), "%s", r.error);
		break;
	}
	free(path);
	return rc;
}

static void *run(void *arg)
{
	struct lister *l = arg;
	struct listed p = { .restart = 0 };
	enum dx_result rc = DX_OK;
	int restarted = 0, again;

	while (!atomic_load(&l->cancel)) {
		if ((rc = fetch(l, &p, &restarted, &again)) != DX_OK)
			break;
		if (again)
			continue;
		free(l->cursor);
		l->cursor = p.next_cursor ? strdup(p.next_cursor) : NULL;
		if (p.next_cursor && !l->cursor) {
			snprintf(l->error, sizeof(l->error), "out of memory");
			listed_free(&p);
			rc = DX_NOMEM;
			break;
		}
		if (push(l, &p) < 0 || !l->cursor)
			break;
		p.restart = 0;
	}
	if (rc == DX_OK && atomic_load(&l->cancel) && l->cursor) {
		snprintf(l->error, sizeof(l->error), "cancelled");
		rc = DX_STOPPED;
	}
	pthread_mutex_lock(&l->lock);
	l->ended = 1;
	l->result = rc;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

static void lister_free(struct lister *l)
{
	pthread_mutex_destroy(&l->lock);
	pthread_cond_destroy(&l->cond);
	free(l->status);
	free(l->cursor);
	free(l);
}

struct lister *lister_start(struct api *api, const struct conf *c, const char *status, const char *cursor,
			    int rows, volatile sig_atomic_t *stop)
{
	struct lister *l = calloc(1, sizeof(*l));
	sigset_t all, old;
	int rc;

	if (!l)
		return NULL;
	atomic_init(&l->cancel, 0);
	l->api = api;
	l->c = c;
	l->rows = rows;
	l->stop = stop;
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cond, NULL);
	if ((status && !(l->status = strdup(status))) || (cursor && !(l->cursor = strdup(cursor)))) {
		lister_free(l);
		return NULL;
	}
	/* The signal flag is not for the thread: the cancel flag stands in. */
	api_set_stop(api, NULL);
	api_set_cancel(api, &l->cancel);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&l->thread, NULL, run, l);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		log_err("cannot start the lister thread: %s", strerror(rc));
		api_set_cancel(api, NULL);
		api_set_stop(api, stop);
		lister_free(l);
		return NULL;
	}
	return l;
}

/* now + ms on the clock pthread_cond_timedwait uses. */
static struct timespec deadline(long ms)
{
	struct timespec t;

	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

int lister_ready(struct lister *l, long wait_ms)
{
	struct timespec until = deadline(wait_ms);
	int ready;

	pthread_mutex_lock(&l->lock);
	while (l->count == 0 && !l->ended && wait_ms > 0 &&
	       pthread_cond_timedwait(&l->cond, &l->lock, &until) != ETIMEDOUT)
		;
	ready = l->count > 0;
	pthread_mutex_unlock(&l->lock);
	return ready;
}

enum dx_result lister_next(struct lister *l, struct listed *out, int *page)
{
	struct timespec until;
	enum dx_result rc;

	pthread_mutex_lock(&l->lock);
	while (l->count == 0 && !l->ended && !(l->stop && *l->stop)) {
		/* In slices: a signal raises *stop without waking us. */
		until = deadline(LISTER_SLICE_MS);
		pthread_cond_timedwait(&l->cond, &l->lock, &until);
	}
	assert(l->count >= 0 && l->count <= LISTER_DEPTH);
	*page = l->count > 0;
	if (l->count > 0) {
		*out = l->queue[l->head];
		l->head = (l->head + 1) % LISTER_DEPTH;
		l->count--;
		pthread_cond_broadcast(&l->cond);
		rc = DX_OK;
	} else if (l->ended)
		rc = l->result;
	else
		rc = DX_STOPPED;
	pthread_mutex_unlock(&l->lock);
	return rc;
}

const char *lister_error(struct lister *l)
{
	int ended;

	/* The thread writes error before it sets ended, under the lock. */
	pthread_mutex_lock(&l->lock);
	ended = l->ended;
	pthread_mutex_unlock(&l->lock);
	return ended ? l->error : "stopped by a signal";
}

void lister_finish(struct lister *l, long *retries)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->lock);
	atomic_store(&l->cancel, 1);
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	pthread_join(l->thread, NULL);
	api_set_cancel(l->api, NULL);
	api_set_stop(l->api, l->stop);
	for (; l->count > 0; l->count--, l->head = (l->head + 1) % LISTER_DEPTH)
		listed_free(&l->queue[l->head]);
	*retries += l->retries;
	lister_free(l);
}
