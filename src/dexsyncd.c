/* dexsyncd.c - the daemon: options, configuration, one cycle or the service loop */
#include "config.h"

#include <curl/curl.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#ifdef HAVE_MALLOPT
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "conf.h"
#include "confurl.h"
#include "db.h"
#include "lock.h"
#include "log.h"
#include "service.h"

#define DEFAULT_CONF SYSCONFDIR "/dexsyncd.conf"

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
	const char *conf_path; /* absolute: it points into conf_abs */
	char conf_abs[PATH_MAX];
	int foreground, once, check, level;
};

/* Returns -1 to continue, or the exit status.  o->conf_path comes back
 * absolute: daemon() changes to /, and SIGHUP reads the same file again. */
static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = { { "config", required_argument, NULL, 'f' },
						  { "foreground", no_argument, NULL, 'n' },
						  { "once", no_argument, NULL, '1' },
						  { "check-config", no_argument, NULL, 't' },
						  { "log-level", required_argument, NULL, 'l' },
						  { "version", no_argument, NULL, 'V' },
						  { "help", no_argument, NULL, 'h' },
						  { NULL, 0, NULL, 0 } };
	char *abs;
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
				fprintf(stderr,
					"dexsyncd: unknown log level '%s' "
					"(err, warning, notice, info, debug)\n",
					optarg);
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
	if (!(abs = conf_abspath(o->conf_path)) ||
	    (size_t)snprintf(o->conf_abs, sizeof(o->conf_abs), "%s", abs) >= sizeof(o->conf_abs)) {
		fprintf(stderr, "dexsyncd: %s: cannot make the path absolute: %s\n", o->conf_path,
			abs ? strerror(ENAMETOOLONG) : strerror(errno));
		free(abs);
		return 1;
	}
	free(abs);
	o->conf_path = o->conf_abs;
	return -1;
}

/* glibc hands freed memory at the top of the heap back to the kernel past
 * 128 KiB; a walk frees and allocates a page's JSON and SQLite's buffers
 * again for every page, and each round trip costs page faults: a 10 %-
 * changed walk of 1,000,000 conversations spent half its time in the
 * kernel, and took 37.8 s against 29.8 s with the heap kept (peak RSS 17.4
 * against 17.2 MiB; an initial mirror's 17.0 against 17.5).  What a walk
 * leaves is given back after it (service.c, give_back_heap). */
static void keep_heap(void)
{
#ifdef HAVE_MALLOPT
	mallopt(M_TRIM_THRESHOLD, 32 << 20);
#endif
}

/* glibc gives each thread that allocates while another holds the heap an
 * arena of its own, and a walk's lister thread (lister.c) has one: about
 * 1 MiB of its pages' memory there, beside the free memory the main heap
 * keeps (keep_heap) and could have served them from.  One arena for the
 * process: the lister's pages come from the main heap, and an initial
 * mirror of 100,000 conversations peaked 0.6 MiB lower (issue 17: peak
 * RSS, 16 MiB at most), in as much CPU time as the noise of the runs. */
static void one_arena(void)
{
#if defined(HAVE_MALLOPT) && defined(M_ARENA_MAX)
	mallopt(M_ARENA_MAX, 1);
#endif
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	struct conf c;
	char *key;
	int rc, lock_fd;

	rc = parse_options(argc, argv, &o);
	if (rc >= 0)
		return rc;
	keep_heap();
	one_arena();
	/* Until the config names a facility, errors go to daemon. */
	log_open("dexsyncd", LOG_DAEMON, 1, !o.check);
	db_no_memory_stats();
	if (db_sort_small() != DX_OK)
		log_warning("cannot lower SQLite's sort memory; an initial mirror's end takes more");
	if (conf_load(o.conf_path, conf_url_checks, &c) < 0)
		return 1;
	log_close();
	log_open("dexsyncd", c.syslog_facility, o.foreground || o.check || o.once, !o.check);
	log_set_level(o.level >= 0 ? o.level : c.log_level);

	if (o.check) {
		key = conf_api_key(&c);
		if (key)
			printf("%s: configuration ok\n", c.path);
		rc = key ? 0 : 1;
		conf_key_free(key);
		conf_free(&c);
		return rc;
	}
	if (api_global_init() != DX_OK) {
		log_err("cannot initialise libcurl");
		conf_free(&c);
		return 1;
	}
	/* One daemon per database: a second one fails here, on the terminal,
	 * before detaching.  The lock is the open file's, so the detached
	 * child keeps it. */
	if ((lock_fd = lock_daemon(c.database)) < 0) {
		rc = 1;
		conf_free(&c);
	} else if (o.once) {
		rc = service_once(&c, lock_fd);
	} else if (!o.foreground && daemon(0, 0) < 0) {
		log_err("cannot detach: %m");
		lock_release(lock_fd);
		conf_free(&c);
		rc = 1;
	} else {
		rc = service_loop(&c, o.conf_path, o.level, lock_fd);
	}
	curl_global_cleanup();
	log_close();
	return rc;
}
