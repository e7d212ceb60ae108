/* drainer.h - the outbox's own thread, so that writes never wait for a walk
 * (SPEC 3, "Writes do not wait for the walk") */
#ifndef DEXSYNC_DRAINER_H
#define DEXSYNC_DRAINER_H

#include <signal.h>

#include "conf.h"
#include "result.h"

struct drainer;

/* Open a connection to c->database and a client with key, take the
 * answers a stop kept (outbox_recover), with recover put the items a crash
 * left in 'sending' back to pending (only the holder of the daemon's lock
 * may), and start a thread that drains
 * the outbox now and then every poll-interval (sooner when a retry falls
 * due).  After a drain that sent or failed anything it writes a byte to
 * wake_fd, for the caller's STATUS=.  The strings of c must outlive the
 * drainer (c itself may move).  NULL
 * after logging why. */
struct drainer *drainer_start(const struct conf *c, const char *key, int wake_fd, int recover);

/* Drain now, not at the next poll-interval (after a walk, as -1 does). */
void drainer_poke(struct drainer *d);

/* Items sent and failed since the daemon started (reloads included), for
 * STATUS=. */
void drainer_counts(long *sent, long *failed);

/* Stop the thread and free it.  With final, the thread ends after one more
 * full drain (dexsyncd -1), unless *interrupt becomes set meanwhile, which
 * abandons a request in flight as a transient failure.  Returns DX_OK, or
 * DX_DB when the last drain stopped on a database error (or left answers
 * unrecorded). */
enum dx_result drainer_stop(struct drainer *d, int final, volatile sig_atomic_t *interrupt);

#endif
