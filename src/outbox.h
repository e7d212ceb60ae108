/* outbox.h - delivering queued writes to Dexra (SPEC 3, "The outbox") */
#ifndef DEXSYNC_OUTBOX_H
#define DEXSYNC_OUTBOX_H

#include <signal.h>
#include <sqlite3.h>

#include "api.h"
#include "conf.h"

struct outbox;

struct drain_counts {
	long sent, retried, failed, held;
	long wait;              /* seconds until the first waiting head is due, -1: none */
};

/* Prepare the outbox statements on db. */
struct outbox *outbox_open(sqlite3 *db, struct api *api, const struct conf *c);
void outbox_close(struct outbox *ob);

/* Items left in 'sending' by a crash go back to 'pending' (delivery is at
 * least once; the Idempotency-Key lets the server see the repeat).  Call
 * once at start-up.  Returns the count, or -1. */
int outbox_recover(struct outbox *ob);

/* Send every item that is due now, oldest first within each target; a
 * target whose head waits for a retry holds back its later items.  Stops
 * early when *stop is set.  Returns 0, or -1 on a database error. */
int outbox_drain(struct outbox *ob, volatile sig_atomic_t *stop, struct drain_counts *n);

#endif
