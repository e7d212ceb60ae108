/* drainer.c - the outbox's own thread, connection and HTTP client
 *
 * The walk holds the main thread for minutes or hours (pages, details,
 * retries); the outbox must not wait for it.  So the outbox runs here, on
 * a connection and a libcurl handle of its own: the two take turns on the
 * database's write lock, each transaction about a second at most, and
 * max-rate counts the requests of both (api.c). */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "db.h"
#include "drainer.h"
#include "log.h"
#include "outbox.h"

struct drainer {
	/* A shallow copy: the strings stay the runtime's, which stops the
	 * drainer before it frees them; the struct itself may move (reload). */
	struct conf c;
	sqlite3 *db;
	struct api *api;
	struct outbox *ob;
	int wake_fd;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int poked;                  /* under mu: drain again now */
	atomic_int stop;            /* abandon everything, at once */
	atomic_int last;            /* end after the drain that starts next */
	atomic_int done;            /* the thread has ended (set under mu) */
	atomic_int failed_db;       /* the last drain stopped on a database error */
	atomic_long sent, failed;   /* since start */
};

/* Sleep until seconds from now, a poke or a stop. */
static void drainer_sleep(struct drainer *d, long seconds)
{
	struct timespec until;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += seconds;
	pthread_mutex_lock(&d->mu);
	while (!d->poked && !atomic_load(&d->stop) && !atomic_load(&d->last))
		if (pthread_cond_timedwait(&d->cv, &d->mu, &until) == ETIMEDOUT)
			break;
	d->poked = 0;
	pthread_mutex_unlock(&d->mu);
}

static void *drainer_main(void *arg)
{
	struct drainer *d = arg;
	struct drain_counts n;
	long wait;
	int last;

	for (;;) {
		last = atomic_load(&d->last);
		atomic_store(&d->failed_db, outbox_drain(d->ob, &d->stop, &n) < 0);
		atomic_fetch_add(&d->sent, n.sent);
		atomic_fetch_add(&d->failed, n.failed);
		if ((n.sent || n.failed) && write(d->wake_fd, "", 1) < 0) {
			/* the pipe is full: the main loop is awake already */
		}
		if (last || atomic_load(&d->stop))
			break;
		wait = d->c.poll_interval;
		if (!atomic_load(&d->failed_db) && n.wait >= 0 && n.wait < wait)
			wait = n.wait;
		drainer_sleep(d, wait);
	}
	pthread_mutex_lock(&d->mu);
	atomic_store(&d->done, 1);
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
	return NULL;
}

/* Free what drainer_start built; the thread is not running. */
static void drainer_free(struct drainer *d)
{
	outbox_close(d->ob);
	api_free(d->api);
	db_close(d->db);
	pthread_mutex_destroy(&d->mu);
	pthread_cond_destroy(&d->cv);
	free(d);
}

struct drainer *drainer_start(const struct conf *c, const char *key, int wake_fd, int recover)
{
	struct drainer *d = calloc(1, sizeof(*d));
	pthread_condattr_t ca;
	sigset_t all, old;
	int rc;

	if (!d) {
		log_err("outbox: out of memory");
		return NULL;
	}
	d->c = *c;
	d->wake_fd = wake_fd;
	pthread_mutex_init(&d->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);    /* drainer_sleep's clock */
	pthread_cond_init(&d->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (!(d->api = api_new(&d->c, key))) {
		log_err("cannot set up the outbox's HTTP client: out of memory");
		goto fail;
	}
	api_set_cancel(d->api, &d->stop);
	if (!(d->db = db_open(d->c.database, DB_DAEMON)) || !(d->ob = outbox_open(d->db, d->api, &d->c)) ||
	    (recover && outbox_recover(d->ob) < 0))
		goto fail;
	/* Signals are the main thread's: it sleeps in poll() for them. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&d->thread, NULL, drainer_main, d);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		log_err("cannot start the outbox's thread: %s", strerror(rc));
		goto fail;
	}
	return d;
fail:
	drainer_free(d);
	return NULL;
}

void drainer_counts(struct drainer *d, long *sent, long *failed)
{
	*sent = atomic_load(&d->sent);
	*failed = atomic_load(&d->failed);
}

void drainer_poke(struct drainer *d)
{
	pthread_mutex_lock(&d->mu);
	d->poked = 1;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

int drainer_stop(struct drainer *d, int final, volatile sig_atomic_t *interrupt)
{
	int rc;

	if (!d)
		return 0;
	atomic_store(final ? &d->last : &d->stop, 1);
	drainer_poke(d);
	/* The final drain may take long; a signal meanwhile cuts it short
	 * (looked at every 50 ms: signals do not wake a condition wait). */
	pthread_mutex_lock(&d->mu);
	while (!atomic_load(&d->done)) {
		struct timespec until;

		if (interrupt && *interrupt)
			atomic_store(&d->stop, 1);
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += 50000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&d->cv, &d->mu, &until);
	}
	pthread_mutex_unlock(&d->mu);
	pthread_join(d->thread, NULL);
	rc = atomic_load(&d->failed_db) ? -1 : 0;
	drainer_free(d);
	return rc;
}
