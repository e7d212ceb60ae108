/* dexsync.c - the command line: queue writes, inspect and repair the outbox
 *
 * It works on the database alone: queuing is an INSERT into the outbox,
 * committed with synchronous=FULL, and never needs the network or the key. */
#include "config.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "db.h"
#include "log.h"
#include "queue.h"
#include "report.h"
#include "status.h"

#define DEFAULT_CONF	SYSCONFDIR "/dexsyncd.conf"
#define MAX_TEXT	(1u << 20)
#define EXIT_USAGE	2

static const char usage_text[] =
	"Usage: dexsync [-f FILE | -d DATABASE] COMMAND ...\n"
	"  send CONVERSATION [TEXT|-] [--note]   queue a message (TEXT from stdin if - or absent)\n"
	"  update-user USER [--email E] [KEY=VALUE ...]\n"
	"                                        queue an attribute patch; VALUE is JSON when\n"
	"                                        it parses as JSON (1200, true, null), else a string\n"
	"  new-conversation USER [--subject S] [--tag T]...\n"
	"                                        queue a conversation; prints outbox:N for send\n"
	"  outbox [--state STATE]                list items\n"
	"  retry ID... | retry --failed          failed -> pending\n"
	"  cancel ID...                          pending -> cancelled\n"
	"  status                                last walk, counts, outbox; exit 2 when unhealthy\n"
	"  report [NAME] [--format table|csv|json|html] [--since DATE] [--until DATE]\n"
	"         [--attribute KEY]              built-in reports; alone, lists them\n"
	"\n"
	"  -f, --config FILE     configuration: the database and the intervals status\n"
	"                        judges by (default " DEFAULT_CONF ")\n"
	"  -d, --database FILE   the database itself (then the defaults, unless -f)\n"
	"  -V, --version         print the version\n"
	"  -h, --help            print this help\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("dexsync: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs(" (see dexsync --help)\n", stderr);
	va_end(ap);
	return EXIT_USAGE;
}

/* Read all of standard input (at most MAX_TEXT bytes) into a malloc'd string. */
static char *read_stdin(void)
{
	size_t len = 0, size = 4096;
	char *buf = malloc(size);
	size_t n;

	while (buf && (n = fread(buf + len, 1, size - len - 1, stdin)) > 0) {
		len += n;
		if (len > MAX_TEXT) {
			log_err("the message text is larger than %u bytes", MAX_TEXT);
			free(buf);
			return NULL;
		}
		if (len + 1 == size) {
			char *p = realloc(buf, size * 2);

			if (!p) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = p;
			size *= 2;
		}
	}
	if (!buf)
		log_err("out of memory");
	else if (ferror(stdin)) {
		log_err("cannot read standard input");
		free(buf);
		return NULL;
	} else
		buf[len] = '\0';
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
	if (sqlite3_prepare_v2(db, "INSERT INTO outbox(kind, target, payload) VALUES (?1, ?2, ?3)",
			       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, target, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, body, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_DONE)
			id = sqlite3_last_insert_rowid(db);
	}
	if (id < 0)
		log_err("cannot queue: %s", sqlite3_errmsg(db));
	else
		printf("outbox:%lld\n", id);
	sqlite3_finalize(st);
	free(body);
	return id;
}

/* Is "outbox:N" a queued conversation item? */
static int queued_conversation(sqlite3 *db, const char *ref)
{
	sqlite3_stmt *st = NULL;
	int ok = 0;

	if (sqlite3_prepare_v2(db, "SELECT 1 FROM outbox WHERE id = ?1 AND kind = 'conversation'"
			       " AND state NOT IN ('failed', 'cancelled')", -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, ref + strlen("outbox:"), -1, SQLITE_STATIC);
		ok = sqlite3_step(st) == SQLITE_ROW;
	}
	sqlite3_finalize(st);
	return ok;
}

static int cmd_send(sqlite3 *db, const struct conf *c, int argc, char **argv)
{
	(void)c;
	static const struct option opts[] = { { "note", no_argument, NULL, 'n' }, { NULL, 0, NULL, 0 } };
	char err[256], *text;
	const char *conv;
	int note = 0, ch, rc = 1;
	json_t *payload;

	while ((ch = getopt_long(argc, argv, "n", opts, NULL)) != -1) {
		if (ch != 'n')
			return EXIT_USAGE;
		note = 1;
	}
	if (optind >= argc || argc - optind > 2)
		return usage_error("%s", "send takes CONVERSATION [TEXT|-]");
	conv = argv[optind];
	if (!queue_valid_id(conv)) {
		log_err("'%.80s' is not a conversation id", conv);
		return 1;
	}
	if (!strncmp(conv, "outbox:", 7) && !queued_conversation(db, conv)) {
		log_err("%s is not a queued new-conversation item", conv);
		return 1;
	}
	if (optind + 1 < argc && strcmp(argv[optind + 1], "-"))
		text = strdup(argv[optind + 1]);
	else
		text = read_stdin();
	if (!text)
		return 1;
	payload = queue_message(conv, text, note, err, sizeof(err));
	if (!payload)
		log_err("%s", err);
	else if (enqueue(db, "message", conv, payload) > 0)
		rc = 0;
	json_decref(payload);
	free(text);
	return rc;
}

static int cmd_update_user(sqlite3 *db, const struct conf *c, int argc, char **argv)
{
	(void)c;
	static const struct option opts[] = { { "email", required_argument, NULL, 'e' },
					      { NULL, 0, NULL, 0 } };
	json_t *payload = json_object(), *attrs = json_object(), *value;
	char err[256], *key;
	const char *user;
	int ch, rc = 1;

	if (!payload || !attrs)
		goto out;
	while ((ch = getopt_long(argc, argv, "e:", opts, NULL)) != -1) {
		if (ch != 'e') {
			rc = EXIT_USAGE;
			goto out;
		}
		if (!queue_valid_email(optarg)) {
			log_err("'%.80s' is not an email address", optarg);
			goto out;
		}
		json_object_set_new(payload, "email", json_string(optarg));
	}
	if (optind >= argc) {
		rc = usage_error("%s", "update-user takes USER [--email E] [KEY=VALUE ...]");
		goto out;
	}
	user = argv[optind++];
	if (!queue_valid_id(user)) {
		log_err("'%.80s' is not a user id", user);
		goto out;
	}
	for (; optind < argc; optind++) {
		if (queue_parse_attribute(argv[optind], &key, &value, err, sizeof(err)) < 0) {
			log_err("%s", err);
			goto out;
		}
		json_object_set_new(attrs, key, value);
		free(key);
	}
	if (json_object_size(attrs))
		json_object_set(payload, "custom_attributes", attrs);
	if (!json_object_size(payload)) {
		log_err("nothing to update: give --email or KEY=VALUE");
		goto out;
	}
	rc = enqueue(db, "user_update", user, payload) > 0 ? 0 : 1;
out:
	json_decref(attrs);
	json_decref(payload);
	return rc;
}

static int cmd_new_conversation(sqlite3 *db, const struct conf *c, int argc, char **argv)
{
	(void)c;
	static const struct option opts[] = { { "subject", required_argument, NULL, 's' },
					      { "tag", required_argument, NULL, 't' },
					      { NULL, 0, NULL, 0 } };
	json_t *payload = json_object(), *tags = json_array();
	int ch, rc = 1;

	if (!payload || !tags)
		goto out;
	while ((ch = getopt_long(argc, argv, "s:t:", opts, NULL)) != -1) {
		if (ch == 's')
			json_object_set_new(payload, "subject", json_string(optarg));
		else if (ch == 't' && *optarg)
			json_array_append_new(tags, json_string(optarg));
		else {
			rc = ch == 't' ? (log_err("a tag cannot be empty"), 1) : EXIT_USAGE;
			goto out;
		}
	}
	if (argc - optind != 1) {
		rc = usage_error("%s", "new-conversation takes USER [--subject S] [--tag T]...");
		goto out;
	}
	if (!queue_valid_id(argv[optind])) {
		log_err("'%.80s' is not a user id", argv[optind]);
		goto out;
	}
	json_object_set_new(payload, "user_id", json_string(argv[optind]));
	if (json_array_size(tags))
		json_object_set(payload, "tags", tags);
	rc = enqueue(db, "conversation", NULL, payload) > 0 ? 0 : 1;
out:
	json_decref(tags);
	json_decref(payload);
	return rc;
}

static int cmd_outbox(sqlite3 *db, const struct conf *c, int argc, char **argv)
{
	(void)c;
	static const struct option opts[] = { { "state", required_argument, NULL, 's' },
					      { NULL, 0, NULL, 0 } };
	const char *state = NULL;
	sqlite3_stmt *st = NULL;
	int ch, rc;

	while ((ch = getopt_long(argc, argv, "s:", opts, NULL)) != -1) {
		if (ch != 's')
			return EXIT_USAGE;
		state = optarg;
	}
	if (optind < argc)
		return usage_error("outbox takes no argument '%s'", argv[optind]);
	if (state && strcmp(state, "pending") && strcmp(state, "sending") && strcmp(state, "sent") &&
	    strcmp(state, "failed") && strcmp(state, "cancelled")) {
		log_err("unknown state '%.40s' (pending, sending, sent, failed, cancelled)", state);
		return 1;
	}
	if (sqlite3_prepare_v2(db,
			       "SELECT id, kind, target, state, attempts, coalesce(next_attempt_at, '-'),\n"
			       "	coalesce(remote_id, ''), coalesce(last_status, ''),\n"
			       "	replace(replace(coalesce(last_error, ''), char(10), ' '), char(9), ' ')\n"
			       "FROM outbox\n"
			       "WHERE ?1 IS NULL OR state = ?1\n"
			       "ORDER BY id", -1, &st, NULL) != SQLITE_OK) {
		log_err("database: %s", sqlite3_errmsg(db));
		return 1;
	}
	sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
	printf("%-7s %-12s %-24s %-9s %-3s %-20s %-16s %s\n", "ID", "KIND", "TARGET", "STATE", "TRY",
	       "NEXT ATTEMPT", "REMOTE ID", "LAST STATUS / ERROR");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		printf("%-7lld %-12s %-24s %-9s %-3d %-20s %-16s %s %.100s\n",
		       sqlite3_column_int64(st, 0), sqlite3_column_text(st, 1),
		       sqlite3_column_text(st, 2), sqlite3_column_text(st, 3),
		       sqlite3_column_int(st, 4), sqlite3_column_text(st, 5),
		       sqlite3_column_text(st, 6), sqlite3_column_text(st, 7),
		       sqlite3_column_text(st, 8));
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		log_err("database: %s", sqlite3_errmsg(db));
		return 1;
	}
	return 0;
}

/* Move the items named in argv from state `from` to `to`, all or none. */
static int change_state(sqlite3 *db, int argc, char **argv, const char *from, const char *to,
			const char *verb)
{
	sqlite3_stmt *get = NULL, *set = NULL;
	int rc = 1, n = 0;

	if (argc < 1)
		return usage_error("%s takes one or more outbox ids", verb);
	if (db_exec(db, "BEGIN IMMEDIATE") < 0)
		return 1;
	if (sqlite3_prepare_v2(db, "SELECT state FROM outbox WHERE id = ?1", -1, &get, NULL) ||
	    sqlite3_prepare_v2(db, "UPDATE outbox SET state = ?2, attempts = 0, next_attempt_at = NULL,\n"
				   "	retried_at = CASE WHEN ?2 = 'pending'\n"
				   "		THEN strftime('%Y-%m-%dT%H:%M:%SZ', 'now') END\n"
				   "WHERE id = ?1", -1, &set, NULL)) {
		log_err("database: %s", sqlite3_errmsg(db));
		goto out;
	}
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i] + (strncmp(argv[i], "outbox:", 7) ? 0 : 7);
		char *end;
		long long id = strtoll(arg, &end, 10);

		if (*end || end == arg || id <= 0) {
			log_err("'%.40s' is not an outbox id", argv[i]);
			goto out;
		}
		sqlite3_bind_int64(get, 1, id);
		if (sqlite3_step(get) != SQLITE_ROW) {
			log_err("no outbox item %lld", id);
			goto out;
		}
		if (strcmp((const char *)sqlite3_column_text(get, 0), from)) {
			log_err("item %lld is %s; only %s items can be %s", id,
				sqlite3_column_text(get, 0), from, !strcmp(to, "pending") ? "retried" : "cancelled");
			goto out;
		}
		sqlite3_reset(get);
		sqlite3_bind_int64(set, 1, id);
		sqlite3_bind_text(set, 2, to, -1, SQLITE_STATIC);
		if (sqlite3_step(set) != SQLITE_DONE) {
			log_err("database: %s", sqlite3_errmsg(db));
			goto out;
		}
		sqlite3_reset(set);
		n++;
	}
	if (db_exec(db, "COMMIT") == 0) {
		printf("%d item%s %s\n", n, n == 1 ? "" : "s", !strcmp(to, "pending") ? "back to pending" : "cancelled");
		rc = 0;
	}
out:
	sqlite3_finalize(get);
	sqlite3_finalize(set);
	if (rc)
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

static int cmd_retry(sqlite3 *db, const struct conf *c, int argc, char **argv)
{
	(void)c;
	if (argc == 2 && !strcmp(argv[1], "--failed")) {
		if (db_exec(db, "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = NULL,\n"
				"	retried_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')\n"
				"WHERE state = 'failed'") < 0)
			return 1;
		printf("%d item%s back to pending\n", sqlite3_changes(db), sqlite3_changes(db) == 1 ? "" : "s");
		return 0;
	}
	return change_state(db, argc - 1, argv + 1, "failed", "pending", "retry");
}

static int cmd_cancel(sqlite3 *db, const struct conf *c, int argc, char **argv)
{
	(void)c;
	return change_state(db, argc - 1, argv + 1, "pending", "cancelled", "cancel");
}

static int cmd_status(sqlite3 *db, const struct conf *c, int argc, char **argv)
{
	if (argc > 1)
		return usage_error("status takes no argument '%.40s'", argv[1]);
	return status_run(db, c, stdout);
}

static int cmd_report(sqlite3 *db, const struct conf *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "format", required_argument, NULL, 'F' },
		{ "since", required_argument, NULL, 's' },
		{ "until", required_argument, NULL, 'u' },
		{ "attribute", required_argument, NULL, 'a' },
		{ NULL, 0, NULL, 0 }
	};
	struct report_query q = { NULL, NULL, NULL };
	const struct report_def *r = NULL;
	int ch, fmt = REPORT_TABLE;

	(void)c;
	while ((ch = getopt_long(argc, argv, "F:s:u:a:", opts, NULL)) != -1) {
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
			return EXIT_USAGE;
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
	return report_run(db, r, (enum report_format)fmt, &q, stdout) < 0 ? 1 : 0;
}

static const struct command {
	const char *name;
	int (*run)(sqlite3 *db, const struct conf *c, int argc, char **argv);
} commands[] = {
	{ "send", cmd_send },
	{ "update-user", cmd_update_user },
	{ "new-conversation", cmd_new_conversation },
	{ "outbox", cmd_outbox },
	{ "retry", cmd_retry },
	{ "cancel", cmd_cancel },
	{ "status", cmd_status },
	{ "report", cmd_report },
};

/* The configuration: -f, else the default file unless -d names the
 * database, else the defaults. */
static int load_conf(const char *conf_path, const char *database, struct conf *c)
{
	if (conf_path)
		return conf_load(conf_path, c);
	if (!database)
		return conf_load(DEFAULT_CONF, c);
	return conf_defaults(c);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'f' },
		{ "database", required_argument, NULL, 'd' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	const char *conf_path = NULL, *database = NULL;
	const struct command *cmd = NULL;
	struct conf c;
	sqlite3 *db;
	int ch, rc;

	log_open("dexsync", LOG_USER, 1, 0);
	log_set_level(LOG_NOTICE);
	while ((ch = getopt_long(argc, argv, "+f:d:Vh", opts, NULL)) != -1) {
		switch (ch) {
		case 'f':
			conf_path = optarg;
			break;
		case 'd':
			database = optarg;
			break;
		case 'V':
			printf("dexsync %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		default:
			fputs(usage_text, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc)
		return usage_error("%s", "no command given");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[optind], commands[i].name))
			cmd = &commands[i];
	if (!cmd)
		return usage_error("unknown command '%.40s'", argv[optind]);

	if (load_conf(conf_path, database, &c) < 0)
		return 1;
	db = db_open(database ? database : c.database, DB_CLIENT);
	if (!db) {
		conf_free(&c);
		return 1;
	}
	argc -= optind;
	argv += optind;
	optind = 0;     /* glibc: 0 re-initialises getopt for the command's options */
	rc = cmd->run(db, &c, argc, argv);
	db_close(db);
	conf_free(&c);
	return rc;
}
