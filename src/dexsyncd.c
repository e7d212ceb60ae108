/* dexsyncd.c - the daemon: options, configuration, one cycle or the service loop */
#include "config.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "conf.h"
#include "db.h"
#include "log.h"
#include "outbox.h"
#include "walk.h"

#define DEFAULT_CONF SYSCONFDIR "/dexsyncd.conf"

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: dexsyncd [-f FILE] [-n] [-1] [-t] [-l LEVEL] [-V] [-h]\n"
		"Keep a local SQLite mirror of a Dexra workspace and deliver its outbox.\n"
		"\n"
		"  -f, --config FILE     configuration file (default %s)\n"
		"  -n, --foreground      do not detach; log to stderr as well as syslog\n"
		"  -1, --once            one walk and one outbox drain, then exit (0 ok, 1 failed)\n"
		"  -t, --check-config    validate the configuration and the API key, then exit\n"
		"  -l, --log-level LEVEL err, warning, notice, info or debug\n"
		"  -V, --version         print the version and exit\n"
		"  -h, --help            print this help and exit\n",
		DEFAULT_CONF);
}

struct options {
	const char *conf_path;
	int foreground, once, check, level;
};

/* Returns -1 to continue, or the exit status. */
static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'f' },
		{ "foreground", no_argument, NULL, 'n' },
		{ "once", no_argument, NULL, '1' },
		{ "check-config", no_argument, NULL, 't' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;

	o->conf_path = DEFAULT_CONF;
	o->level = -1;
	while ((ch = getopt_long(argc, argv, "f:n1tl:Vh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'f':
			o->conf_path = optarg;
			break;
		case 'n':
			o->foreground = 1;
			break;
		case '1':
			o->once = 1;
			break;
		case 't':
			o->check = 1;
			break;
		case 'l':
			if ((o->level = log_level_from_name(optarg)) < 0) {
				fprintf(stderr, "dexsyncd: unknown log level '%s' "
					"(err, warning, notice, info, debug)\n", optarg);
				return 1;
			}
			break;
		case 'V':
			printf("dexsyncd %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "dexsyncd: unexpected argument '%s'\n", argv[optind]);
		return 1;
	}
	return -1;
}

static void install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;    /* no SA_RESTART: a sleep wakes up at once */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* One walk and one outbox drain: the whole of --once.  0 when both went
 * well. */
static int run_once(const struct conf *c, char *key)
{
	struct drain_counts n;
	struct outbox *ob = NULL;
	struct api *api;
	sqlite3 *db;
	int rc = 1;

	db = db_open(c->database, DB_DAEMON);
	if (!db)
		return 1;
	api = api_new(c, key);
	if (!api)
		log_err("cannot set up the HTTP client: out of memory");
	else if ((ob = outbox_open(db, api, c)) && outbox_recover(ob) >= 0) {
		rc = walk_run(db, api, c, &stop_requested) < 0;
		if (!stop_requested && outbox_drain(ob, &stop_requested, &n) < 0)
			rc = 1;
	}
	outbox_close(ob);
	api_free(api);
	db_close(db);
	return rc;
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	struct conf c;
	char *key;
	int rc;

	rc = parse_options(argc, argv, &o);
	if (rc >= 0)
		return rc;
	/* Until the config names a facility, errors go to stderr and daemon. */
	log_open("dexsyncd", LOG_DAEMON, o.foreground || o.check || o.once, !o.check);
	if (conf_load(o.conf_path, &c) < 0)
		return 1;
	log_close();
	log_open("dexsyncd", c.syslog_facility, o.foreground || o.check || o.once, !o.check);
	log_set_level(o.level >= 0 ? o.level : c.log_level);

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_err("cannot initialise libcurl");
		conf_free(&c);
		return 1;
	}
	key = conf_api_key(&c);
	if (!key) {
		rc = 1;
	} else if (o.check) {
		printf("%s: configuration ok\n", c.path);
		rc = 0;
	} else if (o.once) {
		install_signals();
		rc = run_once(&c, key);
	} else {
		log_err("the service loop is not built yet: run with -1 (see issue 4)");
		rc = 1;
	}
	conf_key_free(key);
	conf_free(&c);
	curl_global_cleanup();
	log_close();
	return rc;
}
