/* metrics.c - dexsyncd's metrics file in the Prometheus text format
 *
 * Designed for node_exporter's textfile collector: base units (seconds),
 * counters named _total, HELP and TYPE for every family, labels only where
 * they take a few values (outcome, kind, state), and a database label on
 * every sample so that the files of several workspaces on one host (one
 * dexsyncd@NAME each) do not collide.  The file is written whole to a
 * temporary name that the collector ignores (it reads *.prom only), then
 * renamed into place, so a reader never sees half of it. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "log.h"
#include "metrics.h"

/* The counters, since start; any thread adds to them. */
static atomic_long requests[3]; /* ok, transient, permanent: outcome_names */
static atomic_long walks[3];	/* ok, failed, interrupted */
static atomic_long walk_retries, outbox_retries;
static atomic_long inserted, changed, gone, sent, failed;
static atomic_long last_walk_us = -1; /* the last walk's length; -1: none yet */
static atomic_int dirty = 1;	      /* counted since the last write */

/* The writer's state: the walk's thread and the outbox's both write the
 * file (after a walk; after a drain, and every poll-interval), one at a
 * time under write_mu. */
static pthread_mutex_t write_mu = PTHREAD_MUTEX_INITIALIZER;
static double last_write = -1e18; /* monotonic seconds, under write_mu */
static int write_failing;	  /* under write_mu */

static const char *const outcome_names[] = { "ok", "transient", "permanent" };
static const char *const walk_names[] = { "ok", "failed", "interrupted" };
static const char *const kinds[] = { "message", "user_update", "conversation" };
static const char *const states[] = { "pending", "sending", "sent", "failed", "cancelled" };
#define N_KINDS	 (sizeof(kinds) / sizeof(kinds[0]))
#define N_STATES (sizeof(states) / sizeof(states[0]))

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void metrics_request(enum dx_result outcome)
{
	/* ok, transient, permanent: a 404 or 410 is a permanent one. */
	atomic_fetch_add(&requests[outcome == DX_OK ? 0 : outcome == DX_TRANSIENT ? 1 : 2], 1);
}

void metrics_walk(const char *outcome, const struct walk_counts *w, double seconds)
{
	int i;

	for (i = 0; i < 2 && strcmp(outcome, walk_names[i]); i++)
		;
	atomic_fetch_add(&walks[i], 1);
	if (w) {
		atomic_fetch_add(&walk_retries, w->retries);
		atomic_fetch_add(&inserted, w->inserted);
		atomic_fetch_add(&changed, w->changed);
		atomic_fetch_add(&gone, w->gone);
	}
	atomic_store(&last_walk_us, (long)(seconds * 1e6));
	atomic_store(&dirty, 1);
}

void metrics_drain(long n_sent, long n_retried, long n_failed)
{
	atomic_fetch_add(&sent, n_sent);
	atomic_fetch_add(&outbox_retries, n_retried);
	atomic_fetch_add(&failed, n_failed);
	if (n_sent || n_retried || n_failed)
		atomic_store(&dirty, 1);
}

/* s as a label value: backslash, double quote and line feed escaped, as
 * the text format wants; malloc'd, NULL when out of memory. */
static char *label_escape(const char *s)
{
	char *out = malloc(strlen(s) * 2 + 1), *p = out;

	if (!out)
		return NULL;
	for (; *s; s++) {
		if (*s == '\\' || *s == '"' || *s == '\n')
			*p++ = '\\';
		*p++ = *s == '\n' ? 'n' : *s;
	}
	*p = '\0';
	return out;
}

/* The first column of the first row of sql as a double; *v untouched and
 * 0 returned when there is no row or it is NULL; 1 with a value, -1 on an
 * error (logged). */
static int query_double(sqlite3 *db, const char *sql, double *v)
{
	sqlite3_stmt *st = NULL;
	int rc;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		log_warning("metrics: %s", sqlite3_errmsg(db));
		return -1;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
		*v = sqlite3_column_double(st, 0);
		rc = 1;
	} else if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
		rc = 0;
	} else {
		log_warning("metrics: %s", sqlite3_errmsg(db));
		rc = -1;
	}
	sqlite3_finalize(st);
	return rc;
}

/* Does the table exist (the mirror's tables grow with migrations)? */
static int has_table(sqlite3 *db, const char *name)
{
	sqlite3_stmt *st = NULL;
	int yes = 0;

	if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1", -1, &st,
			       NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
		yes = sqlite3_step(st) == SQLITE_ROW;
	}
	sqlite3_finalize(st);
	return yes;
}

/* HELP and TYPE of one family. */
static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The counters, from the atomics. */
static void write_counters(FILE *f, const char *lbl)
{
	family(f, "dexsync_requests_total", "counter",
	       "Requests to the Dexra API since dexsyncd started, by outcome.");
	for (int i = 0; i < 3; i++)
		fprintf(f, "dexsync_requests_total{database=\"%s\",outcome=\"%s\"} %ld\n", lbl,
			outcome_names[i], atomic_load(&requests[i]));
	family(f, "dexsync_retries_total", "counter",
	       "Transient failures retried since start: walk requests, outbox items put back.");
	fprintf(f, "dexsync_retries_total{database=\"%s\",of=\"walk\"} %ld\n", lbl,
		atomic_load(&walk_retries));
	fprintf(f, "dexsync_retries_total{database=\"%s\",of=\"outbox\"} %ld\n", lbl,
		atomic_load(&outbox_retries));
	family(f, "dexsync_walks_total", "counter",
	       "Walks of the conversation list since start, by outcome.");
	for (int i = 0; i < 3; i++)
		fprintf(f, "dexsync_walks_total{database=\"%s\",outcome=\"%s\"} %ld\n", lbl, walk_names[i],
			atomic_load(&walks[i]));
	family(f, "dexsync_conversations_inserted_total", "counter",
	       "Conversations new to the mirror since start.");
	fprintf(f, "dexsync_conversations_inserted_total{database=\"%s\"} %ld\n", lbl,
		atomic_load(&inserted));
	family(f, "dexsync_conversations_changed_total", "counter",
	       "Conversations whose listed JSON changed since start.");
	fprintf(f, "dexsync_conversations_changed_total{database=\"%s\"} %ld\n", lbl, atomic_load(&changed));
	family(f, "dexsync_conversations_gone_total", "counter",
	       "Conversations no longer listed (gone_at set) since start.");
	fprintf(f, "dexsync_conversations_gone_total{database=\"%s\"} %ld\n", lbl, atomic_load(&gone));
	family(f, "dexsync_outbox_sent_total", "counter", "Outbox items delivered since start.");
	fprintf(f, "dexsync_outbox_sent_total{database=\"%s\"} %ld\n", lbl, atomic_load(&sent));
	family(f, "dexsync_outbox_failed_total", "counter", "Outbox items failed for good since start.");
	fprintf(f, "dexsync_outbox_failed_total{database=\"%s\"} %ld\n", lbl, atomic_load(&failed));
}

/* The outbox's items by kind and state, every pair (0 included), so that
 * each series exists from the start.  -1 on a database error. */
static int write_outbox_items(FILE *f, sqlite3 *db, const char *lbl)
{
	long n[N_KINDS][N_STATES] = { { 0 } };
	sqlite3_stmt *st = NULL;
	int rc;

	if (sqlite3_prepare_v2(db, "SELECT kind, state, count(*) FROM outbox GROUP BY kind, state", -1, &st,
			       NULL) != SQLITE_OK) {
		log_warning("metrics: %s", sqlite3_errmsg(db));
		return -1;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *k = (const char *)sqlite3_column_text(st, 0);
		const char *s = (const char *)sqlite3_column_text(st, 1);
		size_t i, j;

		for (i = 0; i < N_KINDS && k && strcmp(k, kinds[i]); i++)
			;
		for (j = 0; j < N_STATES && s && strcmp(s, states[j]); j++)
			;
		if (i < N_KINDS && j < N_STATES)
			n[i][j] = sqlite3_column_int64(st, 2);
	}
	if (rc != SQLITE_DONE)
		log_warning("metrics: %s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return -1;
	family(f, "dexsync_outbox_items", "gauge", "Items in the outbox, by kind and state.");
	for (size_t i = 0; i < N_KINDS; i++)
		for (size_t j = 0; j < N_STATES; j++)
			fprintf(f, "dexsync_outbox_items{database=\"%s\",kind=\"%s\",state=\"%s\"} %ld\n",
				lbl, kinds[i], states[j], n[i][j]);
	return 0;
}

/* The gauges, read from db now.  -1 on a database error. */
static int write_gauges(FILE *f, sqlite3 *db, const char *lbl)
{
	static const char *const tables[] = { "conversations", "messages", "participants", "users",
					      "conversation_events" };
	double v = 0;
	long us;
	int rc;

	rc = query_double(db,
			  "SELECT CAST(strftime('%s', finished_at) AS INTEGER) FROM sync_runs\n"
			  "WHERE outcome = 'ok' ORDER BY id DESC LIMIT 1",
			  &v);
	if (rc < 0)
		return -1;
	family(f, "dexsync_last_successful_walk_timestamp_seconds", "gauge",
	       "When the last walk that completed ended, as a Unix time; 0: none yet.");
	fprintf(f, "dexsync_last_successful_walk_timestamp_seconds{database=\"%s\"} %.0f\n", lbl,
		rc ? v : 0.0);

	/* This process's last walk, else the database's (to the second). */
	if ((us = atomic_load(&last_walk_us)) >= 0) {
		v = (double)us / 1e6;
		rc = 1;
	} else {
		rc = query_double(db,
				  "SELECT (julianday(finished_at) - julianday(started_at)) * 86400\n"
				  "FROM sync_runs WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1",
				  &v);
		if (rc < 0)
			return -1;
	}
	if (rc) {
		family(f, "dexsync_last_walk_duration_seconds", "gauge", "How long the last walk took.");
		fprintf(f, "dexsync_last_walk_duration_seconds{database=\"%s\"} %.3f\n", lbl, v);
	}

	if (write_outbox_items(f, db, lbl) < 0)
		return -1;
	v = 0;
	if (query_double(db,
			 "SELECT max(0, unixepoch('now') - unixepoch(min(created_at)))\n"
			 "FROM outbox WHERE state = 'pending'",
			 &v) < 0)
		return -1;
	family(f, "dexsync_outbox_oldest_pending_age_seconds", "gauge",
	       "Age of the oldest pending outbox item; 0: none pending.");
	fprintf(f, "dexsync_outbox_oldest_pending_age_seconds{database=\"%s\"} %.0f\n", lbl, v);

	family(f, "dexsync_mirror_rows", "gauge",
	       "Rows in the mirror's tables (gone conversations included).");
	for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
		char sql[80];

		if (!has_table(db, tables[i]))
			continue;
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM \"%s\"", tables[i]);
		if (query_double(db, sql, &v) < 0)
			return -1;
		fprintf(f, "dexsync_mirror_rows{database=\"%s\",table=\"%s\"} %.0f\n", lbl, tables[i], v);
	}
	return 0;
}

/* Write all len bytes of buf to fd; 0, or -1 with errno set. */
static int write_all(int fd, const char *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		if ((n = write(fd, buf, len)) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Log a failure to write the file once, until a write succeeds again. */
static int write_failed(const char *path, const char *what)
{
	if (!write_failing)
		log_warning("metrics file %s: %s (said once until it works again)", path, what);
	write_failing = 1;
	return -1;
}

/* metrics_write without the lock. */
static int write_locked(sqlite3 *db, const char *database, const char *path)
{
	char *text = NULL, *lbl, *tmp;
	size_t len = 0;
	FILE *f;
	int fd, rc, ok, err;

	atomic_store(&dirty, 0);
	last_write = mono_now();
	if (!(lbl = label_escape(database)) || !(f = open_memstream(&text, &len))) {
		free(lbl);
		return write_failed(path, "out of memory");
	}
	write_counters(f, lbl);
	rc = write_gauges(f, db, lbl);
	free(lbl);
	if (fclose(f) != 0 || !text) {
		free(text);
		return write_failed(path, "out of memory");
	}
	if (rc < 0) {
		free(text);
		return write_failed(path, "the database could not be read");
	}
	if (asprintf(&tmp, "%s.XXXXXX", path) < 0) {
		free(text);
		return write_failed(path, "out of memory");
	}
	fd = mkstemp(tmp);
	ok = fd >= 0 && fchmod(fd, 0644) == 0 && write_all(fd, text, len) == 0;
	err = errno;
	if (fd >= 0 && close(fd) < 0 && ok) {
		ok = 0;
		err = errno;
	}
	if (ok && rename(tmp, path) < 0) {
		ok = 0;
		err = errno;
	}
	if (!ok) {
		char why[256];

		snprintf(why, sizeof(why), "cannot write it: %s", strerror(err));
		if (fd >= 0)
			unlink(tmp);
		free(tmp);
		free(text);
		return write_failed(path, why);
	}
	free(tmp);
	free(text);
	if (write_failing)
		log_notice("metrics file %s: written again", path);
	write_failing = 0;
	return 0;
}

int metrics_write(sqlite3 *db, const char *database, const char *path)
{
	int rc;

	pthread_mutex_lock(&write_mu);
	rc = write_locked(db, database, path);
	pthread_mutex_unlock(&write_mu);
	return rc;
}

void metrics_flush(sqlite3 *db, const char *database, const char *path, long min_gap)
{
	double now = mono_now();

	if (!*path)
		return;
	pthread_mutex_lock(&write_mu);
	if (now >= last_write + (atomic_load(&dirty) ? (double)min_gap : (double)METRICS_REFRESH))
		write_locked(db, database, path);
	pthread_mutex_unlock(&write_mu);
}
