/* backup.h - dexsync backup: an online, consistent copy of the mirror (SPEC 4) */
#ifndef DEXSYNC_BACKUP_H
#define DEXSYNC_BACKUP_H

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>

#include "result.h"

/* Pages copied per step, and the pause between steps: the copy never
 * competes with the daemon for long (the daemon's writes go on meanwhile
 * anyway: a WAL reader does not block a writer). */
#define BACKUP_STEP_PAGES 256
#define BACKUP_PAUSE_MS	  5

/* Copy src (an open connection, read-only is enough) into dst, an open,
 * empty database, with SQLite's online backup API in steps of
 * BACKUP_STEP_PAGES pages.  The copy is the snapshot of src when it
 * starts: a read transaction is held on src across the steps, so the
 * daemon's commits meanwhile neither restart it nor get into it.  Stops
 * with DX_STOPPED when *stop becomes set (stop may be NULL).  The copy is
 * left in journal_mode DELETE: one self-contained file.  *pages gets its
 * size in pages.  DX_OK, or DX_DB after logging why. */
enum dx_result backup_copy(sqlite3 *src, sqlite3 *dst, volatile sig_atomic_t *stop, long *pages);

/* PRAGMA integrity_check on db: 0 when it says ok, else the number of
 * problems, each passed to report (with arg) as one line (at most 100);
 * -1 when the check could not run (logged). */
int backup_integrity(sqlite3 *db, void (*report)(void *arg, const char *line), void *arg);

/* dexsync backup FILE: copy src to a temporary file next to path (mode
 * 0600: it holds the mirror), check it with PRAGMA integrity_check, and
 * link it into place as path; an existing path is refused, before and
 * at the end (the final step never replaces a file).  SIGINT, SIGTERM
 * and SIGHUP meanwhile remove the temporary file.  Prints one line on
 * out.  Returns the exit status: 0, or 1 after logging why. */
int backup_run(sqlite3 *src, const char *path, FILE *out);

#endif
