/* status.h - dexsync status: the mirror's health, for people and monitoring */
#ifndef DEXSYNC_STATUS_H
#define DEXSYNC_STATUS_H

#include <sqlite3.h>
#include <stdio.h>

#include "conf.h"

/* Print the last walk, the counts and the outbox; returns 0 when healthy,
 * 2 when the last walk failed or is older than three sync intervals, or an
 * item has waited past its time by more than max-backoff + poll-interval;
 * 1 when the database cannot be read. */
int status_run(sqlite3 *db, const struct conf *c, FILE *out);

#endif
