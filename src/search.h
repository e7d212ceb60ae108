/* search.h - dexsync search: full-text search of the mirror through the
 * FTS5 tables conversations_fts and messages_fts (src/sql/0005-search.sql) */
#ifndef DEXSYNC_SEARCH_H
#define DEXSYNC_SEARCH_H

#include <sqlite3.h>
#include <stdio.h>

enum search_format { SEARCH_TABLE, SEARCH_CSV, SEARCH_JSON };

struct search_query {
	const char *text;   /* FTS5 query syntax, UTF-8 */
	const char *status; /* only this status, or NULL */
	const char *since;  /* created at or after (YYYY-MM-DD[THH:MM:SSZ]), or NULL */
	long limit;	    /* at most this many conversations, >= 1 */
	int all;	    /* gone conversations too */
};

#define SEARCH_DEFAULT_LIMIT 20
#define SEARCH_MAX_LIMIT     10000

/* "table", "csv", "json" to a format; -1 if unknown. */
int search_format_from_name(const char *name);

/* What is wrong with a query that FTS5 refused, in words: a malloc'd
 * line naming the problem ("a \"phrase\" is not closed", "'@' is not part
 * of the query syntax: ..."), made from SQLite's message errmsg.  NULL when
 * out of memory.  Pure: no I/O. */
char *search_explain_error(const char *errmsg);

/* What is wrong with the query before it is run (empty, not UTF-8, a
 * control character, too long), as a static string; NULL when nothing. */
const char *search_query_problem(const char *query);

/* Find the conversations whose subject, last message or messages match
 * q->text, best bm25 rank first, one row per conversation, and print them
 * to out in fmt, each with a snippet of the matching text.  Reads only: it
 * works on a read-only connection.  Returns the number of conversations
 * printed (0: none matched), or -1 after logging one line that says what
 * is wrong (a malformed query, a database error). */
long search_run(sqlite3 *db, const struct search_query *q, enum search_format fmt, FILE *out);

#endif
