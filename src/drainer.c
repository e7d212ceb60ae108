/* drainer.c - the outbox's own thread, connection and HTTP client
 *
 * The walk holds the main thread for minutes or hours (pages, details,
 * retries); the outbox must not wait for it.  So the outbox runs here, on
 * a connection and a libcurl handle of its own: the two take turns on the
 * database's write lock, each transaction about a second at most, and
 * max-rate counts the requests of both (api.c). */
#include "config.h"

#include <assert.h>
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
#include "metrics.h"
#include "outbox.h"

/* A stop gives the outbox DRAINER_GRACE_S for a request in flight, and
 * until DRAINER_STOP_S after it to record the answers the database refused:
 * within the unit's TimeoutStopSec=30s. */
#define DRAINER_GRACE_S 10
#define DRAINER_STOP_S	20

/* Items sent and failed since the daemon started: across reloads, which
 * build a new drainer. */
static atomic_long total_sent, total_failed;

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
	int poked;	      /* under mu: drain again now */
	atomic_int stop;      /* take no further item */
	atomic_int cancel;    /* abandon the request in flight */
	atomic_long stop_at;  /* when stop was asked (mono_seconds) */
	atomic_int last;      /* end after the drain that starts next */
	atomic_int done;      /* the thread has ended (set under mu) */
	atomic_int failed_db; /* the last drain stopped on a database error */
};

/* The monotonic clock's seconds. */
static long mono_seconds(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long)now.tv_sec;
}

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

	assert(d->ob && d->db && d->api);
	for (;;) {
		last = atomic_load(&d->last);
		atomic_store(&d->failed_db, outbox_drain(d->ob, &d->stop, &n) != DX_OK);
		atomic_fetch_add(&total_sent, n.sent);
		atomic_fetch_add(&total_failed, n.failed);
		metrics_drain(n.sent, n.retried, n.failed);
		metrics_flush(d->db, d->c.database, d->c.metrics_file, d->c.poll_interval);
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
	/* Answers the database refused are recorded before the end, if it
	 * lets us in time: else their items are sent again after a restart. */
	if (outbox_settle(d->ob, (atomic_load(&d->stop_at) ? atomic_load(&d->stop_at) : mono_seconds()) +
					 DRAINER_STOP_S) > 0)
		atomic_store(&d->failed_db, 1);
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
	int rc, recovered;

	if (!d) {
		log_err("outbox: out of memory");
		return NULL;
	}
	d->c = *c;
	d->wake_fd = wake_fd;
	pthread_mutex_init(&d->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* drainer_sleep's clock */
	pthread_cond_init(&d->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (!(d->api = api_new(&d->c, key))) {
		log_err("cannot set up the outbox's HTTP client: out of memory");
		goto fail;
	}
	api_set_cancel(d->api, &d->cancel);
	if (!(d->db = db_open(d->c.database, DB_DAEMON)) || !(d->ob = outbox_open(d->db, d->api, &d->c)) ||
	    outbox_recover(d->ob, recover, &recovered) != DX_OK)
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

void drainer_counts(long *sent, long *failed)
{
	*sent = atomic_load(&total_sent);
	*failed = atomic_load(&total_failed);
}

void drainer_poke(struct drainer *d)
{
	pthread_mutex_lock(&d->mu);
	d->poked = 1;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

/* Wait for the thread's end until deadline (monotonic seconds; 0: none);
 * *interrupt set meanwhile stops the final drain.  1 when it ended. */
static int drainer_wait(struct drainer *d, time_t deadline, volatile sig_atomic_t *interrupt)
{
	struct timespec now, until;

	pthread_mutex_lock(&d->mu);
	while (!atomic_load(&d->done)) {
		if (interrupt && *interrupt && !atomic_load(&d->stop)) {
			pthread_mutex_unlock(&d->mu);
			return 0;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (deadline && now.tv_sec >= deadline)
			break;
		/* signals do not wake a condition wait: look every 50 ms */
		until = now;
		until.tv_nsec += 50000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&d->cv, &d->mu, &until);
	}
	pthread_mutex_unlock(&d->mu);
	return atomic_load(&d->done);
}

enum dx_result drainer_stop(struct drainer *d, int final, volatile sig_atomic_t *interrupt)
{
	enum dx_result rc;

	if (!d)
		return DX_OK;
	if (final) {
		atomic_store(&d->last, 1);
		drainer_poke(d);
		if (drainer_wait(d, 0, interrupt))
			goto joined;
	}
	/* No further item; the request in flight may finish (it may have
	 * been delivered, and an answer recorded is an item not sent twice),
	 * for DRAINER_GRACE_S, then it is abandoned as a transient failure. */
	atomic_store(&d->stop_at, mono_seconds());
	atomic_store(&d->stop, 1);
	drainer_poke(d);
	if (!drainer_wait(d, atomic_load(&d->stop_at) + DRAINER_GRACE_S, NULL)) {
		if (api_performing(d->api))
			log_notice(
				"outbox: a request still in flight %d s after the stop is abandoned "
				"(its item goes again later, with the same Idempotency-Key)",
				DRAINER_GRACE_S);
		else
			log_notice(
				"outbox: still busy %d s after the stop: the database refuses the "
				"answers (see above)",
				DRAINER_GRACE_S);
		atomic_store(&d->cancel, 1);
		drainer_wait(d, 0, NULL);
	}
joined:
	pthread_join(d->thread, NULL);
	rc = atomic_load(&d->failed_db) ? DX_DB : DX_OK;
	drainer_free(d);
	return rc;
}
