/* service.c - the daemon's loop: walks, drains, signals, reloads
 *
 * Signal handlers only set a flag and write a byte to a pipe that the loop
 * polls; the walks happen in the loop, the outbox in its own thread
 * (drainer.c), which writes to the same pipe when STATUS= should change.  The stop flag is also watched by the
 * walk, the drain and the HTTP client, so SIGTERM ends the current
 * transaction and nothing after it. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_MALLOC_TRIM
#include <malloc.h>
#endif

#include "api.h"
#include "confurl.h"
#include "db.h"
#include "drainer.h"
#include "lock.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "service.h"
#include "walk.h"

/* How often the lock file is looked at (lock_check), idle or walking: while
 * it is gone, a second dexsyncd could start and take items this one sends. */
#define LOCK_CHECK_MS  1000
#define WALK_MAX_PAUSE 86400 /* the longest Retry-After a failed walk waits */

/* The heap a walk grew is kept while it runs (keep_heap in dexsyncd.c) and
 * given back to the kernel once it is over, for the idle hours. */
static void give_back_heap(void)
{
#ifdef HAVE_MALLOC_TRIM
	malloc_trim(0);
#endif
}

static volatile sig_atomic_t stop_requested, reload_requested, walk_requested;
static int wake_pipe[2] = { -1, -1 };

/* Everything built from one configuration; a reload builds a new one. */
struct runtime {
	struct conf c;
	int lock_fd;	    /* the daemon's lock on c.database (lock.h) */
	sqlite3 *db;	    /* the walk's and STATUS='s connection */
	struct api *api;    /* the walk's client */
	struct drainer *dr; /* the outbox, in a thread of its own */
	double lock_seen;   /* when the lock file was last looked at (mono_now) */
	int lock_lost;	    /* another dexsyncd holds it now: stop */
};

static void on_signal(int sig)
{
	int saved = errno;

	if (sig == SIGHUP)
		reload_requested = 1;
	else if (sig == SIGUSR1)
		walk_requested = 1;
	else
		stop_requested = 1;
	if (wake_pipe[1] >= 0 && write(wake_pipe[1], "", 1) < 0) {
		/* the pipe is full: the loop is awake already */
	}
	errno = saved;
}

static int install_signals(void)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1 };
	struct sigaction sa;

	if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		log_err("cannot create the wake-up pipe: %s", strerror(errno));
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal; /* no SA_RESTART: sleeps wake up at once */
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

/* Close rt; its lock is released unless keep_lock. */
static void runtime_close(struct runtime *rt, int keep_lock)
{
	drainer_stop(rt->dr, 0, NULL);
	api_free(rt->api); /* wipes the key */
	db_close(rt->db);
	if (!keep_lock)
		lock_release(rt->lock_fd);
	conf_free(&rt->c);
	memset(rt, 0, sizeof(*rt));
	rt->lock_fd = -1;
}

/* Build a runtime from c, which it takes over (also on failure), holding
 * lock_fd, the daemon's lock on c's database, or taking it when -1.  The
 * key is read once and kept only inside the two HTTP clients' headers.
 * Deferred indexes that a walk cut short left unbuilt are built first;
 * with recover, items left in 'sending' by a crash go back to pending. */
static int runtime_open(struct runtime *rt, struct conf *c, int lock_fd, int recover)
{
	char *key;

	memset(rt, 0, sizeof(*rt));
	rt->c = *c;
	memset(c, 0, sizeof(*c));
	rt->lock_fd = lock_fd;
	if (rt->lock_fd < 0 && (rt->lock_fd = lock_daemon(rt->c.database)) < 0)
		goto fail;
	lock_write_pid(rt->lock_fd);
	if (!(key = conf_api_key(&rt->c)))
		goto fail;
	rt->api = api_new(&rt->c, key);
	if (!rt->api) {
		conf_key_free(key);
		log_err("cannot set up the HTTP client: out of memory");
		goto fail;
	}
	if (!(rt->db = db_open(rt->c.database, DB_DAEMON))) {
		conf_key_free(key);
		goto fail;
	}
	if (db_indexes_restore(rt->db) != DX_OK) {
		log_err("database %s: the deferred indexes could not be built (above): dexsyncd stops; "
			"its next start builds them",
			rt->c.database);
		conf_key_free(key);
		goto fail;
	}
	api_set_stop(rt->api, &stop_requested);
	rt->dr = drainer_start(&rt->c, key, wake_pipe[1], recover);
	conf_key_free(key);
	if (!rt->dr)
		goto fail;
	return 0;
fail:
	runtime_close(rt, lock_fd >= 0);
	return -1;
}

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Is the lock file still ours?  Someone may remove or replace it: then
 * lock_check locks the file there again, or, when another dexsyncd holds
 * it now, this one stops (rt->lock_lost): one daemon per database. */
static int lock_kept(struct runtime *rt)
{
	rt->lock_seen = mono_now();
	if (lock_check(&rt->lock_fd, rt->c.database) < 0) {
		rt->lock_lost = 1;
		stop_requested = 1;
		return -1;
	}
	return 0;
}

/* A walk may take hours (an initial mirror, a detail phase): the lock file
 * is looked at during it too. */
static void walk_tick(void *arg)
{
	struct runtime *rt = arg;

	if (mono_now() - rt->lock_seen >= LOCK_CHECK_MS / 1000.0)
		lock_kept(rt);
}

/* Items waiting to go, for STATUS=; -1 when the database cannot say. */
static long outbox_depth(sqlite3 *db)
{
	sqlite3_stmt *st;
	long n = -1;

	if (sqlite3_prepare_v2(db, "SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending')", -1,
			       &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return n;
}

static void report_status(struct runtime *rt, const char *walk_outcome, const struct walk_counts *w)
{
	char when[32];
	long sent, failed;

	db_now(when, sizeof(when));
	drainer_counts(&sent, &failed);
	notify_status(
		"last walk %s at %s (%ld seen, %ld inserted, %ld changed, %ld gone); "
		"outbox: %ld pending, %ld sent and %ld failed since start",
		walk_outcome, when, w->seen, w->inserted, w->changed, w->gone, outbox_depth(rt->db), sent,
		failed);
}

int service_once(struct conf *c, int lock_fd)
{
	struct walk_counts w = { 0 };
	struct runtime rt;
	enum dx_result walked;
	double t0;
	int rc;

	if (install_signals() < 0 || runtime_open(&rt, c, lock_fd, 1) < 0)
		return 1;
	t0 = mono_now();
	/* Stopped by a signal is not a failure: the walk resumes next time. */
	walked = walk_run(rt.db, rt.api, &rt.c, &stop_requested, &w,
			  &(struct walk_tick){ .fn = walk_tick, .arg = &rt });
	metrics_walk(walked == DX_OK ? "ok" : stop_requested ? "interrupted" : "failed", &w, mono_now() - t0);
	rc = (walked != DX_OK && !stop_requested) || rt.lock_lost;
	if (drainer_stop(rt.dr, 1, &stop_requested) != DX_OK)
		rc = 1;
	rt.dr = NULL;
	if (*rt.c.metrics_file)
		metrics_write(rt.db, rt.c.database, rt.c.metrics_file);
	runtime_close(&rt, 0);
	return rc;
}

/* SIGHUP: read the file again; on any error keep what runs.  The lock
 * moves only when the database does. */
/* Do a and b name one file (another spelling, a link), or one name? */
static int same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	if (!strcmp(a, b))
		return 1;
	return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static void reload(struct runtime *rt, const char *conf_path, int level_override)
{
	struct runtime fresh;
	struct conf c;
	int same_db;

	notify_reloading();
	log_repeats_forget();
	log_notice("reloading %s", conf_path);
	if (conf_load(conf_path, conf_url_checks, &c) < 0) {
		log_err("%s is invalid; keeping the running configuration", conf_path);
		notify_ready();
		return;
	}
	/* For a moment two outbox threads run: each item goes to 'sending'
	 * only from 'pending', so one of them sends it, in its queue's order. */
	same_db = same_file(c.database, rt->c.database);
	if (runtime_open(&fresh, &c, same_db ? rt->lock_fd : -1, !same_db) < 0) {
		log_err("cannot apply %s; keeping the running configuration", conf_path);
	} else {
		runtime_close(rt, same_db);
		*rt = fresh;
		log_set_facility(rt->c.syslog_facility);
		log_set_level(level_override >= 0 ? level_override : rt->c.log_level);
		log_notice("configuration reloaded from %s", conf_path);
	}
	notify_ready();
}

/* Milliseconds the loop may sleep: until the next walk is due, the
 * watchdog wants feeding, or the lock file is looked at again. */
static int sleep_ms(double next_walk)
{
	double ms = (next_walk - mono_now()) * 1000;

	if (notify_watchdog_ms() >= 0 && ms > notify_watchdog_ms())
		ms = (double)notify_watchdog_ms();
	return ms < 0 ? 0 : ms > LOCK_CHECK_MS ? LOCK_CHECK_MS : (int)ms + 1;
}

static void drain_wake_pipe(void)
{
	char buf[64];

	while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
		;
}

/* Seconds until the next walk: the interval, or when a walk failed while
 * the server asked to wait longer (Retry-After), that wait, up to a day. */
static long walk_pause(const struct runtime *rt, const char *outcome)
{
	long wait = (long)(api_not_before(rt->api) - time(NULL));

	if (!strcmp(outcome, "failed") && wait > rt->c.sync_interval) {
		if (wait > WALK_MAX_PAUSE)
			wait = WALK_MAX_PAUSE;
		log_notice("next walk in %ld s: the server asked to wait that long", wait);
		return wait;
	}
	return rt->c.sync_interval;
}

int service_loop(struct conf *c, const char *conf_path, int level_override, int lock_fd)
{
	struct walk_counts w = { 0 };
	struct runtime rt;
	struct pollfd pfd;
	const char *outcome = "not yet";
	double next_walk, t0;
	int rc;

	if (install_signals() < 0 || runtime_open(&rt, c, lock_fd, 1) < 0)
		return 1;
	notify_init();
	log_notice("started: walking every %ld s, outbox checked every %ld s", rt.c.sync_interval,
		   rt.c.poll_interval);
	notify_ready();
	report_status(&rt, outcome, &w);
	next_walk = mono_now();
	while (!stop_requested) {
		if (reload_requested) {
			reload_requested = 0;
			reload(&rt, conf_path, level_override);
			report_status(&rt, outcome, &w);
		}
		if (lock_kept(&rt) < 0)
			break;
		if (walk_requested || mono_now() >= next_walk) {
			walk_requested = 0;
			t0 = mono_now();
			outcome = walk_run(rt.db, rt.api, &rt.c, &stop_requested, &w,
					   &(struct walk_tick){ .fn = walk_tick, .arg = &rt }) == DX_OK ?
					  "ok" :
				  stop_requested ? "interrupted" :
						   "failed";
			metrics_walk(outcome, &w, mono_now() - t0);
			metrics_flush(rt.db, rt.c.database, rt.c.metrics_file, rt.c.poll_interval);
			next_walk = mono_now() + (double)walk_pause(&rt, outcome);
			drainer_poke(rt.dr);
			report_status(&rt, outcome, &w);
			give_back_heap();
		}
		notify_watchdog();
		if (stop_requested || reload_requested || walk_requested)
			continue;
		pfd.fd = wake_pipe[0];
		pfd.events = POLLIN;
		if (poll(&pfd, 1, sleep_ms(next_walk)) > 0) {
			drain_wake_pipe();
			report_status(&rt, outcome, &w); /* the outbox moved */
		}
	}
	notify_stopping();
	rc = rt.lock_lost;
	if (!rc)
		log_notice("stopping on a signal");
	runtime_close(&rt, 0);
	return rc;
}
