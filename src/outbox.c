/* outbox.c - per-target FIFO delivery with retry, backoff and idempotency
 *
 * An item is committed as 'sending' before its request, so that a crash
 * can be told from a failure, and becomes 'sent', 'pending' again (with a
 * backoff) or 'failed' afterwards.  Every attempt of an item carries the
 * item's one Idempotency-Key. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "db.h"
#include "log.h"
#include "notify.h"
#include "outbox.h"

#define REF_PREFIX "outbox:"

enum {
	S_RECOVER, S_NEXT_TARGET, S_HEAD, S_REF, S_SENDING, S_SENT, S_RETRY, S_FAIL,
	S_MSG, S_USER, S_CONV, S_BEGIN, S_COMMIT, S_ROLLBACK,
	S_COUNT
};

static const char *const sql[S_COUNT] = {
	[S_RECOVER] = "UPDATE outbox SET state = 'pending' WHERE state = 'sending'",
	[S_NEXT_TARGET] =
		"SELECT target\n"
		"FROM outbox\n"
		"WHERE state IN ('pending', 'sending') AND target > ?1\n"
		"ORDER BY target\n"
		"LIMIT 1",
	[S_HEAD] =
		"SELECT id, kind, payload, idempotency_key, attempts, state,\n"
		"	coalesce(unixepoch(next_attempt_at), 0),\n"
		"	unixepoch('now') - unixepoch(coalesce(retried_at, created_at))\n"
		"FROM outbox\n"
		"WHERE target = ?1 AND state IN ('pending', 'sending')\n"
		"ORDER BY id\n"
		"LIMIT 1",
	[S_REF] = "SELECT kind, state, remote_id FROM outbox WHERE id = ?1",
	[S_SENDING] = "UPDATE outbox SET state = 'sending' WHERE id = ?1 AND state = 'pending'",
	[S_SENT] =
		"UPDATE outbox\n"
		"SET state = 'sent', attempts = attempts + 1, last_status = ?2, last_error = NULL,\n"
		"	remote_id = ?3, response = ?4, next_attempt_at = NULL,\n"
		"	sent_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')\n"
		"WHERE id = ?1",
	[S_RETRY] =
		"UPDATE outbox\n"
		"SET state = 'pending', attempts = attempts + 1, last_status = ?2, last_error = ?3,\n"
		"	next_attempt_at = strftime('%Y-%m-%dT%H:%M:%SZ', ?4, 'unixepoch')\n"
		"WHERE id = ?1",
	[S_FAIL] =
		"UPDATE outbox\n"
		"SET state = 'failed', attempts = attempts + ?4, last_status = ?2, last_error = ?3,\n"
		"	next_attempt_at = NULL, failed_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')\n"
		"WHERE id = ?1",
	[S_MSG] =
		"INSERT INTO messages(id, conversation_id, text, type, timestamp, origin, raw)\n"
		"VALUES (?1, ?2, ?3, ?4, strftime('%Y-%m-%dT%H:%M:%SZ', ?5, 'unixepoch'), 'outbox', ?6)\n"
		"ON CONFLICT(id) DO UPDATE\n"
		"SET origin = 'outbox', type = excluded.type, timestamp = excluded.timestamp, raw = excluded.raw",
	[S_USER] =
		"INSERT INTO users(id, email, custom_attributes, raw, updated_at)\n"
		"VALUES (?1, ?2, ?3, ?4, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))\n"
		"ON CONFLICT(id) DO UPDATE\n"
		"SET email = excluded.email, custom_attributes = excluded.custom_attributes,\n"
		"	raw = excluded.raw, updated_at = excluded.updated_at",
	[S_CONV] =
		"INSERT INTO conversations(id, status, subject, created_at, user_id, raw,\n"
		"	first_seen_at, changed_at)\n"
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'),\n"
		"	strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))\n"
		"ON CONFLICT(id) DO NOTHING",
	[S_BEGIN] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
};

struct outbox {
	sqlite3 *db;
	struct api *api;
	const struct conf *c;
	sqlite3_stmt *st[S_COUNT];
};

/* One item at the head of its target's queue. */
struct item {
	long long id;
	const char *kind;       /* one of the three literals */
	const char *target;
	char idempotency_key[64];
	char *payload;          /* owned: the body as queued */
	long attempts;
	long age;               /* seconds since queued or retried */
	char label[200];        /* "item 17 (message to conv_1)" for the log */
};

static int step_done(struct outbox *ob, int which)
{
	sqlite3_stmt *st = ob->st[which];
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_DONE) {
		log_err("outbox: database %s: %s", sqlite3_db_filename(ob->db, "main"),
			sqlite3_errmsg(ob->db));
		return -1;
	}
	return 0;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
	sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

struct outbox *outbox_open(sqlite3 *db, struct api *api, const struct conf *c)
{
	struct outbox *ob = calloc(1, sizeof(*ob));

	if (!ob)
		return NULL;
	ob->db = db;
	ob->api = api;
	ob->c = c;
	for (int i = 0; i < S_COUNT; i++)
		if (!(ob->st[i] = db_prepare(db, sql[i]))) {
			outbox_close(ob);
			return NULL;
		}
	return ob;
}

void outbox_close(struct outbox *ob)
{
	if (!ob)
		return;
	for (int i = 0; i < S_COUNT; i++)
		sqlite3_finalize(ob->st[i]);
	free(ob);
}

int outbox_recover(struct outbox *ob)
{
	if (step_done(ob, S_RECOVER) < 0)
		return -1;
	int n = sqlite3_changes(ob->db);

	if (n)
		log_notice("outbox: %d item%s left in 'sending' by an earlier run go back to pending",
			   n, n == 1 ? "" : "s");
	return n;
}

/* Mark an item failed for good; attempted says whether this try counts. */
static int item_fail(struct outbox *ob, struct item *it, long status, const char *why, int attempted)
{
	sqlite3_stmt *st = ob->st[S_FAIL];

	sqlite3_bind_int64(st, 1, it->id);
	if (status)
		sqlite3_bind_int64(st, 2, status);
	bind_text(st, 3, why);
	sqlite3_bind_int(st, 4, attempted);
	if (step_done(ob, S_FAIL) < 0)
		return -1;
	log_notice("outbox: %s failed permanently: %s", it->label, why);
	return 0;
}

/* A message to "outbox:N" takes the id of conversation item N once sent.
 * Returns 1 with *body set to the rewritten payload (malloc'd), 0 when the
 * message must wait, -1 when it can never be sent (reason in why). */
static int resolve_reference(struct outbox *ob, const struct item *it, char **body,
			     char *why, size_t whylen)
{
	sqlite3_stmt *st = ob->st[S_REF];
	json_t *payload;
	const char *conv, *state, *remote;
	char *end;
	long long ref;
	int rc = -1;

	*body = NULL;
	payload = json_loads(it->payload, 0, NULL);
	conv = json_string_value(json_object_get(payload, "conversation_id"));
	if (!conv || strncmp(conv, REF_PREFIX, strlen(REF_PREFIX))) {
		json_decref(payload);
		return 1;   /* not a reference: send as queued */
	}
	ref = strtoll(conv + strlen(REF_PREFIX), &end, 10);
	sqlite3_bind_int64(st, 1, ref);
	if (*end || ref <= 0 || sqlite3_step(st) != SQLITE_ROW) {
		snprintf(why, whylen, "%s: there is no such outbox item", conv);
	} else if (strcmp((const char *)sqlite3_column_text(st, 0), "conversation")) {
		snprintf(why, whylen, "%s is not a conversation item", conv);
	} else {
		state = (const char *)sqlite3_column_text(st, 1);
		remote = (const char *)sqlite3_column_text(st, 2);
		if (!strcmp(state, "pending") || !strcmp(state, "sending"))
			rc = 0;
		else if (strcmp(state, "sent") || !remote)
			snprintf(why, whylen, "%s was not created (it is %s)", conv, state);
		else if (json_object_set_new(payload, "conversation_id", json_string(remote)) == 0 &&
			 (*body = json_dumps(payload, JSON_COMPACT)))
			rc = 1;
		else
			snprintf(why, whylen, "out of memory");
	}
	sqlite3_reset(st);
	json_decref(payload);
	return rc;
}

/* Update the mirror tables with what the server says it created. */
static int mirror_result(struct outbox *ob, const struct item *it, const char *body,
			 json_t *resp, const char *raw)
{
	json_t *req = json_loads(body, 0, NULL);
	sqlite3_stmt *st;
	int which, rc;

	if (!strcmp(it->kind, "message")) {
		which = S_MSG;
		st = ob->st[which];
		bind_text(st, 1, json_string_value(json_object_get(resp, "id")));
		bind_text(st, 2, json_string_value(json_object_get(req, "conversation_id")));
		bind_text(st, 3, json_string_value(json_object_get(req, "content")));
		bind_text(st, 4, json_string_value(json_object_get(req, "type")) ?: "text");
		if (json_is_integer(json_object_get(resp, "timestamp")))
			sqlite3_bind_int64(st, 5, json_integer_value(json_object_get(resp, "timestamp")));
		bind_text(st, 6, raw);
	} else if (!strcmp(it->kind, "user_update")) {
		char *attrs = json_dumps(json_object_get(resp, "custom_attributes"), JSON_COMPACT);

		which = S_USER;
		st = ob->st[which];
		bind_text(st, 1, it->target);
		bind_text(st, 2, json_string_value(json_object_get(resp, "email")));
		sqlite3_bind_text(st, 3, attrs, -1, free);
		bind_text(st, 4, raw);
	} else {
		which = S_CONV;
		st = ob->st[which];
		bind_text(st, 1, json_string_value(json_object_get(resp, "id")));
		bind_text(st, 2, json_string_value(json_object_get(resp, "status")));
		bind_text(st, 3, json_string_value(json_object_get(req, "subject")));
		bind_text(st, 4, json_string_value(json_object_get(resp, "created_at")));
		bind_text(st, 5, json_string_value(json_object_get(req, "user_id")));
		bind_text(st, 6, raw);
	}
	rc = json_string_value(json_object_get(resp, "id")) || which == S_USER ? step_done(ob, which) : 0;
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	json_decref(req);
	return rc;
}

/* Record a 2xx: 'sent' with the remote id, and the mirror, in one transaction. */
static int item_sent(struct outbox *ob, struct item *it, const char *body,
		     const struct api_response *r)
{
	sqlite3_stmt *st = ob->st[S_SENT];
	json_t *resp = json_loadb(r->body, r->len, 0, NULL);
	const char *remote = json_string_value(json_object_get(resp, "id"));
	char *raw = resp ? json_dumps(resp, JSON_COMPACT) : NULL;
	int rc = -1;

	if (!remote)
		log_warning("outbox: %s: sent, but the answer has no id", it->label);
	if (step_done(ob, S_BEGIN) < 0)
		goto out;
	sqlite3_bind_int64(st, 1, it->id);
	sqlite3_bind_int64(st, 2, r->status);
	bind_text(st, 3, remote);
	bind_text(st, 4, raw);
	if (step_done(ob, S_SENT) < 0 ||
	    (json_is_object(resp) && mirror_result(ob, it, body, resp, raw) < 0) ||
	    step_done(ob, S_COMMIT) < 0) {
		step_done(ob, S_ROLLBACK);
		goto out;
	}
	log_debug("outbox: %s sent as %s", it->label, remote ? remote : "(no id)");
	rc = 0;
out:
	free(raw);
	json_decref(resp);
	return rc;
}

/* A transient failure: back to pending with a backoff, or failed when the
 * attempts or the age are used up.  n->wait learns when the retry is due.
 * Returns 0, or -1 on a database error. */
static int item_retry(struct outbox *ob, struct item *it, const struct api_response *r,
		      struct drain_counts *n)
{
	sqlite3_stmt *st = ob->st[S_RETRY];
	long attempts = it->attempts + 1, delay;
	char why[sizeof(r->error) + 64];
	time_t at;
	struct tm tm;
	char when[32];

	if (attempts >= ob->c->max_attempts) {
		snprintf(why, sizeof(why), "%s (after %ld attempts)", r->error, attempts);
		return item_fail(ob, it, r->status, why, 1);
	}
	delay = backoff_delay(attempts, ob->c->min_backoff, ob->c->max_backoff, r->retry_after,
			      (uint32_t)random());
	if (it->age + delay > ob->c->max_age) {
		snprintf(why, sizeof(why), "%s (older than max-age)", r->error);
		return item_fail(ob, it, r->status, why, 1);
	}
	at = time(NULL) + delay + 1;    /* whole seconds, rounded up: never sooner */
	sqlite3_bind_int64(st, 1, it->id);
	if (r->status)
		sqlite3_bind_int64(st, 2, r->status);
	bind_text(st, 3, r->error);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)at);
	if (step_done(ob, S_RETRY) < 0)
		return -1;
	if (n->wait < 0 || delay + 1 < n->wait)
		n->wait = delay + 1;
	gmtime_r(&at, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	log_notice("outbox: %s: %s; attempt %ld of %ld, retrying in %ld s (at %s)", it->label,
		   r->error, attempts, ob->c->max_attempts, delay, when);
	return 0;
}

static const char *item_path(struct outbox *ob, const struct item *it, char *buf, size_t size)
{
	char *esc;

	if (!strcmp(it->kind, "message"))
		return "/messages";
	if (!strcmp(it->kind, "conversation"))
		return "/conversations";
	esc = api_escape(ob->api, it->target);
	if (!esc)
		return NULL;
	snprintf(buf, size, "/users/%s", esc);
	curl_free(esc);
	return buf;
}

/* Send one item that is at the head of its queue and due.  Returns 1 when
 * the queue may go on to its next item, 0 when it must wait, -1 on a
 * database error. */
static int item_send(struct outbox *ob, struct item *it, struct drain_counts *n)
{
	char why[256], pathbuf[600], *body = NULL;
	const char *path, *method;
	struct api_response r;
	int rc;

	if (it->age > ob->c->max_age) {
		n->failed++;
		return item_fail(ob, it, 0, "older than max-age, never delivered", 0) < 0 ? -1 : 1;
	}
	if (!strcmp(it->kind, "message")) {
		rc = resolve_reference(ob, it, &body, why, sizeof(why));
		if (rc == 0) {
			n->held++;
			return 0;
		}
		if (rc < 0) {
			n->failed++;
			return item_fail(ob, it, 0, why, 0) < 0 ? -1 : 1;
		}
	}
	path = item_path(ob, it, pathbuf, sizeof(pathbuf));
	method = !strcmp(it->kind, "user_update") ? "PATCH" : "POST";
	sqlite3_bind_int64(ob->st[S_SENDING], 1, it->id);
	if (!path || step_done(ob, S_SENDING) < 0) {
		free(body);
		return -1;
	}
	if (sqlite3_changes(ob->db) == 0) {     /* cancelled meanwhile */
		free(body);
		return 1;
	}
	log_debug("outbox: %s: attempt %ld", it->label, it->attempts + 1);
	api_request(ob->api, method, path, body ? body : it->payload, it->idempotency_key, &r);
	switch (r.outcome) {
	case API_OK:
		rc = item_sent(ob, it, body ? body : it->payload, &r);
		n->sent++;
		rc = rc < 0 ? -1 : 1;
		break;
	case API_TRANSIENT:
		rc = item_retry(ob, it, &r, n) < 0 ? -1 : 0;
		n->retried++;
		break;
	default:
		rc = item_fail(ob, it, r.status, r.error, 1) < 0 ? -1 : 1;
		n->failed++;
		break;
	}
	free(body);
	return rc;
}

/* Load the head of target's queue.  Returns 1 (loaded, due), 0 (none, or
 * not due yet: n->wait learns when), -1 on error. */
static int head_load(struct outbox *ob, const char *target, struct item *it,
		     struct drain_counts *n)
{
	time_t now = time(NULL), due;
	sqlite3_stmt *st = ob->st[S_HEAD];
	int rc;

	bind_text(st, 1, target);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		sqlite3_reset(st);
		return 0;
	}
	if (rc != SQLITE_ROW) {
		log_err("outbox: database %s: %s", sqlite3_db_filename(ob->db, "main"),
			sqlite3_errmsg(ob->db));
		sqlite3_reset(st);
		return -1;
	}
	it->id = sqlite3_column_int64(st, 0);
	it->kind = !strcmp((const char *)sqlite3_column_text(st, 1), "message") ? "message"
		   : !strcmp((const char *)sqlite3_column_text(st, 1), "user_update") ? "user_update"
		   : "conversation";
	it->payload = strdup((const char *)sqlite3_column_text(st, 2));
	snprintf(it->idempotency_key, sizeof(it->idempotency_key), "%s",
		 (const char *)sqlite3_column_text(st, 3));
	it->attempts = sqlite3_column_int(st, 4);
	it->age = (long)sqlite3_column_int64(st, 7);
	it->target = target;
	snprintf(it->label, sizeof(it->label), "item %lld (%s to %.120s)", it->id, it->kind, target);
	due = (time_t)sqlite3_column_int64(st, 6);
	rc = strcmp((const char *)sqlite3_column_text(st, 5), "pending") == 0 && due <= now;
	if (!rc && due > now && (n->wait < 0 || due - now < n->wait))
		n->wait = (long)(due - now);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (!it->payload)
		return -1;
	if (!rc) {
		free(it->payload);
		it->payload = NULL;
	}
	return rc;
}

/* Deliver target's queue in id order until it is empty or must wait. */
static int drain_target(struct outbox *ob, const char *target, volatile sig_atomic_t *stop,
			struct drain_counts *n)
{
	struct item it;
	int rc;

	while (!*stop) {
		rc = head_load(ob, target, &it, n);
		if (rc <= 0)
			return rc;
		rc = item_send(ob, &it, n);
		free(it.payload);
		notify_watchdog();
		if (rc <= 0)
			return rc;
	}
	return 0;
}

/* The next target after prev that has items to deliver (malloc'd), or NULL. */
static char *next_target(struct outbox *ob, const char *prev, int *err)
{
	sqlite3_stmt *st = ob->st[S_NEXT_TARGET];
	char *t = NULL;
	int rc;

	bind_text(st, 1, prev);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		t = strdup((const char *)sqlite3_column_text(st, 0));
	*err = (rc != SQLITE_ROW && rc != SQLITE_DONE) || (rc == SQLITE_ROW && !t);
	if (*err)
		log_err("outbox: database %s: %s", sqlite3_db_filename(ob->db, "main"),
			sqlite3_errmsg(ob->db));
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return t;
}

/* One pass over every target with items to deliver. */
static int drain_pass(struct outbox *ob, volatile sig_atomic_t *stop, struct drain_counts *n)
{
	char *target = strdup("");
	int err = !target;

	while (target && !*stop && !err) {
		char *next = next_target(ob, target, &err);

		free(target);
		target = next;
		if (target && drain_target(ob, target, stop, n) < 0)
			err = 1;
	}
	free(target);
	return err ? -1 : 0;
}

int outbox_drain(struct outbox *ob, volatile sig_atomic_t *stop, struct drain_counts *n)
{
	struct drain_counts pass;
	int rc;

	memset(n, 0, sizeof(*n));
	/* Messages held for a conversation item may go once a later target in
	 * the same pass has sent (or failed) it: then take another pass. */
	do {
		memset(&pass, 0, sizeof(pass));
		pass.wait = -1;
		rc = drain_pass(ob, stop, &pass);
		n->sent += pass.sent;
		n->retried += pass.retried;
		n->failed += pass.failed;
		n->held = pass.held;
		n->wait = pass.wait;
	} while (rc == 0 && !*stop && pass.held && (pass.sent || pass.failed));
	if (n->sent || n->retried || n->failed)
		log_info("outbox: %ld sent, %ld to retry, %ld failed, %ld held back", n->sent,
			 n->retried, n->failed, n->held);
	return rc;
}
