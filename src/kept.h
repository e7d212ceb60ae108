/* kept.h - answers the database refused until a stop, kept in a file
 *
 * SPEC 3: a delivered item is never sent again because of a local error.
 * When the database still refuses to record an answer at a stop (another
 * process holds its write lock past the stop's grace), the answer goes to
 * DATABASE.answers, and the next dexsyncd records it before it sends
 * anything; only a crash leaves an item to be sent again. */
#ifndef DEXSYNC_KEPT_H
#define DEXSYNC_KEPT_H

#include <stddef.h>

#include "result.h"

/* One answer; the strings stay the caller's (kept_save) or the loader's
 * (kept_load: valid during the callback). */
struct kept {
	long long id;	 /* the outbox item */
	const char *key; /* its Idempotency-Key: the item must still have it */
	int asked;	 /* 0: it was not sent, and goes back to pending */
	long status;	 /* HTTP status, 0 when none */
	enum dx_result outcome;
	long retry_after;     /* seconds, -1 when not given */
	const char *error;    /* the log line of a failure, or "" */
	const char *body;     /* the body sent when not the payload as queued, or NULL */
	const char *response; /* the answer's body (may hold NULs) */
	size_t response_len;
};

/* The file of kept answers of a database (malloc'd); NULL when out of
 * memory. */
char *kept_path(const char *database);

/* Whether the database has answers kept by a stopped daemon: items in
 * 'sending' then wait for the next dexsyncd, not for a retry by hand. */
int kept_waiting(const char *database);

/* Make sure the reserve kept_save writes over when the disk is full is
 * there (DATABASE.answers-reserve, 1 MiB of zeros).  DX_OK, or DX_NOMEM or
 * DX_SYSTEM after logging (the outbox goes on without it). */
enum dx_result kept_reserve(const char *database);

/* Write n answers to path, durably (a temporary file, fsync, rename, fsync
 * of the directory), readable by the owner only; over the reserve when
 * the disk is full and they fit in it.  DX_OK, or DX_NOMEM or DX_SYSTEM
 * after logging. */
enum dx_result kept_save(const char *path, const struct kept *v, size_t n);

/* Call take(k, arg) for each answer in path; *entries gets how many the
 * file held (taken or left out), -1 when there is no file to remove: none,
 * or one that is not a regular file (logged, left as it is: its items are
 * sent again), or one that cannot be read as answers (moved to path.bad,
 * logged; likewise).  An entry that is not an answer is logged and left
 * out.  Returns DX_OK, or the first result of take that is not DX_OK (the
 * file stays). */
enum dx_result kept_load(const char *path, enum dx_result (*take)(const struct kept *k, void *arg), void *arg,
			 int *entries);

/* Remove path once its answers are taken: it becomes the reserve, whose
 * blocks a stop on a still full disk writes them over again.  DX_OK, or
 * DX_SYSTEM after logging. */
enum dx_result kept_remove(const char *path);

#endif
