/* metrics.h - dexsyncd's metrics in the Prometheus text format (SPEC 3, "Metrics")
 *
 * The counters are the process's: they start at 0 with dexsyncd and keep
 * rising across reloads (a restart resets them, as Prometheus expects).
 * Any thread may count (the walk in the main thread, the outbox in the
 * drainer's, requests in both) and write the file, one at a time, with the
 * gauges read from the database through its own connection. */
#ifndef DEXSYNC_METRICS_H
#define DEXSYNC_METRICS_H

#include "result.h"

#include <sqlite3.h>

#include "mirror.h"

/* One request came to outcome (api_classify's).  Any thread. */
void metrics_request(enum dx_result outcome);

/* A walk ended as outcome ("ok", "failed" or "interrupted") after seconds,
 * with the figures in *w (NULL: none).  Any thread. */
void metrics_walk(const char *outcome, const struct walk_counts *w, double seconds);

/* A drain sent, retried and failed so many items.  Any thread. */
void metrics_drain(long sent, long retried, long failed);

/* Write path now: the counters, and the gauges read from db (the mirror at
 * database, the label every sample carries), to a temporary file in path's
 * directory, then renamed over path, mode 0644 (counts only).  A failure is
 * logged once, and again only after a success.  0 or -1. */
int metrics_write(sqlite3 *db, const char *database, const char *path);

/* The daemon's schedule, called after each walk and each drain (the
 * outbox's thread drains at least every poll-interval): write path when
 * something was counted since the last write, or the last write is older
 * than METRICS_REFRESH seconds (the age gauges move with time), but never
 * sooner than min_gap seconds after the last write.  path "" does
 * nothing.  Either thread, with its own connection. */
#define METRICS_REFRESH 60
void metrics_flush(sqlite3 *db, const char *database, const char *path, long min_gap);

#endif
