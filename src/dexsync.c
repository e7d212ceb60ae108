/* dexsync.c - the command line: queue writes, inspect and repair the outbox
 *
 * It works on the database alone: queuing is an INSERT into the outbox,
 * committed with synchronous=FULL, and never needs the network or the key.
 * The commands that only look (outbox, status, report) open the database
 * read-only and never write, migrate or wait for the write lock.
 *
 * Arguments that are not what they seem (not UTF-8, a NUL or a control
 * character, a number too large, an option given twice) are refused with
 * one line, never changed; whatever the database or the user hands us is
 * escaped before it reaches the terminal (escape.h). */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <locale.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backup.h"
#include "check.h"
#include "conf.h"
#include "db.h"
#include "escape.h"
#include "history.h"
#include "kept.h"
#include "lock.h"
#include "log.h"
#include "queue.h"
#include "report.h"
#include "search.h"
#include "status.h"

#define DEFAULT_CONF SYSCONFDIR "/dexsyncd.conf"
#define EXIT_USAGE   2
#define STDIN_CHUNK  65536

/* What a command works on: the database, its path (the daemon's lock file
 * sits next to it), and the configuration. */
struct ctx {
	sqlite3 *db;
	const char *path;
	const struct conf *conf;
};

static const char usage_text[] =
	"Usage: dexsync [-f FILE | -d DATABASE] COMMAND ...\n"
	"  send CONVERSATION [TEXT|-] [--note]   queue a message (TEXT from stdin if - or absent)\n"
	"  update-user USER [--email E] [KEY=VALUE ...]\n"
	"                                        queue an attribute patch; VALUE is JSON when\n"
	"                                        it parses as JSON (1200, true, null), else a string\n"
	"  new-conversation USER [--subject S] [--tag T]...\n"
	"                                        queue a conversation; prints outbox:N for send\n"
	"  outbox [--state STATE]                list items\n"
	"  retry ID... | retry --failed          failed (or stranded sending) -> pending\n"
	"  cancel ID...                          pending (or stranded sending) -> cancelled\n"
	"  status                                last walk, counts, outbox, daemon; exit 2 when\n"
	"                                        unhealthy, 1 when an item is sending > 10 min\n"
	"  report [NAME] [--format table|csv|json|html] [--since DATE] [--until DATE]\n"
	"         [--attribute KEY]              built-in reports; alone, lists them: by-status,\n"
	"                                        daily, backlog, outbox, sync-history,\n"
	"                                        user-attribute, backlog-daily, time-to-close,\n"
	"                                        reopened, changes\n"
	"  history CONVERSATION [--format table|csv|json]\n"
	"                                        what dexsync has seen of one conversation:\n"
	"                                        its events, listed and sent messages\n"
	"  backup FILE                           an online, checked copy of the mirror into\n"
	"                                        FILE, which must not exist\n"
	"  check                                 integrity, schema, rows, search index,\n"
	"                                        stranded items; exit 0 sound, 1 a problem\n"
	"  search QUERY [--status S] [--since DATE] [--limit N] [--all]\n"
	"         [--format table|csv|json]      full-text search of subjects and messages,\n"
	"                                        best first; exit 0 found, 1 none, 2 error\n"
	"\n"
	"  -f, --config FILE     configuration: the database and the intervals status\n"
	"                        judges by (default " DEFAULT_CONF
	")\n"
	"  -d, --database FILE   the database itself (then the defaults, unless -f)\n"
	"  -V, --version         print the version\n"
	"  -h, --help            print this help\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line on stderr, escaped like a log line, pointing at --help;
 * returns EXIT_USAGE. */
static int usage_error(const char *fmt, ...)
{
	char *text = NULL, *safe = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (n >= 0)
		safe = escape_text(text, (size_t)n);
	fprintf(stderr, "dexsync: %s (see dexsync --help)\n", safe ? safe : "bad usage");
	free(safe);
	free(text);
	return EXIT_USAGE;
}

/* The one-line error for what getopt_long (opterr off, optstring starting
 * with ':') returned instead of an option of command cmd. */
static int option_error(const char *cmd, int ch, char **argv)
{
	const char *arg = argv[optind - 1];

	if (ch == ':')
		return usage_error("%s: option '%s' needs a value", cmd, arg);
	if (!strncmp(arg, "--", 2) && strchr(arg, '=') && optopt)
		return usage_error("%s: option '%.*s' takes no value", cmd, (int)(strchr(arg, '=') - arg),
				   arg);
	if (!strncmp(arg, "--", 2) && !optopt)
		return usage_error("%s: unknown option '%s'", cmd, arg);
	return usage_error("%s: unknown option '-%c'", cmd, optopt);
}

/* Read all of standard input (at most QUEUE_MAX_TEXT bytes, and one more
 * to tell a text that is too long) into a malloc'd, NUL-terminated buffer;
 * *len gets its length (it may hold NUL bytes, which queue_message
 * refuses).  NULL after logging why. */
static char *read_stdin(size_t *len)
{
	size_t size = STDIN_CHUNK, n;
	char *buf = malloc(size + 1), *p;

	*len = 0;
	while (buf && (n = fread(buf + *len, 1, size - *len, stdin)) > 0) {
		*len += n;
		if (*len > QUEUE_MAX_TEXT) {
			log_err("the message text is larger than %u bytes", QUEUE_MAX_TEXT);
			free(buf);
			return NULL;
		}
		if (*len == size) {
			if (!(p = realloc(buf, size * 2 + 1))) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = p;
			size *= 2;
		}
	}
	if (!buf) {
		log_err("out of memory");
		return NULL;
	}
	if (ferror(stdin)) {
		log_err("cannot read standard input");
		free(buf);
		return NULL;
	}
	buf[*len] = '\0';
	return buf;
}

/* INSERT the item; prints and returns its id, or -1 after saying why. */
static long long enqueue(sqlite3 *db, const char *kind, const char *target, json_t *payload)
{
	sqlite3_stmt *st = NULL;
	char *body = json_dumps(payload, JSON_COMPACT);
	long long id = -1;

	if (!body) {
		log_err("out of memory");
		return -1;
	}
	if (sqlite3_prepare_v2(db, "INSERT INTO outbox(kind, target, payload) VALUES (?1, ?2, ?3)", -1, &st,
			       NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, target, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, body, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_DONE)
			id = sqlite3_last_insert_rowid(db);
	}
	/* A closed pipe must not end the command silently once it queued:
	 * its reference is lost, and it says so below. */
	signal(SIGPIPE, SIG_IGN);
	if (id < 0) {
		log_err("cannot queue: %s", sqlite3_errmsg(db));
	} else if (printf("outbox:%lld\n", id) < 0 || fflush(stdout) == EOF) {
		/* Queued all the same: said here, so that a script does not
		 * queue it again; the program's end has nothing left to say. */
		log_err("outbox:%lld is queued, but standard output failed: %s", id, strerror(errno));
		clearerr(stdout);
		id = -1;
	}
	sqlite3_finalize(st);
	free(body);
	return id;
}

/* Is outbox item n a queued conversation that is not failed or cancelled? */
static int queued_conversation(sqlite3 *db, long long n)
{
	sqlite3_stmt *st = NULL;
	int ok = 0;

	if (sqlite3_prepare_v2(db,
			       "SELECT 1 FROM outbox WHERE id = ?1 AND kind = 'conversation'"
			       " AND state NOT IN ('failed', 'cancelled')",
			       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, n);
		ok = sqlite3_step(st) == SQLITE_ROW;
	}
	sqlite3_finalize(st);
	return ok;
}

/* A user id as update-user and new-conversation take it: an id, and not an
 * outbox reference (which only a conversation can be).  Logs why not. */
static int check_user(const char *user)
{
	if (!queue_valid_id(user) || queue_outbox_ref(user)) {
		log_err("'%.80s' is not a user id", user);
		return 0;
	}
	return 1;
}

static int cmd_send(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = { { "note", no_argument, NULL, 'n' }, { NULL, 0, NULL, 0 } };
	char err[256], *text;
	const char *conv;
	long long ref;
	int note = 0, ch, rc = 1;
	size_t len;
	json_t *payload;

	while ((ch = getopt_long(argc, argv, ":n", opts, NULL)) != -1) {
		if (ch != 'n')
			return option_error("send", ch, argv);
		note = 1;
	}
	if (optind >= argc || argc - optind > 2)
		return usage_error("%s", "send takes CONVERSATION [TEXT|-]");
	conv = argv[optind];
	ref = queue_outbox_ref(conv);
	if (!queue_valid_id(conv) || ref < 0) {
		log_err("'%.80s' is not a conversation id", conv);
		return 1;
	}
	if (ref > 0 && !queued_conversation(x->db, ref)) {
		log_err("%s is not a queued new-conversation item", conv);
		return 1;
	}
	if (optind + 1 < argc && strcmp(argv[optind + 1], "-")) {
		len = strlen(argv[optind + 1]);
		text = strdup(argv[optind + 1]);
		if (!text)
			log_err("out of memory");
	} else {
		text = read_stdin(&len);
	}
	if (!text)
		return 1;
	payload = queue_message(conv, text, len, note, err, sizeof(err));
	if (!payload)
		log_err("%s", err);
	else if (enqueue(x->db, "message", conv, payload) > 0)
		rc = 0;
	json_decref(payload);
	free(text);
	return rc;
}

static int cmd_update_user(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = { { "email", required_argument, NULL, 'e' },
					      { NULL, 0, NULL, 0 } };
	json_t *payload = json_object(), *attrs = json_object(), *value;
	char err[256], *key;
	const char *user;
	int ch, rc = 1;

	if (!payload || !attrs) {
		log_err("out of memory");
		goto out;
	}
	while ((ch = getopt_long(argc, argv, ":e:", opts, NULL)) != -1) {
		if (ch != 'e') {
			rc = option_error("update-user", ch, argv);
			goto out;
		}
		if (json_object_get(payload, "email")) {
			log_err("--email is given twice");
			goto out;
		}
		if (!queue_valid_email(optarg)) {
			log_err("'%.80s' is not an email address", optarg);
			goto out;
		}
		if (json_object_set_new(payload, "email", json_string(optarg)) < 0) {
			log_err("out of memory");
			goto out;
		}
	}
	if (optind >= argc) {
		rc = usage_error("%s", "update-user takes USER [--email E] [KEY=VALUE ...]");
		goto out;
	}
	user = argv[optind++];
	if (!check_user(user))
		goto out;
	for (; optind < argc; optind++) {
		if (queue_parse_attribute(argv[optind], &key, &value, err, sizeof(err)) < 0) {
			log_err("%s", err);
			goto out;
		}
		if (json_object_get(attrs, key)) {
			log_err("attribute '%.80s' is given twice", key);
			free(key);
			json_decref(value);
			goto out;
		}
		rc = json_object_set_new(attrs, key, value);
		free(key);
		if (rc < 0) {
			rc = 1;
			log_err("out of memory");
			goto out;
		}
		rc = 1;
	}
	if (json_object_size(attrs) && json_object_set(payload, "custom_attributes", attrs) < 0) {
		log_err("out of memory");
		goto out;
	}
	if (!json_object_size(payload)) {
		log_err("nothing to update: give --email or KEY=VALUE");
		goto out;
	}
	rc = enqueue(x->db, "user_update", user, payload) > 0 ? 0 : 1;
out:
	json_decref(attrs);
	json_decref(payload);
	return rc;
}

/* A subject or tag: one line of UTF-8 text, not empty, without control
 * characters.  Logs why not. */
static int check_line(const char *what, const char *s)
{
	const char *why = queue_text_problem(s, strlen(s), 0);

	if (!why && strspn(s, " ") == strlen(s))
		why = "is empty";
	if (why) {
		log_err("the %s %s", what, why);
		return 0;
	}
	return 1;
}

static int cmd_new_conversation(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = { { "subject", required_argument, NULL, 's' },
					      { "tag", required_argument, NULL, 't' },
					      { NULL, 0, NULL, 0 } };
	json_t *payload = json_object(), *tags = json_array();
	int ch, rc = 1;

	if (!payload || !tags) {
		log_err("out of memory");
		goto out;
	}
	while ((ch = getopt_long(argc, argv, ":s:t:", opts, NULL)) != -1) {
		if (ch != 's' && ch != 't') {
			rc = option_error("new-conversation", ch, argv);
			goto out;
		}
		if (!check_line(ch == 's' ? "subject" : "tag", optarg))
			goto out;
		if (ch == 's' && json_object_get(payload, "subject")) {
			log_err("--subject is given twice");
			goto out;
		}
		if (ch == 's' ? json_object_set_new(payload, "subject", json_string(optarg)) < 0 :
				json_array_append_new(tags, json_string(optarg)) < 0) {
			log_err("out of memory");
			goto out;
		}
	}
	if (argc - optind != 1) {
		rc = usage_error("%s", "new-conversation takes USER [--subject S] [--tag T]...");
		goto out;
	}
	if (!check_user(argv[optind]))
		goto out;
	if (json_object_set_new(payload, "user_id", json_string(argv[optind])) < 0 ||
	    (json_array_size(tags) && json_object_set(payload, "tags", tags) < 0)) {
		log_err("out of memory");
		goto out;
	}
	rc = enqueue(x->db, "conversation", NULL, payload) > 0 ? 0 : 1;
out:
	json_decref(tags);
	json_decref(payload);
	return rc;
}

/* Print s escaped and padded with spaces to width terminal columns (no
 * padding when width is 0), then sep. */
static void put_cell(const char *s, size_t width, const char *sep)
{
	char *safe = escape_text(s ? s : "", s ? strlen(s) : 0);
	size_t w;

	if (!safe) {
		fputs("?", stdout);
		w = 1;
	} else {
		fputs(safe, stdout);
		w = report_text_width(safe);
	}
	for (; w < width; w++)
		fputc(' ', stdout);
	fputs(sep, stdout);
	free(safe);
}

static int cmd_outbox(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = { { "state", required_argument, NULL, 's' },
					      { NULL, 0, NULL, 0 } };
	static const size_t width[] = { 7, 12, 24, 9, 3, 20, 16, 0 };
	static const char *const head[] = { "ID",  "KIND",	   "TARGET",	"STATE",
					    "TRY", "NEXT ATTEMPT", "REMOTE ID", "LAST STATUS / ERROR" };
	const char *state = NULL;
	sqlite3_stmt *st = NULL;
	int ch, rc;

	while ((ch = getopt_long(argc, argv, ":s:", opts, NULL)) != -1) {
		if (ch != 's')
			return option_error("outbox", ch, argv);
		state = optarg;
	}
	if (optind < argc)
		return usage_error("outbox takes no argument '%.40s'", argv[optind]);
	if (state && strcmp(state, "pending") && strcmp(state, "sending") && strcmp(state, "sent") &&
	    strcmp(state, "failed") && strcmp(state, "cancelled")) {
		log_err("unknown state '%.40s' (pending, sending, sent, failed, cancelled)", state);
		return 1;
	}
	/* The error is cut to 100 characters (not bytes: never inside one). */
	if (sqlite3_prepare_v2(
		    x->db,
		    "SELECT id, kind, target, state, attempts,\n"
		    "	CASE WHEN state = 'sending' THEN 'since ' || coalesce(sending_at, '?')\n"
		    "		ELSE coalesce(next_attempt_at, '-') END,\n"
		    "	coalesce(remote_id, ''),\n"
		    "	trim(coalesce(last_status, '') || ' ' ||\n"
		    "		CASE WHEN length(last_error) > 100 THEN substr(last_error, 1, 100) || '...'\n"
		    "			ELSE coalesce(last_error, '') END)\n"
		    "FROM outbox\n"
		    "WHERE ?1 IS NULL OR state = ?1\n"
		    "ORDER BY id",
		    -1, &st, NULL) != SQLITE_OK) {
		log_err("database: %s", sqlite3_errmsg(x->db));
		return 1;
	}
	sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
	for (int i = 0; i < 8; i++)
		put_cell(head[i], width[i], i < 7 ? " " : "\n");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		for (int i = 0; i < 8; i++)
			put_cell((const char *)sqlite3_column_text(st, i), width[i], i < 7 ? " " : "\n");
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		log_err("database: %s", sqlite3_errmsg(x->db));
		return 1;
	}
	return 0;
}

/* Compare two outbox ids, for qsort. */
static int cmp_id(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return x < y ? -1 : x > y;
}

/* The ids named in argv ("N" or "outbox:N"), sorted, each once, into a
 * malloc'd array; *n gets their number.  NULL after logging why. */
static long long *parse_ids(int argc, char **argv, int *n)
{
	long long *ids = calloc((size_t)argc, sizeof(*ids));

	*n = 0;
	if (!ids) {
		log_err("out of memory");
		return NULL;
	}
	for (int i = 0; i < argc; i++) {
		if ((ids[i] = queue_parse_item(argv[i])) < 0) {
			log_err("'%.40s' is not an outbox id", argv[i]);
			free(ids);
			return NULL;
		}
	}
	qsort(ids, (size_t)argc, sizeof(*ids), cmp_id);
	for (int i = 0; i < argc; i++)
		if (i == 0 || ids[i] != ids[*n - 1])
			ids[(*n)++] = ids[i];
	return ids;
}

/* retry (to "pending") or cancel (to "cancelled") the items in ids, all
 * or none, in one transaction.  retry takes failed items, cancel pending
 * ones; both take an item stranded in 'sending' while no dexsyncd serves
 * the database: they then hold the daemon's lock across the transaction, so
 * that none starts meanwhile.  Returns 1 when the transaction met a
 * 'sending' item without holding the lock (*sending gets its id), else the
 * exit status. */
static int change_items(struct ctx *x, const long long *ids, int n, int retry, int locked, long long *sending)
{
	const char *from = retry ? "failed" : "pending";
	sqlite3_stmt *get = NULL, *set = NULL;
	int rc = 1;

	*sending = 0;
	if (db_begin(x->db, NULL) != DX_OK)
		return 1;
	if (sqlite3_prepare_v2(x->db, "SELECT state FROM outbox WHERE id = ?1", -1, &get, NULL) ||
	    sqlite3_prepare_v2(x->db,
			       retry ? "UPDATE outbox SET state = 'pending', attempts = 0,\n"
				       "	next_attempt_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now'),\n"
				       "	retried_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')\n"
				       "WHERE id = ?1" :
				       "UPDATE outbox SET state = 'cancelled' WHERE id = ?1",
			       -1, &set, NULL)) {
		log_err("database: %s", sqlite3_errmsg(x->db));
		goto out;
	}
	for (int i = 0; i < n; i++) {
		const char *state;

		sqlite3_bind_int64(get, 1, ids[i]);
		if (sqlite3_step(get) != SQLITE_ROW) {
			log_err("no outbox item %lld", ids[i]);
			goto out;
		}
		state = (const char *)sqlite3_column_text(get, 0);
		if (!strcmp(state, "sending") && !locked) {
			*sending = ids[i];
			goto out;
		}
		/* A stopped daemon may hold its answer: the next one records it. */
		if (!strcmp(state, "sending") && kept_waiting(x->path)) {
			log_err("item %lld may have been delivered: a stopped dexsyncd kept answers in %s.answers; "
				"start dexsyncd to record them (a %s now could %s)",
				ids[i], x->path, retry ? "retry" : "cancel",
				retry ? "send it twice" : "drop one Dexra has");
			goto out;
		}
		if (strcmp(state, from) && strcmp(state, "sending")) {
			log_err("item %lld is %s; only %s items can be %s", ids[i], state, from,
				retry ? "retried" : "cancelled");
			goto out;
		}
		sqlite3_reset(get);
		sqlite3_bind_int64(set, 1, ids[i]);
		if (sqlite3_step(set) != SQLITE_DONE) {
			log_err("database: %s", sqlite3_errmsg(x->db));
			goto out;
		}
		sqlite3_reset(set);
	}
	if (db_commit(x->db, NULL) == DX_OK) {
		printf("%d item%s %s\n", n, n == 1 ? "" : "s", retry ? "back to pending" : "cancelled");
		rc = 0;
	}
out:
	sqlite3_finalize(get);
	sqlite3_finalize(set);
	if (rc)
		db_rollback(x->db);
	return rc;
}

/* retry or cancel the items named in argv (see change_items). */
static int change_state(struct ctx *x, int argc, char **argv, int retry)
{
	long long *ids, sending;
	int n, rc, fd = -1;
	long pid;

	if (argc < 1)
		return usage_error("%s takes one or more outbox ids", retry ? "retry" : "cancel");
	if (!(ids = parse_ids(argc, argv, &n)))
		return 1;
	rc = change_items(x, ids, n, retry, 0, &sending);
	if (rc && sending) {
		fd = lock_try(x->path, &pid);
		if (fd < 0 && pid > 0)
			log_err("item %lld is being sent by dexsyncd (pid %ld), which serves %s; only an "
				"item a stopped daemon left in sending can be %s",
				sending, pid, x->path, retry ? "retried" : "cancelled");
		else if (fd < 0 && pid == 0)
			log_err("item %lld is being sent by dexsyncd (pid unknown), which serves %s; only "
				"an item a stopped daemon left in sending can be %s",
				sending, x->path, retry ? "retried" : "cancelled");
		if (fd >= 0)
			rc = change_items(x, ids, n, retry, 1, &sending);
		lock_release(fd);
	}
	free(ids);
	return rc;
}

static int cmd_retry(struct ctx *x, int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "--failed")) {
		if (argc > 2)
			return usage_error("%s", "retry --failed takes no ids");
		if (db_exec(x->db,
			    "UPDATE outbox SET state = 'pending', attempts = 0,\n"
			    "	next_attempt_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now'),\n"
			    "	retried_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')\n"
			    "WHERE state = 'failed'") != DX_OK)
			return 1;
		printf("%d item%s back to pending\n", sqlite3_changes(x->db),
		       sqlite3_changes(x->db) == 1 ? "" : "s");
		return 0;
	}
	return change_state(x, argc - 1, argv + 1, 1);
}

static int cmd_cancel(struct ctx *x, int argc, char **argv)
{
	return change_state(x, argc - 1, argv + 1, 0);
}

static int cmd_status(struct ctx *x, int argc, char **argv)
{
	if (argc > 1)
		return usage_error("status takes no argument '%.40s'", argv[1]);
	return status_run(x->db, x->path, x->conf, stdout);
}

static int cmd_report(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = { { "format", required_argument, NULL, 'F' },
					      { "since", required_argument, NULL, 's' },
					      { "until", required_argument, NULL, 'u' },
					      { "attribute", required_argument, NULL, 'a' },
					      { NULL, 0, NULL, 0 } };
	struct report_query q = { NULL, NULL, NULL };
	const struct report_def *r = NULL;
	int ch, fmt = REPORT_TABLE;

	while ((ch = getopt_long(argc, argv, ":F:s:u:a:", opts, NULL)) != -1) {
		switch (ch) {
		case 'F':
			if ((fmt = report_format_from_name(optarg)) < 0) {
				log_err("unknown format '%.40s' (table, csv, json, html)", optarg);
				return 1;
			}
			break;
		case 's':
			q.since = optarg;
			break;
		case 'u':
			q.until = optarg;
			break;
		case 'a':
			q.attribute = optarg;
			break;
		default:
			return option_error("report", ch, argv);
		}
	}
	if (argc - optind > 1)
		return usage_error("report takes one NAME, not '%.40s'", argv[optind + 1]);
	if (optind < argc && !(r = report_find(argv[optind]))) {
		log_err("unknown report '%.40s' (dexsync report lists them)", argv[optind]);
		return 1;
	}
	if (!r && fmt != REPORT_HTML) {
		report_list(stdout);
		return 0;
	}
	return report_run(x->db, r, (enum report_format)fmt, &q, stdout) < 0 ? 1 : 0;
}

/* A date as --since takes it: YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, a day
 * of the calendar (2026-13-45 has the shape, not the day): the time the
 * fields make, taken apart again, gives the same fields. */
static int valid_since(const char *s)
{
	static const char date[] = "dddd-dd-dd", stamp[] = "dddd-dd-ddTdd:dd:ddZ";
	const char *pattern = strlen(s) == strlen(date) ? date : stamp;
	struct tm tm = { 0 }, back;
	time_t t;

	if (strlen(s) != strlen(pattern))
		return 0;
	for (size_t i = 0; pattern[i]; i++)
		if (pattern[i] == 'd' ? s[i] < '0' || s[i] > '9' : s[i] != pattern[i])
			return 0;
	if (!strptime(s, pattern == date ? "%Y-%m-%d" : "%Y-%m-%dT%H:%M:%SZ", &tm))
		return 0;
	back = tm;
	t = timegm(&back);
	return gmtime_r(&t, &back) && back.tm_year == tm.tm_year && back.tm_mon == tm.tm_mon &&
	       back.tm_mday == tm.tm_mday && back.tm_hour == tm.tm_hour && back.tm_min == tm.tm_min &&
	       back.tm_sec == tm.tm_sec;
}

/* Exit 0 with matches, 1 without (like grep), 2 on any error. */
static int cmd_search(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "status", required_argument, NULL, 's' }, { "since", required_argument, NULL, 'S' },
		{ "limit", required_argument, NULL, 'l' },  { "all", no_argument, NULL, 'a' },
		{ "format", required_argument, NULL, 'F' }, { NULL, 0, NULL, 0 }
	};
	struct search_query q = { NULL, NULL, NULL, SEARCH_DEFAULT_LIMIT, 0 };
	int ch, fmt = SEARCH_TABLE;
	long found;
	char *end;

	while ((ch = getopt_long(argc, argv, ":s:S:l:aF:", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			if (strcmp(optarg, "open") && strcmp(optarg, "closed") && strcmp(optarg, "snoozed")) {
				log_err("search: unknown status '%.40s' (open, closed, snoozed)", optarg);
				return EXIT_USAGE;
			}
			q.status = optarg;
			break;
		case 'S':
			if (!valid_since(optarg)) {
				log_err("search: --since '%.40s' is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)",
					optarg);
				return EXIT_USAGE;
			}
			q.since = optarg;
			break;
		case 'l':
			q.limit = strtol(optarg, &end, 10);
			if (*optarg < '0' || *optarg > '9' || *end || q.limit < 1 ||
			    q.limit > SEARCH_MAX_LIMIT) {
				log_err("search: --limit '%.40s' is not a number from 1 to %d", optarg,
					SEARCH_MAX_LIMIT);
				return EXIT_USAGE;
			}
			break;
		case 'a':
			q.all = 1;
			break;
		case 'F':
			if ((fmt = search_format_from_name(optarg)) < 0) {
				log_err("search: unknown format '%.40s' (table, csv, json)", optarg);
				return EXIT_USAGE;
			}
			break;
		default:
			return option_error("search", ch, argv);
		}
	}
	if (argc - optind != 1)
		return usage_error("%s", "search takes one QUERY (quote it: dexsync search 'export bug')");
	q.text = argv[optind];
	found = search_run(x->db, &q, (enum search_format)fmt, stdout);
	return found < 0 ? EXIT_USAGE : found == 0 ? 1 : 0;
}

static int cmd_backup(struct ctx *x, int argc, char **argv)
{
	if (argc < 2)
		return usage_error("%s", "backup needs a FILE to write");
	if (argc > 2)
		return usage_error("backup takes one FILE, not '%.40s'", argv[2]);
	return backup_run(x->db, argv[1], stdout);
}

static int cmd_check(struct ctx *x, int argc, char **argv)
{
	if (argc > 1)
		return usage_error("check takes no argument '%.40s'", argv[1]);
	return check_run(x->db, x->path, stdout);
}

static int cmd_history(struct ctx *x, int argc, char **argv)
{
	static const struct option opts[] = { { "format", required_argument, NULL, 'F' },
					      { NULL, 0, NULL, 0 } };
	int ch, fmt = REPORT_TABLE;

	while ((ch = getopt_long(argc, argv, ":F:", opts, NULL)) != -1) {
		switch (ch) {
		case 'F':
			fmt = report_format_from_name(optarg);
			if (fmt < 0 || fmt == REPORT_HTML) {
				log_err("unknown format '%.40s' (table, csv, json)", optarg);
				return 1;
			}
			break;
		default:
			return option_error("history", ch, argv);
		}
	}
	if (optind >= argc)
		return usage_error("%s", "history: which conversation?");
	if (argc - optind > 1)
		return usage_error("history takes one CONVERSATION, not '%.40s'", argv[optind + 1]);
	if (!*argv[optind])
		return usage_error("%s", "history: the conversation id is empty");
	return history_print(x->db, argv[optind], strlen(argv[optind]), (enum report_format)fmt, stdout) < 0 ?
		       1 :
		       0;
}

static const struct command {
	const char *name;
	int (*run)(struct ctx *x, int argc, char **argv);
	enum db_mode mode; /* DB_READONLY: looks, never writes */
} commands[] = {
	{ "send", cmd_send, DB_CLIENT },
	{ "update-user", cmd_update_user, DB_CLIENT },
	{ "new-conversation", cmd_new_conversation, DB_CLIENT },
	{ "outbox", cmd_outbox, DB_READONLY },
	{ "retry", cmd_retry, DB_CLIENT },
	{ "cancel", cmd_cancel, DB_CLIENT },
	{ "status", cmd_status, DB_READONLY },
	{ "report", cmd_report, DB_READONLY },
	{ "history", cmd_history, DB_READONLY },
	{ "backup", cmd_backup, DB_READONLY },
	{ "check", cmd_check, DB_READONLY },
	{ "search", cmd_search, DB_READONLY },
};

/* The configuration: -f, else the default file unless -d names the
 * database, else the defaults. */
static int load_conf(const char *conf_path, const char *database, struct conf *c)
{
	if (conf_path)
		return conf_load(conf_path, NULL, c);
	if (!database)
		return conf_load(DEFAULT_CONF, NULL, c);
	return conf_defaults(c);
}

/* Was what the command printed lost (a full disk, a pipe closed with
 * SIGPIPE ignored)?  Then it failed, and says so once, as coreutils do:
 * with the system's reason when the last flush failed, else (stdio keeps
 * no errno for an earlier failure) as "write error". */
static int output_lost(void)
{
	errno = 0;
	if (fflush(stdout) == 0 && !ferror(stdout))
		return 0;
	log_err("standard output: %s", errno ? strerror(errno) : "write error");
	return 1;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = { { "config", required_argument, NULL, 'f' },
					      { "database", required_argument, NULL, 'd' },
					      { "version", no_argument, NULL, 'V' },
					      { "help", no_argument, NULL, 'h' },
					      { NULL, 0, NULL, 0 } };
	const char *conf_path = NULL, *database = NULL;
	const struct command *cmd = NULL;
	struct conf c;
	struct ctx x;
	int ch, rc;

	log_open("dexsync", LOG_USER, 1, 0);
	log_set_level(LOG_NOTICE);
	setlocale(LC_CTYPE, "C.UTF-8"); /* display widths of UTF-8 text */
	opterr = 0;			/* our own messages, escaped */
	while ((ch = getopt_long(argc, argv, "+:f:d:Vh", opts, NULL)) != -1) {
		switch (ch) {
		case 'f':
			conf_path = optarg;
			break;
		case 'd':
			database = optarg;
			break;
		case 'V':
			printf("dexsync %s\n", PACKAGE_VERSION);
			return output_lost();
		case 'h':
			fputs(usage_text, stdout);
			return output_lost();
		default:
			return option_error("dexsync", ch, argv);
		}
	}
	if (optind >= argc)
		return usage_error("%s", "no command given");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[optind], commands[i].name))
			cmd = &commands[i];
	if (!cmd)
		return usage_error("unknown command '%.40s'", argv[optind]);

	db_no_memory_stats(); /* search ranks on two threads */
	if (load_conf(conf_path, database, &c) < 0)
		return cmd->run == cmd_search ? EXIT_USAGE : 1;
	x.path = database ? database : c.database;
	x.conf = &c;
	x.db = db_open(x.path, cmd->mode);
	if (!x.db) {
		conf_free(&c);
		return cmd->run == cmd_search ? EXIT_USAGE : 1; /* search: 1 is "none found" */
	}
	argc -= optind;
	argv += optind;
	optind = 0; /* glibc: 0 re-initialises getopt for the command's options */
	rc = cmd->run(&x, argc, argv);
	if (output_lost())
		rc = cmd->run == cmd_search ? EXIT_USAGE : 1;
	db_close(x.db);
	conf_free(&c);
	return rc;
}
