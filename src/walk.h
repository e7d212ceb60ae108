/* walk.h - one walk of the conversation list into the mirror (SPEC 3, "The walk") */
#ifndef DEXSYNC_WALK_H
#define DEXSYNC_WALK_H

#include <signal.h>
#include <sqlite3.h>

#include "api.h"
#include "conf.h"
#include "mirror.h"
#include "result.h"

/* What a walk calls between pages and between details: a walk may last
 * hours, and its caller has things to look at meanwhile (the lock file). */
struct walk_tick {
	void (*fn)(void *arg);
	void *arg;
};

/* Walk every configured status to the end, then fetch details.  Resumes an
 * interrupted walk from its stored cursor; *counts gets the figures of the
 * walk (counts may be NULL).  Returns DX_OK when the walk completed, else
 * what it failed with: DX_STOPPED when *stop was raised, DX_LOOPING,
 * DX_TRANSIENT, DX_PERMANENT, DX_DB ... (a row in sync_runs says which,
 * and the log says why). */
enum dx_result walk_run(sqlite3 *db, struct api *api, const struct conf *c, volatile sig_atomic_t *stop,
			struct walk_counts *counts, const struct walk_tick *tick);

#endif
