/* ftsbuild.h - the deferred full-text indexes, built two at once */
#ifndef DEXSYNC_FTSBUILD_H
#define DEXSYNC_FTSBUILD_H

#include <sqlite3.h>

#include "result.h"

/* Build the full-text indexes an initial mirror deferred (db_indexes_defer),
 * if any, and put their triggers back, all in one transaction of a
 * connection of its own (daemon is the daemon's, for its file name; it
 * must hold no transaction): one index by a second thread, into a scratch
 * file beside the database, the others in place.  Each index's time and
 * the whole are logged.  DX_OK, or DX_DB after logging (the keys stay: the
 * next start builds them). */
enum dx_result fts_build_deferred(sqlite3 *daemon);

#endif
