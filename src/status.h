/* status.h - dexsync status: the mirror's health, for people and monitoring */
#ifndef DEXSYNC_STATUS_H
#define DEXSYNC_STATUS_H

#include <sqlite3.h>
#include <stdio.h>

#include "conf.h"

/* Print the last walk, the counts, the outbox (the items in 'sending' and
 * the longest-sending one's age), whether a dexsyncd serves database (the
 * path the daemon's lock file is next to) and a health line.  Text from
 * the database is escaped.  Returns 2 when the last walk failed or is older
 * than three sync intervals, or an item has waited past its time by more
 * than max-backoff + poll-interval; else 1 when an item has been sending
 * for more than 10 minutes, or the database cannot be read; else 0. */
int status_run(sqlite3 *db, const char *database, const struct conf *c, FILE *out);

#endif
