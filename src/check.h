/* check.h - dexsync check: is the mirror sound? (SPEC 4) */
#ifndef DEXSYNC_CHECK_H
#define DEXSYNC_CHECK_H

#include <sqlite3.h>
#include <stdio.h>

/* Check db, the mirror at database (opened read-only: its schema version
 * is the program's, or it would not be open), without writing to it:
 * PRAGMA integrity_check, the rows of each table, the full-text search
 * tables when there are any (FTS5's integrity-check), and items stranded
 * in 'sending' (no dexsyncd serves the database, or one has been sending
 * for over 10 minutes).  What was checked goes to out, one line each; each
 * problem is logged as one line.  Returns the exit status: 0 when there is
 * no problem, else 1. */
int check_run(sqlite3 *db, const char *database, FILE *out);

#endif
