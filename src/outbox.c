/* outbox.c - per-target FIFO delivery with retry, backoff and idempotency
 *
 * An item is committed as 'sending' before its request, so that a crash
 * can be told from a failure, and becomes 'sent', 'pending' again (with a
 * backoff) or 'failed' afterwards.  Every attempt of an item carries the
 * item's one Idempotency-Key. */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "db.h"
#include "kept.h"
#include "log.h"
#include "outbox.h"

#define REF_PREFIX "outbox:"
#define NOW_UTC	   "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')"

/* The `after` of a change the outbox made with item ID, seen by SEEN:
 * when the item was queued, the last time the change surely had not
 * happened.  Not its last attempt's start: an earlier request, one whose
 * answer was lost or one a crash cut short, may be the one Dexra applied,
 * and a walk may have seen it before the last began.  Never later than
 * SEEN. */
#define OUTBOX_AFTER(ID, SEEN)                                                                       \
	"min(coalesce((SELECT strftime('%Y-%m-%dT%H:%M:%SZ', created_at) FROM outbox WHERE id = " ID \
	"), " SEEN "), " SEEN ")"

enum {
	S_RECOVER,
	S_KEPT,
	S_DUE,
	S_NEXT_DUE,
	S_EARLIER,
	S_UNSCHEDULE,
	S_SCHEDULE,
	S_REF,
	S_SENDING,
	S_UNCLAIM,
	S_SENT,
	S_RETRY,
	S_FAIL,
	S_MSG,
	S_USER,
	S_CONV,
	S_MSG_EVENT,
	S_CONV_EVENT,
	S_SWEEP,
	S_COUNT
};

#define SWEEP_EVERY 300 /* seconds between two looks for lost heads */

/* A drain claims the due heads of up to BATCH_MAX queues in one transaction,
 * sends them one after the other, and records their answers in one: two
 * waits for the write lock a batch instead of two an item, which matters
 * while a walk holds the lock most of the time.  No request of a batch
 * starts after BATCH_MS, so that an answer waits to be recorded about a
 * second at most; the items not asked by then go back to pending. */
#define BATCH_MAX 32
#define BATCH_MS  1000

/* The due lookups name their index: the plan must never sort the items
 * that wait (tests/unit/test_outbox.c checks it). */
static const char *const sql[S_COUNT] = {
	/* ?1: the ids of the answers kept (a JSON array), which stay. */
	[S_RECOVER] =
		"UPDATE outbox\n"
		"SET state = 'pending', next_attempt_at = coalesce(next_attempt_at, " NOW_UTC
		")\n"
		"WHERE state = 'sending' AND id NOT IN (SELECT value FROM json_each(?1))",
	/* The item of an answer kept at the last stop, as S_DUE loads items,
	 * while it still waits for that answer. */
	[S_KEPT] =
		"SELECT id, kind, target, payload, idempotency_key, attempts,\n"
		"	unixepoch('now') - unixepoch(coalesce(retried_at, created_at))\n"
		"FROM outbox\n"
		"WHERE id = ?1 AND state = 'sending' AND idempotency_key = ?2",
	[S_DUE] =
		"SELECT id, kind, target, payload, idempotency_key, attempts,\n"
		"	unixepoch('now') - unixepoch(coalesce(retried_at, created_at))\n"
		"FROM outbox INDEXED BY outbox_due\n"
		"WHERE state = 'pending' AND next_attempt_at <= " NOW_UTC
		"\n"
		"ORDER BY next_attempt_at, id\n"
		"LIMIT ?1",
	[S_NEXT_DUE] =
		"SELECT unixepoch(min(next_attempt_at)) - unixepoch('now')\n"
		"FROM outbox INDEXED BY outbox_due\n"
		"WHERE state = 'pending'",
	[S_EARLIER] =
		"SELECT min(id)\n"
		"FROM outbox\n"
		"WHERE target = ?1 AND state IN ('pending', 'sending') AND id < ?2",
	[S_UNSCHEDULE] = "UPDATE outbox SET next_attempt_at = NULL WHERE id = ?1 AND state = 'pending'",
	[S_SCHEDULE] = "UPDATE outbox SET next_attempt_at = " NOW_UTC
		       "\n"
		       "WHERE id = ?1 AND state = 'pending' AND next_attempt_at IS NULL",
	[S_REF] = "SELECT kind, state, remote_id FROM outbox WHERE id = ?1",
	[S_SENDING] = "UPDATE outbox SET state = 'sending', sending_at = " NOW_UTC
		      "\n"
		      "WHERE id = ?1 AND state = 'pending'",
	[S_UNCLAIM] = "UPDATE outbox SET state = 'pending' WHERE id = ?1 AND state = 'sending'",
	[S_SENT] =
		"UPDATE outbox\n"
		"SET state = 'sent', attempts = attempts + 1, last_status = ?2, last_error = NULL,\n"
		"	remote_id = ?3, response = ?4, next_attempt_at = NULL,\n"
		"	sent_at = " NOW_UTC
		"\n"
		"WHERE id = ?1",
	[S_RETRY] =
		"UPDATE outbox\n"
		"SET state = 'pending', attempts = attempts + 1, last_status = ?2, last_error = ?3,\n"
		"	next_attempt_at = strftime('%Y-%m-%dT%H:%M:%SZ', ?4, 'unixepoch')\n"
		"WHERE id = ?1",
	[S_FAIL] =
		"UPDATE outbox\n"
		"SET state = 'failed', attempts = attempts + ?4, last_status = ?2, last_error = ?3,\n"
		"	next_attempt_at = NULL, failed_at = " NOW_UTC
		"\n"
		"WHERE id = ?1",
	[S_MSG] =
		"INSERT INTO messages(id, conversation_id, text, type, timestamp, origin, raw)\n"
		"VALUES (?1, ?2, ?3, ?4, strftime('%Y-%m-%dT%H:%M:%SZ', ?5, 'unixepoch'), 'outbox', ?6)\n"
		"ON CONFLICT(id) DO UPDATE\n"
		"SET origin = 'outbox', type = excluded.type, timestamp = excluded.timestamp, raw = excluded.raw",
	[S_USER] =
		"INSERT INTO users(id, email, custom_attributes, raw, updated_at)\n"
		"VALUES (?1, ?2, ?3, ?4, " NOW_UTC
		")\n"
		"ON CONFLICT(id) DO UPDATE\n"
		"SET email = excluded.email, custom_attributes = excluded.custom_attributes,\n"
		"	raw = excluded.raw, updated_at = excluded.updated_at",
	[S_CONV] =
		"INSERT INTO conversations(id, status, subject, created_at, user_id, raw,\n"
		"	first_seen_at, changed_at)\n"
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6, " NOW_UTC ", " NOW_UTC
		")\n"
		"ON CONFLICT(id) DO NOTHING",
	/* The history of what the outbox changed (origin 'outbox'): a sent
	 * message ?2 became the last message of conversation ?1, after the
	 * last one the walks listed or the outbox sent since.  None when a
	 * walk has seen the last message change since item ?3 was queued: it
	 * listed ?2 (between a request Dexra applied and this answer), and
	 * told the change; or a later message, and the order of the two is
	 * the walks' to tell. */
	[S_MSG_EVENT] =
		"INSERT INTO conversation_events(conversation_id, field, old_value, new_value,\n"
		"	after, seen_at, origin, conversation_created_at)\n"
		"SELECT * FROM (\n"
		"	SELECT ?1, 'last_message',\n"
		"		coalesce((SELECT e.new_value FROM conversation_events AS e\n"
		"			  WHERE e.conversation_id = ?1 AND e.field = 'last_message'\n"
		"				AND e.origin = 'outbox'\n"
		"				AND e.seen_at >= coalesce(c.changed_at, '')\n"
		"			  ORDER BY e.id DESC LIMIT 1), c.last_message_id) AS old,\n"
		"		?2, " OUTBOX_AFTER("?3", NOW_UTC) ", " NOW_UTC ", 'outbox', c.created_at\n"
		"	FROM (SELECT 1) LEFT JOIN conversations AS c ON c.id = ?1)\n"
		"WHERE old IS NOT ?2 AND NOT EXISTS (SELECT 1 FROM conversation_events\n"
		"	WHERE conversation_id = ?1 AND field = 'last_message'\n"
		"		AND (new_value = ?2 OR (origin = 'walk' AND seen_at >=\n"
		"			(SELECT created_at FROM outbox WHERE id = ?3))))",
	/* A conversation the outbox created: its status from nothing, unless
	 * a walk has seen its status change already (a walk that listed it
	 * between our request and this answer has seen no change: the
	 * conversation is still ours). */
	[S_CONV_EVENT] =
		"INSERT INTO conversation_events(conversation_id, field, old_value, new_value,\n"
		"	after, seen_at, origin, conversation_created_at)\n"
		"SELECT id, 'status', NULL, status, " OUTBOX_AFTER("?2", "first_seen_at") ",\n"
		"	first_seen_at, 'outbox', created_at\n"
		"FROM conversations\n"
		"WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM conversation_events\n"
		"	WHERE conversation_id = ?1 AND field = 'status')",
	/* The safety net under migration 0003's triggers: a queue's head that
	 * has no time, or one that is not a time, by an edit the triggers do
	 * not see (next_attempt_at set to NULL or to text by hand), gets one;
	 * a message waiting for a conversation item in the queue keeps none. */
	[S_SWEEP] =
		"UPDATE outbox\n"
		"SET next_attempt_at = coalesce(strftime('%Y-%m-%dT%H:%M:%SZ', next_attempt_at), " NOW_UTC
		")\n"
		"WHERE id IN (SELECT min(id) FROM outbox WHERE state IN ('pending', 'sending') GROUP BY target)\n"
		"	AND state = 'pending'\n"
		"	AND (next_attempt_at IS NULL\n"
		"	     OR next_attempt_at IS NOT strftime('%Y-%m-%dT%H:%M:%SZ', next_attempt_at))\n"
		"	AND NOT (target GLOB '" REF_PREFIX
		"[0-9]*' AND EXISTS (\n"
		"		SELECT 1 FROM outbox AS c\n"
		"		WHERE c.id = CAST(substr(outbox.target, 8) AS INTEGER)\n"
		"			AND c.state IN ('pending', 'sending')))",
};

/* One due item, as loaded; every string is owned. */
struct item {
	long long id;
	const char *kind; /* one of the three literals */
	char *target;
	char *idempotency_key; /* sent exactly as stored */
	char *payload;	       /* the body as queued */
	char *label;	       /* "item 17 (message to conv_1)" for the log */
	long attempts;
	long age; /* seconds since queued or retried */
	int cut;  /* a NUL in a text column: not sendable as stored */
};

/* An item claimed for a request, and what came of it.  A batch's answers
 * are recorded together; when the database refuses (locked past
 * busy_timeout, disk full) they are kept, on the list of answers not
 * recorded, and recorded first by the next drain (or outbox_settle): each
 * item stays 'sending' meanwhile, which holds its target's later items back,
 * so a delivered item is never sent again because of a local error. */
struct answer {
	struct answer *next; /* on the list of answers not recorded */
	struct item it;
	char *body;	       /* the body sent, when not the payload as queued */
	int asked;	       /* the request was made; else the item goes back to pending */
	struct api_response r; /* r.body points to response, the owned copy */
	char *response;
};

/* A log line that waits for its transaction's end: logged after a commit,
 * dropped after a rollback, so the log never tells of a change the
 * database did not keep. */
struct note {
	struct note *next;
	int prio;
	char *line;
};

struct outbox {
	sqlite3 *db;
	struct api *api;
	const struct conf *c;
	sqlite3_stmt *st[S_COUNT];
	struct answer *batch, **batch_end; /* claimed, to be asked */
	int batched;			   /* how many */
	int claim;			   /* how many the next batch claims at most */
	struct answer *unrecorded, **unrecorded_end;
	int busy; /* the last transaction ended on the lock (SQLITE_BUSY) */
	struct note *notes, **notes_end;
	time_t last_sweep;
};

/* A formatted string, malloc'd; NULL when out of memory. */
static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

static void item_free(struct item *it)
{
	free(it->target);
	free(it->idempotency_key);
	free(it->payload);
	free(it->label);
	memset(it, 0, sizeof(*it));
}

/* Log a line now, or at the end of the transaction open on ob->db. */
static void note(struct outbox *ob, int prio, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void note(struct outbox *ob, int prio, const char *fmt, ...)
{
	struct note *n = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (!sqlite3_get_autocommit(ob->db) && (n = calloc(1, sizeof(*n))) &&
	    vasprintf(&n->line, fmt, ap) >= 0) {
		n->prio = prio;
		*ob->notes_end = n;
		ob->notes_end = &n->next;
	} else {
		free(n);
		va_end(ap);
		va_start(ap, fmt);
		log_vmsg(prio, fmt, ap); /* now rather than never */
	}
	va_end(ap);
}

/* The transaction ended: log its lines when it was committed. */
static void notes_end(struct outbox *ob, int committed)
{
	while (ob->notes) {
		struct note *n = ob->notes;

		if (committed)
			log_msg(n->prio, "%s", n->line);
		ob->notes = n->next;
		free(n->line);
		free(n);
	}
	ob->notes_end = &ob->notes;
}

/* End the transaction open: committed when rc is DX_OK (which the commit
 * may turn into DX_DB), rolled back otherwise.  The lines noted in it are
 * logged or dropped with it. */
static enum dx_result tx_end(struct outbox *ob, enum dx_result rc)
{
	if (rc == DX_OK)
		rc = db_commit(ob->db, "outbox");
	ob->busy = rc != DX_OK && (sqlite3_errcode(ob->db) & 0xff) == SQLITE_BUSY;
	db_rollback(ob->db); /* unless committed, or ended by SQLite */
	notes_end(ob, rc == DX_OK);
	return rc;
}

/* Step statement which, one that returns no rows, and reset it: DX_OK, or
 * DX_DB after logging. */
static enum dx_result step_done(struct outbox *ob, int which)
{
	int row;

	assert(!sqlite3_stmt_busy(ob->st[which]));
	return db_step(ob->st[which], "outbox", &row);
}

struct outbox *outbox_open(sqlite3 *db, struct api *api, const struct conf *c)
{
	struct outbox *ob = calloc(1, sizeof(*ob));

	if (!ob)
		return NULL;
	ob->db = db;
	ob->api = api;
	ob->c = c;
	ob->claim = BATCH_MAX;
	ob->batch_end = &ob->batch;
	ob->unrecorded_end = &ob->unrecorded;
	ob->notes_end = &ob->notes;
	for (int i = 0; i < S_COUNT; i++)
		if (!(ob->st[i] = db_prepare(db, sql[i]))) {
			outbox_close(ob);
			return NULL;
		}
	return ob;
}

static void answer_free(struct answer *a)
{
	item_free(&a->it);
	free(a->body);
	free(a->response);
	free(a);
}

/* Free the batch's answers. */
static void batch_free(struct outbox *ob)
{
	while (ob->batch) {
		struct answer *a = ob->batch;

		ob->batch = a->next;
		answer_free(a);
	}
	ob->batch_end = &ob->batch;
	ob->batched = 0;
}

/* At the end: write the answers the database still refuses to the file of
 * kept answers, which the next dexsyncd records before it sends anything;
 * when that fails too, say which items go again.  Frees them. */
static void unrecorded_keep(struct outbox *ob)
{
	char *path = kept_path(ob->c->database);
	struct kept *v;
	struct answer *a;
	size_t n = 0, i = 0, unasked = 0;
	int saved = 0;

	for (a = ob->unrecorded; a; a = a->next) {
		n++;
		unasked += !a->asked;
	}
	if (path && (v = calloc(n, sizeof(*v)))) {
		for (a = ob->unrecorded; a; a = a->next, i++)
			v[i] = (struct kept){ .id = a->it.id,
					      .key = a->it.idempotency_key,
					      .asked = a->asked,
					      .status = a->r.status,
					      .outcome = a->r.outcome,
					      .retry_after = a->r.retry_after,
					      .error = a->r.error,
					      .body = a->body,
					      .response = a->r.body,
					      .response_len = a->r.len };
		saved = kept_save(path, v, n) == DX_OK;
		free(v);
	}
	if (saved && unasked)
		log_notice(
			"outbox: %zu answer%s the database refused, and %zu item%s not sent, are kept "
			"in %s: the next dexsyncd records them before it sends anything",
			n - unasked, n - unasked == 1 ? "" : "s", unasked, unasked == 1 ? "" : "s", path);
	else if (saved)
		log_notice(
			"outbox: %zu answer%s the database refused %s kept in %s: the next dexsyncd "
			"records %s before it sends anything",
			n, n == 1 ? "" : "s", n == 1 ? "is" : "are", path, n == 1 ? "it" : "them");
	while ((a = ob->unrecorded)) {
		if (!saved && a->asked)
			log_err("outbox: %s was delivered but its answer could not be recorded: it stays in "
				"'sending', and the next dexsyncd sends it again",
				a->it.label);
		else if (!saved)
			log_notice(
				"outbox: %s was not sent, and stays in 'sending' until the next dexsyncd "
				"sends it",
				a->it.label);
		ob->unrecorded = a->next;
		answer_free(a);
	}
	ob->unrecorded_end = &ob->unrecorded;
	free(path);
}

void outbox_close(struct outbox *ob)
{
	if (!ob)
		return;
	batch_free(ob);
	if (ob->unrecorded)
		unrecorded_keep(ob);
	notes_end(ob, 0);
	for (int i = 0; i < S_COUNT; i++)
		sqlite3_finalize(ob->st[i]);
	free(ob);
}

/* Mark an item failed for good; attempted says whether this try counts. */
static enum dx_result item_fail(struct outbox *ob, struct item *it, long status, const char *why,
				int attempted)
{
	sqlite3_stmt *st = ob->st[S_FAIL];

	sqlite3_bind_int64(st, 1, it->id);
	if (status)
		sqlite3_bind_int64(st, 2, status);
	db_bind_text(st, 3, why);
	sqlite3_bind_int(st, 4, attempted);
	if (step_done(ob, S_FAIL) != DX_OK)
		return DX_DB;
	note(ob, LOG_NOTICE, "outbox: %s failed permanently: %s", it->label, why);
	return DX_OK;
}

/* A message to "outbox:N" takes the id of conversation item N once sent.
 * Returns 1 with *body set to the rewritten payload (malloc'd; NULL when
 * the payload is sent as queued), 0 when the message must wait, -1 when it
 * can never be sent (*why, malloc'd, says why). */
static int resolve_reference(struct outbox *ob, const struct item *it, char **body, char **why)
{
	sqlite3_stmt *st = ob->st[S_REF];
	json_t *payload;
	const char *conv, *state, *remote;
	char *end;
	long long ref;
	int rc = -1;

	*body = *why = NULL;
	payload = json_loads(it->payload, 0, NULL);
	conv = json_string_value(json_object_get(payload, "conversation_id"));
	if (!conv || strncmp(conv, REF_PREFIX, strlen(REF_PREFIX))) {
		json_decref(payload);
		return 1; /* not a reference: send as queued */
	}
	errno = 0;
	ref = strtoll(conv + strlen(REF_PREFIX), &end, 10);
	sqlite3_bind_int64(st, 1, ref);
	if (*end || ref <= 0 || errno || sqlite3_step(st) != SQLITE_ROW) {
		*why = xasprintf("%s: there is no such outbox item", conv);
	} else if (strcmp((const char *)sqlite3_column_text(st, 0), "conversation")) {
		*why = xasprintf("%s is not a conversation item", conv);
	} else {
		state = (const char *)sqlite3_column_text(st, 1);
		remote = (const char *)sqlite3_column_text(st, 2);
		if (!strcmp(state, "pending") || !strcmp(state, "sending"))
			rc = 0;
		else if (strcmp(state, "sent") || !remote)
			*why = xasprintf("%s was not created (it is %s)", conv, state);
		else if (json_object_set_new(payload, "conversation_id", json_string(remote)) == 0 &&
			 (*body = json_dumps(payload, JSON_COMPACT)))
			rc = 1;
	}
	sqlite3_reset(st);
	json_decref(payload);
	if (rc < 0 && !*why)
		*why = xasprintf("%s", "out of memory");
	return rc;
}

/* The id an answer names, or NULL: none, or one holding a NUL, which a C
 * string would cut into another id (a message to "outbox:N" would go to
 * that other conversation). */
static const char *answer_id(json_t *resp)
{
	json_t *id = json_object_get(resp, "id");
	const char *s = json_string_value(id);

	return s && strlen(s) == json_string_length(id) ? s : NULL;
}

/* Update the mirror tables with what the server says it created. */
static enum dx_result mirror_result(struct outbox *ob, const struct item *it, const char *body, json_t *resp,
				    const char *raw)
{
	json_t *req = json_loads(body, 0, NULL);
	const char *created = answer_id(resp);
	enum dx_result rc = DX_OK;
	sqlite3_stmt *st;
	int which;

	if (!strcmp(it->kind, "message")) {
		which = S_MSG;
		st = ob->st[which];
		db_bind_text(st, 1, answer_id(resp));
		db_bind_text(st, 2, json_string_value(json_object_get(req, "conversation_id")));
		db_bind_text(st, 3, json_string_value(json_object_get(req, "content")));
		db_bind_text(st, 4, json_string_value(json_object_get(req, "type")) ?: "text");
		if (json_is_integer(json_object_get(resp, "timestamp")))
			sqlite3_bind_int64(st, 5, json_integer_value(json_object_get(resp, "timestamp")));
		db_bind_text(st, 6, raw);
	} else if (!strcmp(it->kind, "user_update")) {
		char *attrs = json_dumps(json_object_get(resp, "custom_attributes"), JSON_COMPACT);

		which = S_USER;
		st = ob->st[which];
		db_bind_text(st, 1, it->target);
		db_bind_text(st, 2, json_string_value(json_object_get(resp, "email")));
		sqlite3_bind_text(st, 3, attrs, -1, free);
		db_bind_text(st, 4, raw);
	} else {
		which = S_CONV;
		st = ob->st[which];
		db_bind_text(st, 1, answer_id(resp));
		db_bind_text(st, 2, json_string_value(json_object_get(resp, "status")));
		db_bind_text(st, 3, json_string_value(json_object_get(req, "subject")));
		db_bind_text(st, 4, json_string_value(json_object_get(resp, "created_at")));
		db_bind_text(st, 5, json_string_value(json_object_get(req, "user_id")));
		db_bind_text(st, 6, raw);
	}
	/* A message or conversation the answer names no id of is not stored:
	 * nothing could find it again.  A user is known by our target. */
	if (created || which == S_USER)
		rc = step_done(ob, which);
	else
		db_reset(st);
	/* The change it made, in the history, in the same transaction. */
	if (rc == DX_OK && created && which != S_USER) {
		st = ob->st[which == S_MSG ? S_MSG_EVENT : S_CONV_EVENT];
		if (which == S_MSG) {
			db_bind_text(st, 1, json_string_value(json_object_get(req, "conversation_id")));
			db_bind_text(st, 2, answer_id(resp));
			sqlite3_bind_int64(st, 3, it->id);
		} else {
			db_bind_text(st, 1, answer_id(resp));
			sqlite3_bind_int64(st, 2, it->id);
		}
		rc = step_done(ob, which == S_MSG ? S_MSG_EVENT : S_CONV_EVENT);
	}
	json_decref(req);
	return rc;
}

/* Record a 2xx: 'sent' with the remote id, and the mirror, in the
 * transaction open. */
static enum dx_result item_sent(struct outbox *ob, struct item *it, const char *body,
				const struct api_response *r)
{
	sqlite3_stmt *st = ob->st[S_SENT];
	json_t *resp = json_loadb(r->body, r->len, JSON_ALLOW_NUL, NULL);
	const char *remote = answer_id(resp);
	char *raw = resp ? json_dumps(resp, JSON_COMPACT) : NULL;
	enum dx_result rc;

	sqlite3_bind_int64(st, 1, it->id);
	sqlite3_bind_int64(st, 2, r->status);
	db_bind_text(st, 3, remote);
	db_bind_text(st, 4, raw);
	if ((rc = step_done(ob, S_SENT)) == DX_OK && json_is_object(resp))
		rc = mirror_result(ob, it, body, resp, raw);
	if (rc == DX_OK && !remote)
		note(ob, LOG_WARNING, "outbox: %s: sent, but the answer has no id (or one holding a NUL)",
		     it->label);
	else if (rc == DX_OK)
		note(ob, LOG_DEBUG, "outbox: %s sent as %s", it->label, remote);
	free(raw);
	json_decref(resp);
	return rc;
}

/* A random value for the backoff's jitter, from the kernel: daemons
 * started together must not retry together. */
static uint32_t jitter(void)
{
	uint32_t r;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
		r = (uint32_t)random();
	return r;
}

/* A transient failure: back to pending with a backoff, or failed when the
 * attempts or the age are used up.  A backoff that would reach past
 * max-age is cut to the last moment the item may still go; a server's
 * Retry-After past it fails the item at once.  *failed says which; DX_OK,
 * or DX_DB on a database error. */
static enum dx_result item_retry(struct outbox *ob, struct item *it, const struct api_response *r,
				 int *failed)
{
	sqlite3_stmt *st = ob->st[S_RETRY];
	long attempts = it->attempts + 1, delay, left = ob->c->max_age - it->age;
	char why[sizeof(r->error) + 128];
	time_t at;
	struct tm tm;
	char when[32];

	*failed = 1;
	if (attempts >= ob->c->max_attempts) {
		snprintf(why, sizeof(why), "%s (after %ld attempts)", r->error, attempts);
		return item_fail(ob, it, r->status, why, 1);
	}
	if (r->retry_after >= 0 && r->retry_after >= left) {
		snprintf(why, sizeof(why), "%s (the server asks to wait %ld s, past max-age: %ld s left)",
			 r->error, r->retry_after, left > 0 ? left : 0);
		return item_fail(ob, it, r->status, why, 1);
	}
	*failed = 0;
	delay = backoff_delay(attempts, ob->c->min_backoff, ob->c->max_backoff, r->retry_after, jitter());
	if (delay >= left)
		delay = left > 1 ? left - 1 : 0;
	at = time(NULL) + delay + 1; /* whole seconds, rounded up: never sooner */
	sqlite3_bind_int64(st, 1, it->id);
	if (r->status)
		sqlite3_bind_int64(st, 2, r->status);
	db_bind_text(st, 3, r->error);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)at);
	if (step_done(ob, S_RETRY) != DX_OK)
		return DX_DB;
	gmtime_r(&at, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	note(ob, LOG_NOTICE, "outbox: %s: %s; attempt %ld of %ld, retrying in %ld s (at %s)", it->label,
	     r->error, attempts, ob->c->max_attempts, delay + 1, when);
	return DX_OK;
}

/* The request path of an item (malloc'd): ids are percent-encoded whole. */
static char *item_path(struct outbox *ob, const struct item *it)
{
	char *esc, *path;

	if (!strcmp(it->kind, "message"))
		return strdup("/messages");
	if (!strcmp(it->kind, "conversation"))
		return strdup("/conversations");
	if (!(esc = api_escape(ob->api, it->target)))
		return NULL;
	path = xasprintf("/users/%s", esc);
	curl_free(esc);
	return path;
}

/* Record the answer r to item's request (body: what was sent) and count
 * it.  Returns DX_OK, or DX_DB when the database refused (nothing
 * recorded). */
static enum dx_result record(struct outbox *ob, struct item *it, const char *body,
			     const struct api_response *r, struct drain_counts *n)
{
	int failed;

	switch (r->outcome) {
	case DX_OK:
		if (item_sent(ob, it, body, r) != DX_OK)
			return DX_DB;
		n->sent++;
		return DX_OK;
	case DX_TRANSIENT:
		if (item_retry(ob, it, r, &failed) != DX_OK)
			return DX_DB;
		if (failed)
			n->failed++;
		else
			n->retried++;
		return DX_OK;
	default: /* DX_PERMANENT, DX_GONE: asking again will not help */
		if (item_fail(ob, it, r->status, r->error, 1) != DX_OK)
			return DX_DB;
		n->failed++;
		return DX_OK;
	}
}

static void counts_add(struct drain_counts *n, const struct drain_counts *c)
{
	n->sent += c->sent;
	n->retried += c->retried;
	n->failed += c->failed;
	n->held += c->held;
}

/* Record count answers of the list from a on (all when count is -1) in one
 * transaction, and count them into n.  DX_OK, or DX_DB when the database
 * refused (nothing recorded; ob->busy says whether it was the lock). */
static enum dx_result answers_record(struct outbox *ob, struct answer *a, int count, struct drain_counts *n)
{
	struct drain_counts c = { 0 };
	enum dx_result rc;

	if (!a || !count)
		return DX_OK;
	for (rc = db_begin(ob->db, "outbox"); rc == DX_OK && a && count--; a = a->next) {
		if (a->asked) {
			rc = record(ob, &a->it, a->body ? a->body : a->it.payload, &a->r, &c);
		} else {
			sqlite3_bind_int64(ob->st[S_UNCLAIM], 1, a->it.id);
			rc = step_done(ob, S_UNCLAIM);
		}
	}
	if ((rc = tx_end(ob, rc)) == DX_OK)
		counts_add(n, &c);
	return rc;
}

/* Keep the batch's answers that the database refused to record, after
 * those kept before: the next drain records them first. */
static void batch_keep(struct outbox *ob)
{
	int unasked = 0;

	for (struct answer *a = ob->batch; a; a = a->next)
		if (a->asked && a->r.status)
			log_warning(
				"outbox: %s: delivered (HTTP %ld), but the database refused to record it; "
				"kept until it can be, and nothing more goes to %s before",
				a->it.label, a->r.status, a->it.target);
		else if (a->asked)
			log_warning(
				"outbox: %s: asked, with no answer (%s: it may have arrived), and the "
				"database refused to record that; kept until it can be, and nothing "
				"more goes to %s before",
				a->it.label, a->r.error, a->it.target);
		else
			unasked++;
	if (unasked)
		log_notice(
			"outbox: %d item%s not sent stay 'sending' until the database lets them back to "
			"pending",
			unasked, unasked == 1 ? "" : "s");
	if (ob->batch) {
		*ob->unrecorded_end = ob->batch;
		ob->unrecorded_end = ob->batch_end;
	}
	ob->batch = NULL;
	batch_free(ob);
}

/* Take the kept answer *pp, recorded now, off its list and free it. */
static void answer_done(struct answer **pp)
{
	struct answer *a = *pp;

	if (a->asked)
		log_notice("outbox: %s: its answer is recorded now", a->it.label);
	*pp = a->next;
	answer_free(a);
}

/* Record the answers kept by batch_keep, oldest first: all in one
 * transaction, or, when the database refuses for another reason than its
 * lock, one at a time, so that one it never takes holds no other back.
 * Returns DX_OK when none is left, DX_DB when the database still refuses. */
static enum dx_result flush_unrecorded(struct outbox *ob, struct drain_counts *n)
{
	enum dx_result rc = answers_record(ob, ob->unrecorded, -1, n);
	int each = rc != DX_OK;
	struct answer **pp;

	if (rc != DX_OK && ob->busy)
		return rc;
	rc = DX_OK;
	for (pp = &ob->unrecorded; *pp;) {
		if (!each || answers_record(ob, *pp, 1, n) == DX_OK) {
			answer_done(pp);
			continue;
		}
		rc = DX_DB;
		pp = &(*pp)->next;
	}
	ob->unrecorded_end = pp;
	return rc;
}

int outbox_settle(struct outbox *ob, long until)
{
	struct drain_counts n;
	struct timespec now;
	int left = 0;

	memset(&n, 0, sizeof(n));
	while (ob->unrecorded) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec >= until)
			break;
		/* Each try waits for the lock no longer than what is left. */
		db_busy_timeout(ob->db, (int)(until - now.tv_sec) * 1000);
		if (flush_unrecorded(ob, &n) != DX_OK && !ob->busy)
			sleep(1); /* another error (a full disk): try again in a moment */
	}
	db_busy_timeout(ob->db, DB_BUSY_TIMEOUT_MS);
	for (struct answer *a = ob->unrecorded; a; a = a->next)
		left++;
	return left;
}

/* An item due but not the head of its queue (retried behind newer ones, or
 * queued by hand with a time) waits out of line; its head gets a time, so
 * that the queue never stops.  *waits is 1 when it was put back, 0 when it
 * heads its queue.  DX_OK, or DX_DB after logging. */
static enum dx_result out_of_line(struct outbox *ob, const struct item *it, int *waits)
{
	sqlite3_stmt *st = ob->st[S_EARLIER];
	sqlite3_int64 head;
	int row;

	*waits = 0;
	db_bind_text(st, 1, it->target);
	sqlite3_bind_int64(st, 2, it->id);
	if (db_step(st, "outbox", &row) != DX_OK)
		return DX_DB;
	assert(row); /* an aggregate has a row */
	head = sqlite3_column_int64(st, 0);
	db_reset(st);
	if (!head)
		return DX_OK;
	sqlite3_bind_int64(ob->st[S_SCHEDULE], 1, head);
	sqlite3_bind_int64(ob->st[S_UNSCHEDULE], 1, it->id);
	if (step_done(ob, S_SCHEDULE) != DX_OK || step_done(ob, S_UNSCHEDULE) != DX_OK)
		return DX_DB;
	note(ob, LOG_DEBUG, "outbox: %s waits for item %lld of its queue", it->label, (long long)head);
	*waits = 1;
	return DX_OK;
}

/* Claim a due item that heads its queue, in the transaction open: it
 * becomes 'sending' (*claimed 1), or fails, waits out of line, or waits
 * for its conversation item (*claimed 0).  DX_OK, or DX_DB on a database
 * error. */
static enum dx_result claim_one(struct outbox *ob, struct answer *a, struct drain_counts *n, int *claimed)
{
	struct item *it = &a->it;
	enum dx_result res;
	char *why;
	int rc, waits;

	*claimed = 0;
	if ((res = out_of_line(ob, it, &waits)) != DX_OK || waits)
		return res;
	if (it->age > ob->c->max_age) {
		n->failed++;
		return item_fail(ob, it, 0, "older than max-age, never delivered", 0);
	}
	if (it->cut) {
		n->failed++;
		return item_fail(ob, it, 0,
				 "its target, payload or idempotency key holds a NUL "
				 "character: it cannot be sent as stored",
				 0);
	}
	if (!strcmp(it->kind, "message")) {
		rc = resolve_reference(ob, it, &a->body, &why);
		if (rc == 0) {
			/* Waits out of line: the conversation item's leaving
			 * the queue makes it due again (migration 0003). */
			n->held++;
			sqlite3_bind_int64(ob->st[S_UNSCHEDULE], 1, it->id);
			return step_done(ob, S_UNSCHEDULE);
		}
		if (rc < 0) {
			n->failed++;
			res = item_fail(ob, it, 0, why, 0);
			free(why);
			return res;
		}
	}
	sqlite3_bind_int64(ob->st[S_SENDING], 1, it->id);
	if ((res = step_done(ob, S_SENDING)) == DX_OK)
		*claimed = sqlite3_changes(ob->db) > 0;
	return res;
}

/* Send a claimed item's request, and keep its answer.  DX_OK, or DX_NOMEM
 * (not asked). */
static enum dx_result answer_ask(struct outbox *ob, struct answer *a)
{
	struct item *it = &a->it;
	char *path = item_path(ob, it);

	if (!path) {
		log_err("outbox: %s: out of memory", it->label);
		return DX_NOMEM;
	}
	log_debug("outbox: %s: attempt %ld", it->label, it->attempts + 1);
	api_request(ob->api, strcmp(it->kind, "user_update") ? "POST" : "PATCH", path,
		    a->body ? a->body : it->payload, it->idempotency_key, &a->r);
	free(path);
	a->asked = 1;
	/* The answer's body lives until the next request: keep a copy. */
	if ((a->response = malloc(a->r.len + 1))) {
		if (a->r.len)
			memcpy(a->response, a->r.body, a->r.len);
		a->response[a->r.len] = '\0';
		a->r.body = a->response;
	} else {
		log_err("outbox: %s: out of memory for its answer, recorded without it", it->label);
		a->r.body = "";
		a->r.len = 0;
	}
	return DX_OK;
}

static long ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Ask for each claimed item in turn, until all are asked, a stop, or
 * BATCH_MS have passed; the next batch claims as many as went in time
 * (twice as many when all did).  DX_OK, or DX_NOMEM. */
static enum dx_result batch_send(struct outbox *ob, atomic_int *stop)
{
	enum dx_result rc = DX_OK;
	struct timespec t0;
	int asked = 0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (struct answer *a = ob->batch; a && !atomic_load(stop) && ms_since(&t0) < BATCH_MS; a = a->next) {
		if ((rc = answer_ask(ob, a)) != DX_OK)
			break;
		asked++;
	}
	if (asked < ob->batched)
		ob->claim = asked > 0 ? asked : 1;
	else if (ob->claim < BATCH_MAX)
		ob->claim = ob->claim * 2 < BATCH_MAX ? ob->claim * 2 : BATCH_MAX;
	return rc;
}

/* Column i of st as a string (malloc'd; "" for NULL); *cut is set when
 * the text holds a NUL, where a C string would end early. */
static char *column_dup(sqlite3_stmt *st, int i, int *cut)
{
	const char *t = (const char *)sqlite3_column_text(st, i);

	if (!t)
		return strdup("");
	if (strlen(t) != (size_t)sqlite3_column_bytes(st, i))
		*cut = 1;
	return strdup(t);
}

/* Load the item of S_DUE's row into *it.  DX_OK, or DX_NOMEM. */
static enum dx_result item_load(sqlite3_stmt *st, struct item *it)
{
	const char *kind = (const char *)sqlite3_column_text(st, 1);

	it->id = sqlite3_column_int64(st, 0);
	it->kind = !strcmp(kind, "message")	? "message" :
		   !strcmp(kind, "user_update") ? "user_update" :
						  "conversation";
	it->target = column_dup(st, 2, &it->cut);
	it->payload = column_dup(st, 3, &it->cut);
	it->idempotency_key = column_dup(st, 4, &it->cut);
	it->attempts = sqlite3_column_int(st, 5);
	it->age = (long)sqlite3_column_int64(st, 6);
	if (it->target && it->payload && it->idempotency_key)
		it->label = xasprintf("item %lld (%s to %s)", it->id, it->kind, it->target);
	return it->label ? DX_OK : DX_NOMEM;
}

/* Load up to limit due items, the longest due first, as answers on the
 * list *due; *found counts them.  DX_OK, or DX_DB or DX_NOMEM after
 * logging (what was loaded stays on the list). */
static enum dx_result due_load(struct outbox *ob, int limit, struct answer **due, int *found)
{
	sqlite3_stmt *st = ob->st[S_DUE];
	struct answer *a, **end = due;
	enum dx_result rc;
	int row;

	*due = NULL;
	*found = 0;
	sqlite3_bind_int(st, 1, limit);
	while ((rc = db_step(st, "outbox", &row)) == DX_OK && row) {
		if (!(a = calloc(1, sizeof(*a))) || item_load(st, &a->it) != DX_OK) {
			if (a)
				answer_free(a);
			log_err("outbox: out of memory");
			rc = DX_NOMEM;
			break;
		}
		*end = a;
		end = &a->next;
		(*found)++;
	}
	db_reset(st);
	return rc;
}

/* Seconds until the next item is due (0: now), -1 when none waits. */
static long next_due(struct outbox *ob)
{
	sqlite3_stmt *st = ob->st[S_NEXT_DUE];
	long wait = -1;

	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
		wait = (long)sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return wait < -1 ? 0 : wait;
}

/* Put an answer kept at the last stop on the list to record, when its item
 * still waits for it: 'sending', with the same key. */
static enum dx_result kept_take(const struct kept *k, void *arg)
{
	struct outbox *ob = arg;
	sqlite3_stmt *st = ob->st[S_KEPT];
	struct answer *a = NULL;
	enum dx_result rc;
	int row;

	sqlite3_bind_int64(st, 1, k->id);
	db_bind_text(st, 2, k->key);
	if ((rc = db_step(st, "outbox", &row)) != DX_OK)
		return rc;
	if (!row) {
		log_notice(
			"outbox: item %lld: the answer kept for it is left out: it is no longer 'sending' "
			"with that key (retried or cancelled by hand?)",
			k->id);
		return DX_OK;
	}
	for (a = ob->unrecorded; a && a->it.id != k->id; a = a->next)
		;
	if (a) {
		db_reset(st);
		log_notice("outbox: item %lld: a second answer kept for it is left out", k->id);
		return DX_OK;
	}
	if (!(a = calloc(1, sizeof(*a))) || item_load(st, &a->it) != DX_OK ||
	    !(a->response = malloc(k->response_len + 1)) || (k->body && !(a->body = strdup(k->body)))) {
		db_reset(st);
		if (a)
			answer_free(a);
		log_err("outbox: out of memory");
		return DX_NOMEM;
	}
	db_reset(st);
	a->asked = k->asked;
	a->r.status = k->status;
	a->r.outcome = k->outcome;
	a->r.retry_after = k->retry_after;
	snprintf(a->r.error, sizeof(a->r.error), "%s", k->error); /* written from one such buffer */
	if (k->response_len)
		memcpy(a->response, k->response, k->response_len);
	a->response[k->response_len] = '\0';
	a->r.body = a->response;
	a->r.len = k->response_len;
	*ob->unrecorded_end = a;
	ob->unrecorded_end = &a->next;
	return DX_OK;
}

/* Take the answers a stop kept in DATABASE.answers, if any, into memory,
 * and remove the file: from now on they are this outbox's to record first
 * (or to keep again at its stop); a crash before that sends their items
 * again, as any crash.  At a start, and at each drain: a reload's outbox
 * starts while the one it replaces still runs, which may keep answers at
 * its end.  DX_OK, or DX_DB or DX_NOMEM when the file could not be taken
 * (it stays), after logging. */
static enum dx_result adopt_kept(struct outbox *ob)
{
	char *path = kept_path(ob->c->database);
	enum dx_result rc;
	int entries;

	if (!path) {
		log_err("outbox: out of memory");
		return DX_NOMEM;
	}
	if ((rc = kept_load(path, kept_take, ob, &entries)) == DX_OK && entries >= 0) {
		kept_remove(path); /* logged; its answers would be left out next time */
		log_notice("outbox: %d answer%s kept at a stop taken from %s, to be recorded first", entries,
			   entries == 1 ? "" : "s", path);
	}
	free(path);
	return rc;
}

/* The ids of the answers not recorded, as a JSON array (malloc'd); NULL
 * when out of memory, logged. */
static char *unrecorded_ids(const struct outbox *ob)
{
	json_t *ids = json_array();
	char *text = NULL;

	for (const struct answer *a = ob->unrecorded; ids && a; a = a->next)
		if (json_array_append_new(ids, json_integer(a->it.id)) < 0) {
			json_decref(ids);
			ids = NULL;
		}
	if (ids)
		text = json_dumps(ids, JSON_COMPACT);
	json_decref(ids);
	if (!text)
		log_err("outbox: out of memory");
	return text;
}

enum dx_result outbox_recover(struct outbox *ob, int sending, int *n)
{
	enum dx_result rc;
	char *ids;

	*n = 0;
	if ((rc = adopt_kept(ob)) != DX_OK)
		return rc;
	kept_reserve(ob->c->database); /* logged; the outbox goes on without it */
	if (!sending)
		return DX_OK;
	/* Every other item in 'sending' was left by a crash. */
	if (!(ids = unrecorded_ids(ob)))
		return DX_NOMEM;
	sqlite3_bind_text(ob->st[S_RECOVER], 1, ids, -1, free);
	if (step_done(ob, S_RECOVER) != DX_OK)
		return DX_DB;
	*n = sqlite3_changes(ob->db);
	if (*n)
		log_notice("outbox: %d item%s left in 'sending' by an earlier run go back to pending", *n,
			   *n == 1 ? "" : "s");
	return DX_OK;
}

/* Claim the due heads of up to ob->claim queues in one transaction, each
 * 'sending' (or failed, or waiting) before any of them is asked: the
 * batch.  *found counts the due items looked at (0: none is due). */
static enum dx_result batch_claim(struct outbox *ob, struct drain_counts *n, int *found)
{
	struct drain_counts c = { 0 };
	struct answer *due = NULL, *a;
	enum dx_result rc;
	int claimed;

	assert(!ob->batch);
	*found = 0;
	if ((rc = db_begin(ob->db, "outbox")) == DX_OK)
		rc = due_load(ob, ob->claim, &due, found);
	while ((a = due)) {
		due = a->next;
		a->next = NULL;
		claimed = 0;
		if (rc == DX_OK)
			rc = claim_one(ob, a, &c, &claimed);
		if (!claimed) {
			answer_free(a);
			continue;
		}
		*ob->batch_end = a;
		ob->batch_end = &a->next;
		ob->batched++;
	}
	if ((rc = tx_end(ob, rc)) != DX_OK) {
		batch_free(ob);
		return rc;
	}
	counts_add(n, &c);
	return DX_OK;
}

/* Record the batch's answers in one transaction; when the database
 * refuses, keep them for the next drain. */
static enum dx_result batch_record(struct outbox *ob, struct drain_counts *n)
{
	enum dx_result rc = answers_record(ob, ob->batch, -1, n);

	if (rc == DX_OK)
		batch_free(ob);
	else
		batch_keep(ob);
	return rc;
}

enum dx_result outbox_drain(struct outbox *ob, atomic_int *stop, struct drain_counts *n)
{
	enum dx_result rc = DX_OK, sent;
	int found;

	memset(n, 0, sizeof(*n));
	n->wait = -1;
	if ((rc = adopt_kept(ob)) == DX_OK && ob->unrecorded)
		rc = flush_unrecorded(ob, n);
	if (rc == DX_OK && time(NULL) - ob->last_sweep >= SWEEP_EVERY) {
		if ((rc = step_done(ob, S_SWEEP)) == DX_OK && sqlite3_changes(ob->db) > 0)
			log_notice("outbox: %d queue%s had lost %s due time (edited by hand?); due now",
				   sqlite3_changes(ob->db), sqlite3_changes(ob->db) == 1 ? "" : "s",
				   sqlite3_changes(ob->db) == 1 ? "its" : "their");
		ob->last_sweep = time(NULL);
	}
	/* Each item looked at leaves the due set (sent, failed, retried later,
	 * put out of line) or, not asked in its batch's time, goes back to it
	 * while at least one of its batch was asked: so the loop ends. */
	while (rc == DX_OK && !atomic_load(stop) && (rc = batch_claim(ob, n, &found)) == DX_OK && found) {
		sent = batch_send(ob, stop);
		rc = batch_record(ob, n);
		if (sent != DX_OK)
			rc = sent;
	}
	if (rc == DX_OK)
		n->wait = next_due(ob);
	if (n->sent || n->retried || n->failed)
		log_info("outbox: %ld sent, %ld to retry, %ld failed, %ld held back", n->sent, n->retried,
			 n->failed, n->held);
	return rc;
}
