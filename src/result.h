/* result.h - dexsync's result codes: what a failing function came to
 *
 * As in curl: a function that can fail returns an enum dx_result, callers
 * switch on the code, and dx_strerror() names each one.  The details (a
 * path, an HTTP status, SQLite's message) still go to the log, or to a
 * message buffer the caller logs; the code alone decides what happens.
 *
 * What returns something else, and why:
 *  - a command of dexsync or the daemon's service_once/service_loop: the
 *    process's exit status (status_run, report_run's 0/-1 the command maps
 *    to 1, backup_run, check_run, history_print);
 *  - what checks a user's own words (conf_load, conf_parse_duration,
 *    queue_parse_attribute): -1 with the reason logged or in err, a
 *    mistake to show, not a code for a caller to switch on;
 *  - a file descriptor (lock_daemon, lock_try), a count (backup_integrity,
 *    outbox_settle), a predicate (queue_valid_id, lister_ready), or which of
 *    three successes it was (mirror_upsert);
 *  - what writes to a FILE returns 0 or -1 as stdio does (escape_fputs,
 *    metrics_write);
 *  - a static helper inside one file may return 0 or -1 to the function of
 *    its file that calls it, which turns that into a code: the code is what
 *    crosses a module's boundary, where callers decide. */
#ifndef DEXSYNC_RESULT_H
#define DEXSYNC_RESULT_H

enum dx_result {
	DX_OK = 0,
	DX_NOMEM,	/* out of memory */
	DX_DB,		/* the database refused (locked, full, corrupt ...) */
	DX_SCHEMA,	/* a file that is not a dexsync mirror of this
				 * program's schema (left as it is) */
	DX_TRANSIENT,	/* a request failed in a way that may pass: no
				 * connection, a timeout, 408, 429, 5xx */
	DX_PERMANENT,	/* the server refused the request: asking again
				 * will not help */
	DX_GONE,	/* 404 or 410: what was asked for does not exist */
	DX_BAD_ANSWER,	/* an answer that is not what the API promises */
	DX_LOOPING,	/* the server lists forever */
	DX_STOPPED,	/* stopped by a signal or cancelled */
	DX_SYSTEM,	/* a system call failed (errno says why) */
	DX_RESULT_COUNT /* not a result: the number of them */
};

/* A short, human-readable name of r; a value out of range gets one too.
 * Never NULL; the string is static. */
const char *dx_strerror(enum dx_result r);

#endif
