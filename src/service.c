/* service.c - the daemon's loop: walks, drains, signals, reloads
 *
 * Signal handlers only set a flag and write a byte to a pipe that the loop
 * polls; all work happens in the loop.  The stop flag is also watched by the
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
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "db.h"
#include "log.h"
#include "notify.h"
#include "outbox.h"
#include "service.h"
#include "walk.h"

static volatile sig_atomic_t stop_requested, reload_requested, walk_requested;
static int wake_pipe[2] = { -1, -1 };

/* Everything built from one configuration; a reload builds a new one. */
struct runtime {
	struct conf c;
	sqlite3 *db;
	struct api *api;
	struct outbox *ob;
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
	sa.sa_handler = on_signal;      /* no SA_RESTART: sleeps wake up at once */
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static void runtime_close(struct runtime *rt)
{
	outbox_close(rt->ob);
	api_free(rt->api);      /* wipes the key */
	db_close(rt->db);
	conf_free(&rt->c);
	memset(rt, 0, sizeof(*rt));
}

/* Build a runtime from c, which it takes over (also on failure).  The key
 * is read once and kept only inside the HTTP client's header. */
static int runtime_open(struct runtime *rt, struct conf *c)
{
	char *key;

	memset(rt, 0, sizeof(*rt));
	rt->c = *c;
	memset(c, 0, sizeof(*c));
	if (!(key = conf_api_key(&rt->c)))
		goto fail;
	rt->api = api_new(&rt->c, key);
	conf_key_free(key);
	if (!rt->api) {
		log_err("cannot set up the HTTP client: out of memory");
		goto fail;
	}
	if (!(rt->db = db_open(rt->c.database, DB_DAEMON)))
		goto fail;
	api_set_stop(rt->api, &stop_requested);
	if (!(rt->ob = outbox_open(rt->db, rt->api, &rt->c)))
		goto fail;
	return 0;
fail:
	runtime_close(rt);
	return -1;
}

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Pending items, for STATUS=; -1 when the database cannot say. */
static long outbox_depth(sqlite3 *db)
{
	sqlite3_stmt *st;
	long n = -1;

	if (sqlite3_prepare_v2(db, "SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending')",
			       -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return n;
}

static void report_status(struct runtime *rt, const char *walk_outcome, const struct walk_counts *w)
{
	char when[32];

	db_now(when, sizeof(when));
	notify_status("last walk %s at %s (%ld seen, %ld inserted, %ld changed, %ld gone); outbox: %ld pending",
		      walk_outcome, when, w->seen, w->inserted, w->changed, w->gone, outbox_depth(rt->db));
}

int service_once(struct conf *c)
{
	struct runtime rt;
	struct drain_counts n;
	int rc;

	if (install_signals() < 0 || runtime_open(&rt, c) < 0)
		return 1;
	rc = outbox_recover(rt.ob) < 0;
	if (!rc)
		rc = walk_run(rt.db, rt.api, &rt.c, &stop_requested, NULL) < 0;
	if (!stop_requested && outbox_drain(rt.ob, &stop_requested, &n) < 0)
		rc = 1;
	runtime_close(&rt);
	return rc;
}

/* SIGHUP: read the file again; on any error keep what runs. */
static void reload(struct runtime *rt, const char *conf_path, int level_override)
{
	struct runtime fresh;
	struct conf c;

	notify_reloading();
	log_notice("reloading %s", conf_path);
	if (conf_load(conf_path, &c) < 0) {
		log_err("%s is invalid; keeping the running configuration", conf_path);
	} else if (runtime_open(&fresh, &c) < 0) {
		log_err("cannot apply %s; keeping the running configuration", conf_path);
	} else {
		runtime_close(rt);
		*rt = fresh;
		log_set_facility(rt->c.syslog_facility);
		log_set_level(level_override >= 0 ? level_override : rt->c.log_level);
		log_notice("configuration reloaded from %s", conf_path);
	}
	notify_ready();
}

/* Milliseconds the loop may sleep: until the next walk or drain is due,
 * or the watchdog wants feeding. */
static int sleep_ms(double next_walk, double next_drain)
{
	double ms = (next_walk < next_drain ? next_walk : next_drain) - mono_now();

	ms *= 1000;
	if (notify_watchdog_ms() >= 0 && ms > notify_watchdog_ms())
		ms = (double)notify_watchdog_ms();
	return ms < 0 ? 0 : ms > 86400000 ? 86400000 : (int)ms + 1;
}

/* Deliver what is due; returns when the outbox should be looked at again:
 * after poll-interval, or sooner when a retry falls due before that. */
static double drain(struct runtime *rt, const char *outcome, const struct walk_counts *w)
{
	struct drain_counts n;
	double wait = (double)rt->c.poll_interval;

	if (outbox_drain(rt->ob, &stop_requested, &n) < 0)
		log_warning("outbox: the drain stopped on a database error; trying again in %ld s",
			    rt->c.poll_interval);
	else if (n.wait >= 0 && n.wait < wait)
		wait = (double)n.wait;
	if (n.sent || n.failed)
		report_status(rt, outcome, w);
	return mono_now() + wait;
}

static void drain_wake_pipe(void)
{
	char buf[64];

	while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
		;
}

int service_loop(struct conf *c, const char *conf_path, int level_override)
{
	struct walk_counts w = { 0 };
	struct runtime rt;
	struct pollfd pfd;
	const char *outcome = "not yet";
	double next_walk, next_drain;
	if (install_signals() < 0 || runtime_open(&rt, c) < 0)
		return 1;
	notify_init();
	if (outbox_recover(rt.ob) < 0) {
		runtime_close(&rt);
		return 1;
	}
	log_notice("started: walking every %ld s, outbox checked every %ld s",
		   rt.c.sync_interval, rt.c.poll_interval);
	notify_ready();
	report_status(&rt, outcome, &w);
	next_walk = next_drain = mono_now();
	while (!stop_requested) {
		if (reload_requested) {
			reload_requested = 0;
			reload(&rt, conf_path, level_override);
		}
		if (walk_requested || mono_now() >= next_walk) {
			walk_requested = 0;
			outcome = walk_run(rt.db, rt.api, &rt.c, &stop_requested, &w) == 0 ? "ok" : "failed";
			next_walk = mono_now() + (double)rt.c.sync_interval;
			next_drain = 0;         /* a walk is followed by a drain, as with -1 */
			report_status(&rt, outcome, &w);
		}
		if (!stop_requested && mono_now() >= next_drain)
			next_drain = drain(&rt, outcome, &w);
		notify_watchdog();
		if (stop_requested || reload_requested || walk_requested)
			continue;
		pfd.fd = wake_pipe[0];
		pfd.events = POLLIN;
		if (poll(&pfd, 1, sleep_ms(next_walk, next_drain)) > 0)
			drain_wake_pipe();
	}
	notify_stopping();
	log_notice("stopping on a signal");
	runtime_close(&rt);
	return 0;
}
