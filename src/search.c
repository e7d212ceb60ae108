/* search.c - full-text search of subjects, last messages and messages
 *
 * Two FTS5 tables answer a query: conversations_fts (subject,
 * last_message_text) and messages_fts (text).  Each gives its best
 * matches by bm25 rank, narrowed by status, date and gone_at: a window of
 * the best ranked matches is looked at first, and widened only when too
 * few of them pass (SEARCH_WINDOW); a conversation found in both keeps its
 * better rank, and the merged list is cut to the limit.
 *
 * FTS5 computes bm25 for every match before the best come out: a word in
 * most of a million rows takes a second, ten at ten million.  So when more
 * than SEARCH_CANDIDATES entries of a table match, the ones mirrored last
 * (the highest rowids, found in a few milliseconds by walking the matches
 * backwards) are the ones ranked, and a notice says so.  Only the order
 * depends on it, never whether a match is found: when too few of those
 * pass the filters, every match is ranked.  Snippets are made last, for the rows shown only: a
 * snippet costs more than a rank.
 *
 * The match is marked in the snippet with two Unicode noncharacters
 * (U+FDD0, U+FDD1), which text does not hold; a row whose text does hold
 * one gets its snippet unmarked rather than marked wrong.  The marks
 * become [ ] in a table and CSV, and offsets in JSON. */
#include "config.h"

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "db.h"
#include "escape.h"
#include "log.h"
#include "report.h"
#include "search.h"

#define MARK_OPEN      "\xef\xb7\x90" /* U+FDD0 */
#define MARK_CLOSE     "\xef\xb7\x91" /* U+FDD1 */
#define MARK_LEN       3
#define SNIPPET_TOKENS "16"
#define MAX_QUERY      4096
/* The window looked at first: this many times the limit. */
#define SEARCH_WINDOW 4
/* At most this many matches of a table are ranked (or the window, when
 * larger): bm25 costs about 2.5 us a match, so 5,000 rank in about 12 ms. */
#define SEARCH_CANDIDATES 5000

/* The best matches of one table in a window of the best ranked, best
 * first, each with whether its conversation passes the filters: ?1 query,
 * ?2 status or NULL, ?3 since or NULL, ?4 all (gone too), ?5 the window,
 * ?6 the lowest rowid ranked (the candidates).
 * Columns: the conversation's rowid, the rank, the rowid in the FTS table,
 * and 1 when the row passes.  The filters are looked at for the window's
 * rows only, not for every match: a common word matches most of the
 * mirror, and a row lookup per match costs more than the ranking. */
static const char conv_window_sql[] =
	"SELECT c.rowid, f.score, f.rowid,\n"
	"	c.rowid IS NOT NULL AND (?2 IS NULL OR c.status = ?2)\n"
	"	AND (?3 IS NULL OR c.created_at >= ?3) AND (?4 OR c.gone_at IS NULL)\n"
	"FROM (SELECT rowid, bm25(conversations_fts) AS score FROM conversations_fts\n"
	"	WHERE conversations_fts MATCH ?1 AND rowid >= ?6 ORDER BY score LIMIT ?5) AS f\n"
	"LEFT JOIN conversations AS c ON c.rowid = f.rowid\n"
	"ORDER BY f.score";

static const char msg_window_sql[] =
	"SELECT c.rowid, f.score, f.rowid,\n"
	"	c.rowid IS NOT NULL AND (?2 IS NULL OR c.status = ?2)\n"
	"	AND (?3 IS NULL OR c.created_at >= ?3) AND (?4 OR c.gone_at IS NULL)\n"
	"FROM (SELECT rowid, bm25(messages_fts) AS score FROM messages_fts\n"
	"	WHERE messages_fts MATCH ?1 AND rowid >= ?6 ORDER BY score LIMIT ?5) AS f\n"
	"LEFT JOIN messages AS m ON m.rowid = f.rowid\n"
	"LEFT JOIN conversations AS c ON c.id = m.conversation_id\n"
	"ORDER BY f.score";

/* The same over every match, narrowed first: when too few in the window
 * pass.  ?5 is the limit; every row passes.  The rank column is bm25 (the
 * default, which dexsync never changes): bm25() cannot be aggregated, and
 * the windows call it rather than ORDER BY rank, whose sorted cursor costs
 * a third more. */
static const char conv_all_sql[] =
	"SELECT c.rowid, f.rank, f.rowid, 1\n"
	"FROM conversations_fts AS f\n"
	"JOIN conversations AS c ON c.rowid = f.rowid\n"
	"WHERE conversations_fts MATCH ?1 AND f.rowid >= ?6\n"
	"	AND (?2 IS NULL OR c.status = ?2)\n"
	"	AND (?3 IS NULL OR c.created_at >= ?3)\n"
	"	AND (?4 OR c.gone_at IS NULL)\n"
	"ORDER BY f.rank\n"
	"LIMIT ?5";

/* A conversation's best message (min() takes the other columns from its
 * row). */
static const char msg_all_sql[] =
	"SELECT c.rowid, min(f.rank), f.rowid, 1\n"
	"FROM messages_fts AS f\n"
	"JOIN messages AS m ON m.rowid = f.rowid\n"
	"JOIN conversations AS c ON c.id = m.conversation_id\n"
	"WHERE messages_fts MATCH ?1 AND f.rowid >= ?6\n"
	"	AND (?2 IS NULL OR c.status = ?2)\n"
	"	AND (?3 IS NULL OR c.created_at >= ?3)\n"
	"	AND (?4 OR c.gone_at IS NULL)\n"
	"GROUP BY c.rowid\n"
	"ORDER BY 2\n"
	"LIMIT ?5";

/* The lowest rowid of a table's candidates: ?1 the query, ?2 their
 * number less one.  No row when all its matches are candidates. */
static const char conv_bound_sql[] =
	"SELECT rowid FROM conversations_fts WHERE conversations_fts MATCH ?1\n"
	"ORDER BY rowid DESC LIMIT 1 OFFSET ?2";
static const char msg_bound_sql[] =
	"SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?1\n"
	"ORDER BY rowid DESC LIMIT 1 OFFSET ?2";

/* Each table's statements: its candidates' bound, its window, all. */
static const char *const table_sql[2][3] = {
	{ conv_bound_sql, conv_window_sql, conv_all_sql },
	{ msg_bound_sql, msg_window_sql, msg_all_sql },
};

/* One shown row: ?1 the conversation's rowid, found when it passes the
 * filters (?2 status, ?3 since, ?4 all) and, for a message's match (?5 its
 * rowid in messages, else NULL), when the message is the conversation's:
 * looked at again in the snapshot the rows are shown from, because the
 * second thread ranked messages in a snapshot of its own. */
static const char row_sql[] =
	"SELECT id, status, created_at, subject FROM conversations AS c\n"
	"WHERE rowid = ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR created_at >= ?3)\n"
	"	AND (?4 OR gone_at IS NULL)\n"
	"	AND (?5 IS NULL OR EXISTS (SELECT 1 FROM messages AS m WHERE m.rowid = ?5 AND m.conversation_id = c.id))";

/* The snippets of the entries of one table whose rowids are listed in ?2
 * (a JSON array) matched by ?1, in one pass over its matches from ?3 to ?4
 * (their lowest and highest rowid): a prefix query merges the lists of all
 * its words once a statement, a second or so at a million rows, so one
 * statement serves all the rows shown, not one a row.  Columns: the rowid,
 * 1 when listed; for those, the snippet (unmarked when the text holds a
 * mark itself), 1 when the subject holds a match, the message's id. */
#define LISTED "rowid IN (SELECT value FROM json_each(?2))"

static const char conv_snippet_sql[] =
	"SELECT rowid, " LISTED
	",\n"
	"	CASE WHEN NOT " LISTED
	" THEN NULL\n"
	"	WHEN instr(coalesce(subject, '') || coalesce(last_message_text, ''), '" MARK_OPEN
	"')\n"
	"		OR instr(coalesce(subject, '') || coalesce(last_message_text, ''), '" MARK_CLOSE
	"')\n"
	"	THEN snippet(conversations_fts, -1, '', '', '…', " SNIPPET_TOKENS
	")\n"
	"	ELSE snippet(conversations_fts, -1, '" MARK_OPEN "', '" MARK_CLOSE "', '…', " SNIPPET_TOKENS
	") END,\n"
	"	CASE WHEN " LISTED " THEN instr(highlight(conversations_fts, 0, '" MARK_OPEN
	"', ''), '" MARK_OPEN
	"') > 0 END,\n"
	"	NULL\n"
	"FROM conversations_fts\n"
	"WHERE conversations_fts MATCH ?1 AND rowid BETWEEN ?3 AND ?4";

static const char msg_snippet_sql[] =
	"SELECT rowid, " LISTED
	",\n"
	"	CASE WHEN NOT " LISTED
	" THEN NULL\n"
	"	WHEN instr(coalesce(text, ''), '" MARK_OPEN "') OR instr(coalesce(text, ''), '" MARK_CLOSE
	"')\n"
	"	THEN snippet(messages_fts, 0, '', '', '…', " SNIPPET_TOKENS
	")\n"
	"	ELSE snippet(messages_fts, 0, '" MARK_OPEN "', '" MARK_CLOSE "', '…', " SNIPPET_TOKENS
	") END,\n"
	"	0,\n"
	"	CASE WHEN " LISTED
	" THEN (SELECT id FROM messages AS m WHERE m.rowid = messages_fts.rowid) END\n"
	"FROM messages_fts\n"
	"WHERE messages_fts MATCH ?1 AND rowid BETWEEN ?3 AND ?4";

static const char *const snippet_sql[2] = { conv_snippet_sql, msg_snippet_sql };

/* Text as read from a column: its bytes (a NUL among them) and length;
 * text is NULL for SQL NULL. */
struct text {
	char *text;
	size_t len;
};

struct hit {
	sqlite3_int64 conv;  /* conversations.rowid */
	sqlite3_int64 entry; /* rowid in the FTS table that matched */
	double rank;	     /* bm25: lower is better */
	int in_messages;     /* found in messages_fts */
	/* Filled for the rows shown: */
	struct text id, status, created_at, subject, snippet, message_id;
	int in_subject;
	int seen; /* matched in the snapshot the rows are read in */
};

struct hits {
	struct hit *v;
	size_t n, cap;
};

int search_format_from_name(const char *name)
{
	static const char *const names[] = { "table", "csv", "json" };

	for (int i = 0; i < 3; i++)
		if (!strcmp(name, names[i]))
			return i;
	return -1;
}

const char *search_query_problem(const char *query)
{
	size_t n = strlen(query), k, len;

	if (n > MAX_QUERY)
		return "the query is longer than 4096 bytes";
	for (k = 0; k < n; k += len) {
		if (!(len = escape_utf8_len(query + k, n - k)))
			return "the query is not valid UTF-8";
		if (escape_needed(query + k, len))
			return "the query holds a control character";
	}
	if (strspn(query, " ") == n)
		return "the query is empty";
	return NULL;
}

/* Does s start with the FTS5 operator op as a word of its own? */
static int is_operator(const char *s, size_t n)
{
	return (n == 3 && (!strncmp(s, "AND", 3) || !strncmp(s, "NOT", 3))) ||
	       (n == 2 && !strncmp(s, "OR", 2));
}

char *search_explain_error(const char *errmsg)
{
	static const char syntax[] = "fts5: syntax error near \"";
	static const char column[] = "no such column: ";
	static const char special[] = "unknown special query: ";
	const char *near, *end;
	char *out = NULL;
	int n = -1;

	if (!errmsg)
		errmsg = "";
	if (!strcmp(errmsg, "unterminated string")) {
		n = asprintf(&out, "a \"phrase\" is not closed: its closing \" is missing");
	} else if (!strncmp(errmsg, column, sizeof(column) - 1)) {
		/* "word:" is a column filter, and so is "-word" (all columns
		 * but). */
		n = asprintf(&out,
			     "'%s:' or '-%s' names a column, and there is no column %s "
			     "(columns: subject, last_message_text, text); "
			     "put a word holding ':' or '-' in double quotes",
			     errmsg + sizeof(column) - 1, errmsg + sizeof(column) - 1,
			     errmsg + sizeof(column) - 1);
	} else if (!strncmp(errmsg, special, sizeof(special) - 1)) {
		n = asprintf(&out, "a query cannot start with '*': put * after a prefix (export*)");
	} else if (!strncmp(errmsg, syntax, sizeof(syntax) - 1)) {
		near = errmsg + sizeof(syntax) - 1;
		end = strrchr(near, '"');
		if (!end || end < near)
			end = near + strlen(near);
		if (end == near)
			n = asprintf(&out,
				     "the query ends too early: a word is missing after an "
				     "operator (AND, OR, NOT, +) or a column (text:), or a ( or "
				     "NEAR( is not closed");
		else if (is_operator(near, (size_t)(end - near)))
			n = asprintf(&out, "the operator %.*s needs a word or a group on both sides",
				     (int)(end - near), near);
		else if (end - near == 1 && *near == ')')
			n = asprintf(&out, "a ) has no ( before it");
		else if (end - near == 1)
			n = asprintf(&out,
				     "'%c' is not part of the query syntax (words, \"phrases\", "
				     "prefix*, AND, OR, NOT, NEAR, ( )): put text holding it in "
				     "double quotes",
				     *near);
		else
			n = asprintf(&out,
				     "'%.*s' is out of place (the syntax: words, \"phrases\", "
				     "prefix*, AND, OR, NOT, NEAR, ( ))",
				     (int)(end - near), near);
	} else {
		n = asprintf(&out, "the query is not valid (SQLite says: %s)", errmsg);
	}
	return n >= 0 ? out : NULL;
}

static void text_free(struct text *t)
{
	free(t->text);
	t->text = NULL;
	t->len = 0;
}

/* Column i of st's row into t, all its bytes; 0, or -1 out of memory. */
static int text_get(sqlite3_stmt *st, int i, struct text *t)
{
	const unsigned char *s;

	t->text = NULL;
	t->len = 0;
	if (sqlite3_column_type(st, i) == SQLITE_NULL)
		return 0;
	s = sqlite3_column_text(st, i);
	t->len = (size_t)sqlite3_column_bytes(st, i);
	if (!(t->text = malloc(t->len + 1)))
		return -1;
	if (t->len)
		memcpy(t->text, s, t->len);
	t->text[t->len] = '\0';
	return 0;
}

static void hits_free(struct hits *h)
{
	for (size_t i = 0; i < h->n; i++) {
		struct hit *x = &h->v[i];

		text_free(&x->id);
		text_free(&x->status);
		text_free(&x->created_at);
		text_free(&x->subject);
		text_free(&x->snippet);
		text_free(&x->message_id);
	}
	free(h->v);
	memset(h, 0, sizeof(*h));
}

/* Add a match, or better the rank of the conversation's match already
 * there; 0, or -1 out of memory.  The lists are short (two times the
 * limit): a linear look is enough. */
static int hits_add(struct hits *h, sqlite3_int64 conv, double rank, sqlite3_int64 entry, int in_messages)
{
	for (size_t i = 0; i < h->n; i++) {
		if (h->v[i].conv != conv)
			continue;
		if (rank < h->v[i].rank) {
			h->v[i].rank = rank;
			h->v[i].entry = entry;
			h->v[i].in_messages = in_messages;
		}
		return 0;
	}
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 32;
		struct hit *v = realloc(h->v, cap * sizeof(*v));

		if (!v)
			return -1;
		h->v = v;
		h->cap = cap;
	}
	memset(&h->v[h->n], 0, sizeof(h->v[0]));
	h->v[h->n].conv = conv;
	h->v[h->n].rank = rank;
	h->v[h->n].entry = entry;
	h->v[h->n].in_messages = in_messages;
	h->n++;
	return 0;
}

static int hit_cmp(const void *a, const void *b)
{
	const struct hit *x = a, *y = b;

	if (x->rank != y->rank)
		return x->rank < y->rank ? -1 : 1;
	return x->conv < y->conv ? -1 : x->conv > y->conv;
}

/* Bind the query's parameters, with window as ?5 and bound as ?6. */
static void bind_query(sqlite3_stmt *st, const struct search_query *q, sqlite3_int64 window,
		       sqlite3_int64 bound)
{
	sqlite3_bind_text(st, 1, q->text, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, q->status, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, q->since, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 4, q->all != 0);
	sqlite3_bind_int64(st, 5, window);
	sqlite3_bind_int64(st, 6, bound);
}

/* Has t the conversation conv?  t holds at most the limit. */
static int hits_have(const struct hits *t, sqlite3_int64 conv)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->v[i].conv == conv)
			return 1;
	return 0;
}

/* One table's best matches within the window, best first, into t (its
 * first match is a conversation's best).  The number of matches the window
 * held, or -1 with rc (an SQLite code) set. */
static sqlite3_int64 collect_window(sqlite3_stmt *st, const struct search_query *q, sqlite3_int64 window,
				    sqlite3_int64 bound, int in_messages, struct hits *t, int *rc)
{
	sqlite3_int64 seen = 0, conv;

	bind_query(st, q, window, bound);
	while (t->n < (size_t)q->limit && (*rc = sqlite3_step(st)) == SQLITE_ROW) {
		seen++;
		conv = sqlite3_column_int64(st, 0);
		if (!sqlite3_column_int(st, 3) || hits_have(t, conv))
			continue;
		if (hits_add(t, conv, sqlite3_column_double(st, 1), sqlite3_column_int64(st, 2),
			     in_messages) < 0) {
			*rc = SQLITE_NOMEM;
			break;
		}
	}
	if (t->n == (size_t)q->limit)
		*rc = SQLITE_DONE;
	sqlite3_reset(st);
	return *rc == SQLITE_DONE ? seen : -1;
}

/* The lowest rowid of the candidates of the query in st (a bound
 * statement), or INT64_MIN when every match is one; -1 with rc set on an
 * error. */
static int candidates_bound(sqlite3_stmt *st, const struct search_query *q, sqlite3_int64 candidates,
			    sqlite3_int64 *bound, int *rc)
{
	sqlite3_bind_text(st, 1, q->text, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, candidates - 1);
	*bound = INT64_MIN;
	if ((*rc = sqlite3_step(st)) == SQLITE_ROW) {
		*bound = sqlite3_column_int64(st, 0);
		*rc = SQLITE_DONE;
	}
	sqlite3_reset(st);
	return *rc == SQLITE_DONE ? 0 : -1;
}

/* The matches of table (0 conversations_fts, 1 messages_fts) into h: a
 * window of SEARCH_WINDOW x the limit best ranked among the candidates,
 * then all candidates when too few in the window pass the filters and
 * more are left, then every match when still too few pass and not every
 * match was a candidate.  *ranked gets the number of candidates when the
 * rows come from the candidates of more matches.  0; 1 when FTS5 refused
 * the query, -1 on another error: *err then gets SQLite's message
 * (malloc'd; NULL out of memory).  It logs nothing: it may run in a
 * thread whose error is not the command's (join_beside). */
static int collect(sqlite3 *db, int table, const struct search_query *q, struct hits *h, char **err,
		   sqlite3_int64 *ranked)
{
	struct hits t = { NULL, 0, 0 };
	sqlite3_stmt *st = NULL;
	sqlite3_int64 window = SEARCH_WINDOW * q->limit, seen = -1, bound = INT64_MIN;
	sqlite3_int64 candidates = window > SEARCH_CANDIDATES ? window : SEARCH_CANDIDATES;
	int rc = SQLITE_OK;

	for (int stage = 0; stage < 4; stage++) {
		hits_free(&t);
		sqlite3_finalize(st);
		if ((rc = sqlite3_prepare_v2(db, table_sql[table][stage < 3 ? stage : 2], -1, &st, NULL)) !=
		    SQLITE_OK) {
			seen = -1;
			break;
		}
		if (stage == 0) {
			seen = candidates_bound(st, q, candidates, &bound, &rc);
			if (seen < 0)
				break;
			continue;
		}
		if (stage == 3)
			bound = INT64_MIN;
		seen = collect_window(st, q, stage == 1 ? window : q->limit, bound, table, &t, &rc);
		if (seen < 0 || t.n == (size_t)q->limit || (stage == 1 && seen < window) ||
		    (stage == 2 && bound == INT64_MIN))
			break;
	}
	if (seen >= 0 && bound != INT64_MIN)
		*ranked = candidates;
	for (size_t i = 0; seen >= 0 && i < t.n; i++)
		if (hits_add(h, t.v[i].conv, t.v[i].rank, t.v[i].entry, table) < 0) {
			rc = SQLITE_NOMEM;
			seen = -1;
		}
	if (seen >= 0) {
		rc = 0;
	} else {
		/* A query FTS5 cannot parse fails its first step with
		 * SQLITE_ERROR; the tables themselves were prepared. */
		*err = rc == SQLITE_NOMEM ? NULL : strdup(sqlite3_errmsg(db));
		rc = (rc & 0xff) == SQLITE_ERROR && st && *err ? 1 : -1;
	}
	sqlite3_finalize(st);
	hits_free(&t);
	return rc;
}

/* Step st (bound) for one row and copy its columns into the texts in t
 * (ncols of them).  1 with a row, 0 without, -1 on error. */
static int one_row(sqlite3 *db, sqlite3_stmt *st, struct text **t, int ncols)
{
	int rc = sqlite3_step(st);

	if (rc == SQLITE_ROW) {
		for (int i = 0; i < ncols; i++)
			if (text_get(st, i, t[i]) < 0) {
				log_err("search: out of memory");
				rc = -1;
				goto out;
			}
		rc = 1;
	} else if (rc == SQLITE_DONE) {
		rc = 0;
	} else {
		log_err("search: %s", sqlite3_errmsg(db));
		rc = -1;
	}
out:
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc;
}

/* The hit among h->v[from..n) whose entry in table is entry, or NULL.  At
 * most the limit are shown: a linear look is enough. */
static struct hit *hit_of_entry(struct hits *h, size_t from, size_t n, int table, sqlite3_int64 entry)
{
	for (size_t i = from; i < n; i++)
		if (h->v[i].in_messages == table && h->v[i].entry == entry)
			return &h->v[i];
	return NULL;
}

/* The snippets of the hits h->v[from..n) found in table, with one
 * statement; each one it matches is seen.  0, or -1 after logging. */
static int fill_snippets(sqlite3 *db, const struct search_query *q, struct hits *h, size_t from, size_t n,
			 int table)
{
	sqlite3_int64 lo = INT64_MAX, hi = INT64_MIN;
	json_t *ids = json_array();
	sqlite3_stmt *st = NULL;
	char *list = NULL;
	struct hit *x;
	int rc = -1, step;

	for (size_t i = from; ids && i < n; i++) {
		if (h->v[i].in_messages != table)
			continue;
		lo = h->v[i].entry < lo ? h->v[i].entry : lo;
		hi = h->v[i].entry > hi ? h->v[i].entry : hi;
		if (json_array_append_new(ids, json_integer(h->v[i].entry)) < 0)
			goto out;
	}
	if (!ids || !(list = json_dumps(ids, JSON_COMPACT))) {
		log_err("search: out of memory");
		goto out;
	}
	if (json_array_size(ids) == 0) {
		rc = 0;
		goto out;
	}
	if (sqlite3_prepare_v2(db, snippet_sql[table], -1, &st, NULL) != SQLITE_OK) {
		log_err("search: %s", sqlite3_errmsg(db));
		goto out;
	}
	sqlite3_bind_text(st, 1, q->text, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, list, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, lo);
	sqlite3_bind_int64(st, 4, hi);
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		if (!sqlite3_column_int(st, 1) ||
		    !(x = hit_of_entry(h, from, n, table, sqlite3_column_int64(st, 0))))
			continue;
		x->seen = 1;
		if (text_get(st, 2, &x->snippet) < 0 || text_get(st, 4, &x->message_id) < 0) {
			log_err("search: out of memory");
			goto out;
		}
		x->in_subject = sqlite3_column_int(st, 3);
	}
	if (step != SQLITE_DONE)
		log_err("search: %s", sqlite3_errmsg(db));
	else
		rc = 0;
out:
	sqlite3_finalize(st);
	free(list);
	json_decref(ids);
	return rc;
}

static void hit_swap(struct hit *a, struct hit *b)
{
	struct hit t = *a;

	*a = *b;
	*b = t;
}

/* The hits shown, at most the limit, best first, moved to the front of h
 * with their columns (the conversation, the snippet of the entry that
 * matched): those whose rows pass (row_sql) and whose entries match the
 * query, both in this connection's snapshot, whatever the second thread
 * saw in its own (a row changed meanwhile, or another file opened by the
 * same name).  Their number, or -1 after logging; *rejected counts the
 * message hits left out. */
static long fill(sqlite3 *db, const struct search_query *q, struct hits *h, size_t *rejected)
{
	sqlite3_stmt *row = NULL;
	size_t n = 0, next = 0, from;
	long rc = -1;

	*rejected = 0;
	if (sqlite3_prepare_v2(db, row_sql, -1, &row, NULL) != SQLITE_OK) {
		log_err("search: %s", sqlite3_errmsg(db));
		goto out;
	}
	while (n < (size_t)q->limit && next < h->n) {
		/* The next hits whose rows pass, up to the limit, after those
		 * kept; then those of them that match. */
		for (from = n; next < h->n && n < (size_t)q->limit; next++) {
			struct hit *x = &h->v[next];
			struct text *conv[] = { &x->id, &x->status, &x->created_at, &x->subject };
			int found;

			sqlite3_bind_int64(row, 1, x->conv);
			sqlite3_bind_text(row, 2, q->status, -1, SQLITE_STATIC);
			sqlite3_bind_text(row, 3, q->since, -1, SQLITE_STATIC);
			sqlite3_bind_int(row, 4, q->all != 0);
			if (x->in_messages)
				sqlite3_bind_int64(row, 5, x->entry);
			if ((found = one_row(db, row, conv, 4)) < 0)
				goto out;
			if (found)
				hit_swap(&h->v[n++], x);
			else
				*rejected += x->in_messages;
		}
		if (fill_snippets(db, q, h, from, n, 0) < 0 || fill_snippets(db, q, h, from, n, 1) < 0)
			goto out;
		for (size_t i = from, end = n; i < end; i++)
			if (h->v[i].seen)
				hit_swap(&h->v[from++], &h->v[i]);
			else
				*rejected += h->v[i].in_messages;
		n = from;
	}
	rc = (long)n;
out:
	sqlite3_finalize(row);
	return rc;
}

/* Where the match was found, for the "matched" column. */
static const char *matched(const struct hit *x)
{
	return x->in_messages ? "message" : x->in_subject ? "subject" : "last_message";
}

/* The snippet with its marks as [ and ] (table, CSV), malloc'd; its
 * length in *len.  NULL when out of memory. */
static char *bracketed(const struct text *t, size_t *len)
{
	char *out = malloc(t->len + 1), *o = out;

	if (!out)
		return NULL;
	for (size_t k = 0; k < t->len;) {
		if (t->len - k >= MARK_LEN && !memcmp(t->text + k, MARK_OPEN, MARK_LEN)) {
			*o++ = '[';
			k += MARK_LEN;
		} else if (t->len - k >= MARK_LEN && !memcmp(t->text + k, MARK_CLOSE, MARK_LEN)) {
			*o++ = ']';
			k += MARK_LEN;
		} else {
			*o++ = t->text[k++];
		}
	}
	*o = '\0';
	*len = (size_t)(o - out);
	return out;
}

#define NCOLS 6
static const char *const col_names[NCOLS] = { "id", "status", "created_at", "subject", "matched", "snippet" };

/* The n cells of hit x as shown in a table or CSV (snippet bracketed):
 * malloc'd copies into cell[] and len[]; 0, or -1 out of memory. */
static int cells(const struct hit *x, char **cell, size_t *len)
{
	const struct text *t[] = { &x->id, &x->status, &x->created_at, &x->subject };

	for (int i = 0; i < 4; i++) {
		len[i] = t[i]->len;
		if (!(cell[i] = malloc(len[i] + 1)))
			return -1;
		memcpy(cell[i], t[i]->text ? t[i]->text : "", len[i]);
		cell[i][len[i]] = '\0';
	}
	len[4] = strlen(matched(x));
	if (!(cell[4] = strdup(matched(x))))
		return -1;
	return (cell[5] = bracketed(&x->snippet, &len[5])) ? 0 : -1;
}

/* CSV: a header, then one line per hit. */
static int print_csv(FILE *out, const struct hits *h, size_t n)
{
	char *cell[NCOLS] = { NULL };
	size_t len[NCOLS];
	int rc = 0;

	for (int i = 0; i < NCOLS; i++) {
		if (i)
			fputc(',', out);
		fputs(col_names[i], out);
	}
	fputs("\r\n", out);
	for (size_t r = 0; r < n && rc == 0; r++) {
		rc = cells(&h->v[r], cell, len);
		for (int i = 0; i < NCOLS; i++) {
			if (rc == 0) {
				if (i)
					fputc(',', out);
				report_csv_field(out, cell[i], len[i]);
			}
			free(cell[i]);
			cell[i] = NULL;
		}
		if (rc == 0)
			fputs("\r\n", out);
	}
	if (rc < 0)
		log_err("search: out of memory");
	return rc;
}

/* A terminal table: every cell escaped, columns as wide as their widest
 * (the snippet, last, is not padded). */
static int print_table(FILE *out, const struct hits *h, size_t n)
{
	size_t width[NCOLS] = { 0 }, len[NCOLS];
	char **text = calloc((n + 1) * NCOLS, sizeof(char *));
	char *cell[NCOLS] = { NULL };
	int rc = -1;

	if (!text)
		goto out;
	for (int i = 0; i < NCOLS; i++)
		if (!(text[i] = strdup(col_names[i])))
			goto out;
	for (size_t r = 0; r < n; r++) {
		int bad = cells(&h->v[r], cell, len);

		for (int i = 0; i < NCOLS; i++) {
			if (!bad && !(text[(r + 1) * NCOLS + (size_t)i] = escape_text(cell[i], len[i])))
				bad = 1;
			free(cell[i]);
			cell[i] = NULL;
		}
		if (bad)
			goto out;
	}
	for (size_t k = 0; k < (n + 1) * NCOLS; k++) {
		size_t w = report_text_width(text[k]);

		if (w > width[k % NCOLS])
			width[k % NCOLS] = w;
	}
	for (size_t r = 0; r <= n; r++) {
		for (int i = 0; i < NCOLS; i++) {
			const char *t = text[r * NCOLS + (size_t)i];

			fprintf(out, "%s%s", i ? "  " : "", t);
			if (i + 1 < NCOLS)
				fprintf(out, "%*s", (int)(width[i] - report_text_width(t)), "");
		}
		fputc('\n', out);
		if (r == 0) {
			for (int i = 0; i < NCOLS; i++) {
				fputs(i ? "  " : "", out);
				for (size_t k = 0; k < width[i]; k++)
					fputc('-', out);
			}
			fputc('\n', out);
		}
	}
	rc = 0;
out:
	for (size_t k = 0; text && k < (n + 1) * NCOLS; k++)
		free(text[k]);
	free(text);
	if (rc < 0)
		log_err("search: out of memory");
	return rc;
}

/* The n bytes of s as a JSON string; a byte that is not UTF-8 becomes
 * U+FFFD (as report.c does), so that one character of the input is one of
 * the output.  NULL when out of memory. */
static json_t *text_json(const char *s, size_t n)
{
	char *fixed, *o;
	size_t k, len;
	json_t *j;

	if (!s)
		return json_null();
	if (n > (SIZE_MAX - 1) / 3 || !(fixed = malloc(n * 3 + 1)))
		return NULL;
	for (o = fixed, k = 0; k < n; k += len ? len : 1) {
		len = escape_utf8_len(s + k, n - k);
		if (len) {
			memcpy(o, s + k, len);
			o += len;
		} else { /* U+FFFD */
			*o++ = '\xef';
			*o++ = '\xbf';
			*o++ = '\xbd';
		}
	}
	j = json_stringn(fixed, (size_t)(o - fixed));
	free(fixed);
	return j;
}

/* The snippet without its marks, and the marked spans as [start, end)
 * pairs counted in characters (Unicode code points) of that text. */
static int snippet_json(const struct text *t, json_t *obj)
{
	json_t *spans = json_array(), *span = NULL;
	char *plain = malloc(t->len + 1), *o = plain;
	long chars = 0;
	size_t len;
	int rc = -1;

	if (!spans || !plain)
		goto out;
	for (size_t k = 0; k < t->len; k += len) {
		len = escape_utf8_len(t->text + k, t->len - k);
		if (len == MARK_LEN && !memcmp(t->text + k, MARK_OPEN, MARK_LEN)) {
			json_decref(span);
			if (!(span = json_array()) || json_array_append_new(span, json_integer(chars)) < 0)
				goto out;
			continue;
		}
		if (len == MARK_LEN && !memcmp(t->text + k, MARK_CLOSE, MARK_LEN)) {
			if (span && (json_array_append_new(span, json_integer(chars)) < 0 ||
				     json_array_append_new(spans, span) < 0))
				goto out;
			span = NULL;
			continue;
		}
		if (!len)
			len = 1;
		memcpy(o, t->text + k, len);
		o += len;
		chars++;
	}
	if (json_object_set_new(obj, "snippet", text_json(t->text ? plain : NULL, (size_t)(o - plain))) < 0 ||
	    json_object_set(obj, "highlights", spans) < 0)
		goto out;
	rc = 0;
out:
	json_decref(span);
	json_decref(spans);
	free(plain);
	return rc;
}

/* An array of one object per hit. */
static int print_json(FILE *out, const struct hits *h, size_t n)
{
	json_t *arr = json_array();
	int rc = arr ? 0 : -1;

	for (size_t r = 0; rc == 0 && r < n; r++) {
		const struct hit *x = &h->v[r];
		json_t *obj = json_object();

		if (!obj || json_array_append_new(arr, obj) < 0 ||
		    json_object_set_new(obj, "id", text_json(x->id.text, x->id.len)) < 0 ||
		    json_object_set_new(obj, "status", text_json(x->status.text, x->status.len)) < 0 ||
		    json_object_set_new(obj, "created_at", text_json(x->created_at.text, x->created_at.len)) <
			    0 ||
		    json_object_set_new(obj, "subject", text_json(x->subject.text, x->subject.len)) < 0 ||
		    json_object_set_new(obj, "matched", json_string(matched(x))) < 0 ||
		    json_object_set_new(obj, "message_id", text_json(x->message_id.text, x->message_id.len)) <
			    0 ||
		    json_object_set_new(obj, "rank", json_real(x->rank)) < 0 ||
		    snippet_json(&x->snippet, obj) < 0)
			rc = -1;
	}
	return report_json_write(out, arr, rc, "search");
}

/* Log the one line for a query FTS5 refused. */
static void query_error(const struct search_query *q, const char *errmsg)
{
	char *why = search_explain_error(errmsg);
	char *safe = escape_text(q->text, strlen(q->text));

	log_err("search: the query '%s' is malformed: %s", safe ? safe : "?", why ? why : "(out of memory)");
	free(safe);
	free(why);
}

/* Is err FTS5's "no such column: X" for a column of the other table than
 * table (0: conversations_fts, 1: messages_fts)?  A filter meant for that
 * one, with which this one finds nothing.  (FTS5 matches column names in
 * any case.) */
static int others_column(int table, const char *err)
{
	static const char column[] = "no such column: ";
	const char *x = err + sizeof(column) - 1;

	if (strncmp(err, column, sizeof(column) - 1))
		return 0;
	return table == 0 ? !strcasecmp(x, "text") :
			    !strcasecmp(x, "subject") || !strcasecmp(x, "last_message_text");
}

/* A query with a column filter of each table ("subject:a OR text:b")
 * fails in both, each naming the other's column: say so, rather than
 * "there is no column text" when there is one. */
static void columns_of_both(const struct search_query *q, const char *conv_err, const char *msg_err)
{
	static const char column[] = "no such column: ";
	char *safe = escape_text(q->text, strlen(q->text));

	log_err("search: the query '%s' is malformed: '%s:' is a column of conversations and '%s:' one of "
		"messages: a query filters on the columns of one of them (subject, last_message_text; or text)",
		safe ? safe : "?", msg_err + sizeof(column) - 1, conv_err + sizeof(column) - 1);
	free(safe);
}

/* messages_fts is ranked by a second thread, on a connection of its own,
 * while the command's connection ranks conversations_fts: for a word in
 * most rows each table takes about 20 ms at 1,000,000, most of it bm25
 * counting the rows the word is in (issue 15: under 50 ms warm).  The
 * rows shown are read after both, so whatever either found is there
 * (rows are never deleted). */
struct beside {
	sqlite3 *db; /* db_open_beside's; NULL: no thread */
	const struct search_query *q;
	struct hits h;
	char *err;
	sqlite3_int64 ranked;
	int rc;
	pthread_t thread;
};

static void *collect_beside(void *arg)
{
	struct beside *b = arg;

	b->rc = collect(b->db, 1, b->q, &b->h, &b->err, &b->ranked);
	return NULL;
}

/* The thread started on its own connection to db: 1, or 0 when it could
 * not be (the notice says why) and messages_fts is to be ranked here. */
static int start_beside(sqlite3 *db, struct beside *b)
{
	int err;

	if (!(b->db = db_open_beside(db, DB_READONLY)))
		return 0;
	if ((err = pthread_create(&b->thread, NULL, collect_beside, b)) != 0) {
		log_notice("search: no thread: %s; the two tables are ranked one after the other",
			   strerror(err));
		db_close(b->db);
		b->db = NULL;
		return 0;
	}
	return 1;
}

/* The thread's matches after ours, as if ranked on our connection: its
 * error (*err, moved) and ranked count too.  collect's answer. */
static int join_beside(struct beside *b, struct hits *h, char **err, sqlite3_int64 *ranked)
{
	pthread_join(b->thread, NULL);
	db_close(b->db);
	*err = b->err;
	b->err = NULL;
	if (b->ranked)
		*ranked = b->ranked;
	for (size_t i = 0; b->rc == 0 && i < b->h.n; i++)
		if (hits_add(h, b->h.v[i].conv, b->h.v[i].rank, b->h.v[i].entry, 1) < 0)
			b->rc = -1; /* (*err NULL: out of memory) */
	hits_free(&b->h);
	return b->rc;
}

/* messages_fts's matches into h, as collect: the thread's when it ran,
 * else ranked here, as they are after a notice when the thread's
 * connection failed (the file removed, no descriptor left for its WAL). */
static int collect_messages(sqlite3 *db, struct beside *b, int threaded, const struct search_query *q,
			    struct hits *h, char **err, sqlite3_int64 *ranked)
{
	int rc;

	if (threaded) {
		if ((rc = join_beside(b, h, err, ranked)) >= 0)
			return rc;
		log_notice("search: the second connection failed (%s); messages are ranked on the first",
			   *err ? *err : "out of memory");
		free(*err);
		*err = NULL;
	}
	return collect(db, 1, q, h, err, ranked);
}

/* Both tables' matches into h, best first, messages_fts's by a second
 * thread when thread is 1.  0, or -1 after logging (an error, a malformed
 * query). */
static int rank(sqlite3 *db, const struct search_query *q, int thread, struct hits *h, sqlite3_int64 *ranked)
{
	struct beside b = { .q = q };
	char *err[2] = { NULL, NULL };
	int c, m, others[2], threaded = thread && start_beside(db, &b), rc = -1;

	/* A column filter names a column of one table: the other one, which
	 * has no such column, simply finds nothing. */
	c = collect(db, 0, q, h, &err[0], ranked);
	m = collect_messages(db, &b, threaded, q, h, &err[1], ranked);
	if (c < 0 || m < 0) {
		log_err("search: %s",
			c < 0 ? (err[0] ? err[0] : "out of memory") : (err[1] ? err[1] : "out of memory"));
		goto out;
	}
	/* A table's error that names the other table's column is not its
	 * own: it finds nothing, and the other table's error, if any, is the
	 * one to tell ("text:" lacks a word, "text:a OR x:b" has no column x). */
	others[0] = c > 0 && others_column(0, err[0]);
	others[1] = m > 0 && others_column(1, err[1]);
	if (others[0] && others[1]) {
		columns_of_both(q, err[0], err[1]);
		goto out;
	}
	if ((c > 0 && !others[0]) || (m > 0 && !others[1])) {
		query_error(q, c > 0 && !others[0] ? err[0] : err[1]);
		goto out;
	}
	if (h->n)
		qsort(h->v, h->n, sizeof(h->v[0]), hit_cmp);
	rc = 0;
out:
	free(err[0]);
	free(err[1]);
	return rc;
}

/* Does a walk run, as this connection's snapshot has it?  Then the
 * second thread is not used: its snapshot, a moment after this one, could
 * miss a match this one holds (a status the walk changed meanwhile; fill()
 * finds only the converse, a match this one lacks).  The outbox's writes
 * add messages, which fill() finds; a hand edit in that moment is not
 * seen. */
static int walking(sqlite3 *db)
{
	return db_first_text(
		       db,
		       "SELECT 1 FROM sync_runs WHERE id = (SELECT max(id) FROM sync_runs) AND outcome = 'running'",
		       NULL, NULL) > 0;
}

long search_run(sqlite3 *db, const struct search_query *q, enum search_format fmt, FILE *out)
{
	struct hits h = { NULL, 0, 0 };
	const char *problem;
	long rc = -1, shown;
	sqlite3_int64 ranked = 0;
	size_t n, rejected;

	if ((problem = search_query_problem(q->text))) {
		log_err("search: %s", problem);
		return -1;
	}
	/* One snapshot for what this connection reads, the rows shown too. */
	if (db_exec(db, "BEGIN") != DX_OK)
		return -1;
	if (db_first_text(db, DB_FTS_PENDING_SQL, NULL, NULL) > 0)
		log_notice(
			"search: the full-text index is not built yet (an initial mirror builds it at its "
			"end): it finds only what it held before");
	if (rank(db, q, !walking(db), &h, &ranked) < 0 || (shown = fill(db, q, &h, &rejected)) < 0)
		goto out;
	if (rejected) {
		/* Messages the thread ranked in its snapshot that this one does
		 * not hold (a walk committed between the two): all ranked again
		 * here, so that neither what they displaced (their conversation's
		 * own match) nor what they kept out (the limit filled with them)
		 * is missed.  Rare: only while a walk writes. */
		hits_free(&h);
		ranked = 0;
		if (rank(db, q, 0, &h, &ranked) < 0 || (shown = fill(db, q, &h, &rejected)) < 0)
			goto out;
	}
	if (ranked)
		log_notice(
			"search: more than %lld subjects, last messages or messages match; the %lld "
			"mirrored last of each are ranked (more words narrow the query)",
			(long long)ranked, (long long)ranked);
	n = (size_t)shown;
	if (n == 0 && fmt != SEARCH_CSV) {
		rc = fmt == SEARCH_JSON ? print_json(out, &h, 0) : 0;
		rc = rc < 0 ? -1 : 0;
		goto out;
	}
	switch (fmt) {
	case SEARCH_TABLE:
		rc = print_table(out, &h, n);
		break;
	case SEARCH_CSV:
		rc = print_csv(out, &h, n);
		break;
	case SEARCH_JSON:
		rc = print_json(out, &h, n);
		break;
	}
	rc = rc < 0 ? -1 : (long)n;
out:
	db_rollback(db); /* (the read transaction's end) */
	hits_free(&h);
	return rc;
}
