/* conf.h - dexsyncd.conf(5): parsing, validation, the API key */
#ifndef DEXSYNC_CONF_H
#define DEXSYNC_CONF_H

#include <stddef.h>

struct conf {
	char *path; /* file it was read from */
	char *database;
	int log_level;	     /* LOG_ERR..LOG_DEBUG */
	int syslog_facility; /* LOG_DAEMON, ... */
	char *metrics_file;  /* Prometheus text file, absolute; "" = none */

	char *base_url; /* without a trailing slash */
	char *api_key_file;
	int api_key_file_set; /* given in the file, not the default */
	char *api_key;	      /* api-key in the file itself, or NULL */
	long connect_timeout; /* seconds */
	long timeout;
	long max_rate; /* requests per second, 0 = no cap */
	char *ca_file; /* "" = system bundle only */
	char *proxy;

	long sync_interval;
	long page_size;
	char **status; /* statuses to list; nstatus 0 = everything */
	unsigned nstatus;
	int fetch_details;
	long max_details;
	long history_days; /* conversation_events kept; 0 = forever */

	long poll_interval;
	long max_attempts;
	long min_backoff;
	long max_backoff;
	long max_age;
};

struct cfg_t;
struct cfg_opt_t;

/* A check of one key ("section|key"), a libconfuse validator, that
 * conf_load() runs besides its own. */
struct conf_check {
	const char *key;
	int (*fn)(struct cfg_t *cfg, struct cfg_opt_t *opt);
};

/* Read and validate path into *c.  Every problem is logged on one line,
 * "file:line: message" when it has a place in the file, and makes it
 * return -1, leaving *c empty; it never exits.  path must be a regular
 * file without NUL bytes.  The paths in *c (path, database, api_key_file,
 * ca_file) are absolute: see conf_abspath().  more: further checks, ended
 * by a NULL key, or NULL: conf_url_checks (confurl.h) for the programs
 * that connect; dexsync, which reads only the database's name, leaves the
 * URLs unchecked. */
int conf_load(const char *path, const struct conf_check *more, struct conf *c);
void conf_free(struct conf *c);

/* path made absolute against the working directory the program started
 * in (remembered at the first call, or the first conf_load()), so that it
 * still means the same file after daemon() changed to /.  Returns a malloc'd
 * string, or NULL with errno set. */
char *conf_abspath(const char *path);

/* A key's value as its error may show it: v, or words saying it is not
 * shown when it may have run into an api-key or a proxy's URL. */
const char *conf_shown_value(const char *v);

/* Every key at its default, as if read from an empty file. */
int conf_defaults(struct conf *c);

/* The longest duration any key accepts: ten years. */
#define CONF_DURATION_MAX (3650L * 86400)

/* Parse a duration: whole seconds, or a number with a suffix s, m, h or d.
 * Returns 0 and the seconds in *secs, or -1 for anything else (negative,
 * empty, trailing garbage, more than CONF_DURATION_MAX). */
int conf_parse_duration(const char *s, long *secs);

/* Find the API key, first found wins: $CREDENTIALS_DIRECTORY/api-key,
 * api-key-file, $DEXRA_API_KEY, api-key in the config.  Returns a malloc'd
 * key for conf_key_free(), or NULL after logging why (never the key). */
char *conf_api_key(const struct conf *c);

/* Wipe and free a key from conf_api_key(). */
void conf_key_free(char *key);

#endif
