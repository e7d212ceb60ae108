/* fuzz_search.c - arbitrary bytes as a dexsync search query, through
 * search_run on a small mirror: it prints or refuses with one line, never
 * crashes, leaks or reads out of bounds, and never writes the database
 * (it is opened read-only).  The mirror is built once per process. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "log.h"
#include "search.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sqlite3 *db;
static FILE *sink;

/* A mirror of a few rows with text in several scripts, and many with one
 * word, then opened read-only as dexsync search opens it. */
static void setup(void)
{
	static char path[] = "/tmp/dexsync-fuzz-search-XXXXXX";
	char file[sizeof(path) + 16];
	sqlite3 *w;

	log_open("fuzz_search", LOG_USER, 0, 0);
	log_set_level(LOG_EMERG);
	if (!mkdtemp(path))
		abort();
	snprintf(file, sizeof(file), "%s/mirror.db", path);
	if (!(w = db_open(file, DB_DAEMON)) ||
	    db_exec(w, "INSERT INTO conversations(id, status, subject, last_message_text, raw, "
		       "first_seen_at, changed_at, created_at) VALUES "
		       "('c1', 'open', 'Export bug in reports', 'the CSV is empty', '{}', 'x', 'x', '2026-01-01'),"
		       "('c2', 'closed', 'Café — ça marche?', 'naïve 日本語 emoji 🚚', '{}', 'x', 'x', '2026-02-01'),"
		       "('c3', 'snoozed', 'Refund [order] \"quoted\"', 'line\nbreak\ttab', '{}', 'x', 'x', '2026-03-01');"
		       "INSERT INTO messages(id, conversation_id, text, origin, raw) VALUES "
		       "('m1', 'c1', 'exports fail since Monday', 'listed', '{}'),"
		       "('m2', 'c2', 'café crème', 'outbox', '{}');"
		       /* More rows with "common" than a table's matches ranked
			* (search.c's candidates), and a filter that few pass. */
		       "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5100) "
		       "INSERT INTO conversations(id, status, subject, last_message_text, raw, first_seen_at, "
		       "changed_at, created_at) SELECT 'k' || i, CASE WHEN i % 1000 THEN 'closed' ELSE 'open' END, "
		       "'Common thread ' || i, 'common words', '{}', 'x', 'x', '2025-12-01' FROM n") < 0)
		abort();
	db_close(w);
	if (!(db = db_open(file, DB_READONLY)) || !(sink = fopen("/dev/null", "w")))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum search_format fmts[] = { SEARCH_TABLE, SEARCH_CSV, SEARCH_JSON };
	struct search_query q = { NULL, NULL, NULL, 5, 0 };
	char *text, *why;
	long n;

	if (!db)
		setup();
	if (size < 1)
		return 0;
	/* The first byte picks the format and the filters. */
	q.all = data[0] & 1;
	q.status = data[0] & 2 ? "open" : NULL;
	q.since = data[0] & 4 ? "2026-01-15" : NULL;
	if (!(text = malloc(size)))
		return 0;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	q.text = text;
	n = search_run(db, &q, fmts[(data[0] >> 3) % 3], sink);
	if (n < -1 || n > q.limit)
		abort();
	/* The explanation of any message is one line. */
	why = search_explain_error(text);
	if (why && strchr(why, '\n') && !strchr(text, '\n'))
		abort();
	free(why);
	free(text);
	if (!sqlite3_get_autocommit(db))
		abort();        /* a read never leaves a transaction open */
	return 0;
}
