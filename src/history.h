/* history.h - what dexsync has seen of each conversation (conversation_events):
 * the timeline of one, and pruning old events */
#ifndef DEXSYNC_HISTORY_H
#define DEXSYNC_HISTORY_H

#include <sqlite3.h>
#include <stdio.h>

#include "report.h"
#include "result.h"

/* Print the timeline of the conversation whose id is the len bytes at id:
 * first seen, each event, each listed last message and each message sent
 * from the outbox, in time order, as a table, CSV or JSON.  Returns 0, or
 * -1 after logging a one-line error (a conversation the mirror has never
 * seen is one). */
int history_print(sqlite3 *db, const char *id, size_t len, enum report_format fmt, FILE *out);

/* Fold the first closes of the events above the mark 'history:closes_folded'
 * into conversation_first_closes and move the mark to the last event, in
 * one transaction (src/sql/0007-first-closes.sql): report_time_to_close
 * then reads them through its indexes.  Writes nothing when no event came
 * since.  *folded gets the count of conversations added.  Returns DX_OK, or
 * DX_DB after logging (the report stays right: it reads the events above
 * the mark itself). */
enum dx_result history_fold_closes(sqlite3 *db, long *folded);

/* Delete the events seen more than days ago, oldest first, in transactions
 * of at most HISTORY_PRUNE_BATCH events, so that the write lock is never
 * held long.  *deleted gets the count.  Returns DX_OK, or DX_DB after
 * logging. */
#define HISTORY_PRUNE_BATCH 1000
enum dx_result history_prune(sqlite3 *db, long days, long *deleted);

#endif
