/* outbox.h - delivering queued writes to Dexra (SPEC 3, "The outbox") */
#ifndef DEXSYNC_OUTBOX_H
#define DEXSYNC_OUTBOX_H

#include <stdatomic.h>
#include <sqlite3.h>

#include "api.h"
#include "conf.h"
#include "result.h"

struct outbox;

struct drain_counts {
	long sent, retried, failed, held;
	long wait; /* seconds until the next item is due, -1: none */
};

/* Prepare the outbox statements on db; the outbox then belongs to one
 * thread, with db and api its own. */
struct outbox *outbox_open(sqlite3 *db, struct api *api, const struct conf *c);
void outbox_close(struct outbox *ob);

/* At a start, or a reload's new outbox: the answers a stop kept in
 * DATABASE.answers (kept.h) are taken into memory (the file is removed)
 * and recorded, or kept to be recorded first by the next drain, and the
 * reserve kept_save writes over on a full disk is made.  Then,
 * with sending (a start), every other item left in 'sending' by a crash
 * goes back to 'pending' (delivery is at least once; the Idempotency-Key
 * lets the server see the repeat): only holding the daemon's lock
 * (lock.h), as another daemon's items in 'sending' are in flight.  *n
 * gets the count; DX_OK, or DX_DB or DX_NOMEM after logging. */
enum dx_result outbox_recover(struct outbox *ob, int sending, int *n);

/* Send every item that is due now, oldest first within each target; a
 * target whose head waits for a retry holds back its later items.  Finding
 * the next due item is one lookup in an index, whatever waits.  An answer
 * the database refuses to record is kept and recorded first by the next
 * drain (or by outbox_close); its target sends nothing before.  Stops
 * early when *stop is set.  Returns DX_OK, or DX_DB on a database error
 * (DX_NOMEM when out of memory), after logging. */
enum dx_result outbox_drain(struct outbox *ob, atomic_int *stop, struct drain_counts *n);

/* Try to record the answers the database refused until until (seconds of
 * CLOCK_MONOTONIC), waiting for the lock no longer; at a stop: what is
 * left is logged by outbox_close and sent again after a restart.  Returns
 * how many are left (a count, not a result: it cannot fail otherwise). */
int outbox_settle(struct outbox *ob, long until);

#endif
