/* conf.c - dexsyncd.conf(5) through libconfuse
 *
 * The option tables below are the reference for the file: every key, its
 * default and its check.  Errors from libconfuse and from our validators go
 * through conf_errfunc(), so each one names the file and line. */
#include "config.h"

#include <confuse.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"

#define DEFAULT_DATABASE	LOCALSTATEDIR "/lib/dexsyncd/mirror.db"
#define DEFAULT_KEY_FILE	SYSCONFDIR "/dexsyncd/api-key"
#define MAX_KEY_LEN		4096

static int cb_duration(cfg_t *cfg, cfg_opt_t *opt, const char *value, void *result);

static cfg_opt_t api_opts[] = {
	CFG_STR("base-url", "https://api.dexra.net/v1", CFGF_NONE),
	CFG_STR("api-key-file", DEFAULT_KEY_FILE, CFGF_NONE),  /* see conf_api_key() */
	CFG_STR("api-key", NULL, CFGF_NODEFAULT),       /* last resort; warns if readable */
	CFG_INT_CB("connect-timeout", 10, CFGF_NONE, cb_duration),
	CFG_INT_CB("timeout", 60, CFGF_NONE, cb_duration),     /* whole request */
	CFG_INT("max-rate", 10, CFGF_NONE),                    /* requests/s, 0 = no cap */
	CFG_STR("ca-file", "", CFGF_NONE),                     /* extra CA bundle */
	CFG_STR("proxy", "", CFGF_NONE),
	CFG_END()
};

static cfg_opt_t sync_opts[] = {
	CFG_INT_CB("interval", 300, CFGF_NONE, cb_duration),   /* from end of one walk */
	CFG_INT("page-size", 100, CFGF_NONE),                  /* 1..100 */
	CFG_STR_LIST("status", "{}", CFGF_NONE),               /* {} = everything */
	CFG_BOOL("fetch-details", cfg_true, CFGF_NONE),
	CFG_INT("max-details", 1000, CFGF_NONE),               /* per cycle */
	CFG_END()
};

static cfg_opt_t outbox_opts[] = {
	CFG_INT_CB("poll-interval", 2, CFGF_NONE, cb_duration),
	CFG_INT("max-attempts", 12, CFGF_NONE),
	CFG_INT_CB("min-backoff", 10, CFGF_NONE, cb_duration),
	CFG_INT_CB("max-backoff", 3600, CFGF_NONE, cb_duration),
	CFG_INT_CB("max-age", 3 * 86400L, CFGF_NONE, cb_duration),  /* then failed */
	CFG_END()
};

static cfg_opt_t top_opts[] = {
	CFG_STR("database", DEFAULT_DATABASE, CFGF_NONE),
	CFG_STR("log-level", "info", CFGF_NONE),
	CFG_STR("syslog-facility", "daemon", CFGF_NONE),
	CFG_SEC("api", api_opts, CFGF_NONE),
	CFG_SEC("sync", sync_opts, CFGF_NONE),
	CFG_SEC("outbox", outbox_opts, CFGF_NONE),
	CFG_END()
};

int conf_parse_duration(const char *s, long *secs)
{
	static const struct {
		char suffix;
		long mult;
	} units[] = { { 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 } };
	char *end;
	long v, mult = 1;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno)
		return -1;
	if (*end) {
		size_t i;

		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (*end == units[i].suffix)
				break;
		if (i == sizeof(units) / sizeof(units[0]) || end[1])
			return -1;
		mult = units[i].mult;
	}
	if (v > LONG_MAX / mult)
		return -1;
	*secs = v * mult;
	return 0;
}

static int cb_duration(cfg_t *cfg, cfg_opt_t *opt, const char *value, void *result)
{
	if (conf_parse_duration(value, result) < 0) {
		cfg_error(cfg, "option '%s': invalid duration '%s' (seconds, or a number with s, m, h or d)",
			  opt->name, value);
		return -1;
	}
	return 0;
}

/* Range check for an integer option; the message names the key. */
static int check_range(cfg_t *cfg, cfg_opt_t *opt, long lo, long hi)
{
	long v = cfg_opt_getnint(opt, cfg_opt_size(opt) - 1);

	if (v < lo || v > hi) {
		if (hi == LONG_MAX)
			cfg_error(cfg, "option '%s': %ld is out of range (at least %ld)", opt->name, v, lo);
		else
			cfg_error(cfg, "option '%s': %ld is out of range (%ld to %ld)", opt->name, v, lo, hi);
		return -1;
	}
	return 0;
}

static int v_positive(cfg_t *cfg, cfg_opt_t *opt)
{
	return check_range(cfg, opt, 1, LONG_MAX);
}

static int v_not_negative(cfg_t *cfg, cfg_opt_t *opt)
{
	return check_range(cfg, opt, 0, LONG_MAX);
}

static int v_page_size(cfg_t *cfg, cfg_opt_t *opt)
{
	return check_range(cfg, opt, 1, 100);
}

static int v_log_level(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, 0);

	if (log_level_from_name(v) < 0) {
		cfg_error(cfg, "option '%s': unknown level '%s' (err, warning, notice, info, debug)",
			  opt->name, v);
		return -1;
	}
	return 0;
}

static int v_facility(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, 0);

	if (log_facility_from_name(v) < 0) {
		cfg_error(cfg, "option '%s': unknown facility '%s' (daemon, user, local0..local7)",
			  opt->name, v);
		return -1;
	}
	return 0;
}

static int v_base_url(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, 0);

	if (strncmp(v, "https://", 8) && strncmp(v, "http://", 7)) {
		cfg_error(cfg, "option '%s': '%s' is not an http:// or https:// URL", opt->name, v);
		return -1;
	}
	return 0;
}

static int v_status(cfg_t *cfg, cfg_opt_t *opt)
{
	for (unsigned i = 0; i < cfg_opt_size(opt); i++) {
		const char *v = cfg_opt_getnstr(opt, i);

		if (strcmp(v, "open") && strcmp(v, "closed") && strcmp(v, "snoozed")) {
			cfg_error(cfg, "option '%s': unknown status '%s' (open, closed, snoozed)",
				  opt->name, v);
			return -1;
		}
	}
	return 0;
}

static int v_outbox(cfg_t *cfg, cfg_opt_t *opt)
{
	cfg_t *sec = cfg_opt_getnsec(opt, 0);

	if (cfg_getint(sec, "min-backoff") > cfg_getint(sec, "max-backoff")) {
		cfg_error(cfg, "section 'outbox': min-backoff is greater than max-backoff");
		return -1;
	}
	return 0;
}

/* The file being parsed: libconfuse gives a section's errors the section's
 * cfg_t, which knows the line but not the file name. */
static const char *parsing_path;

static void conf_errfunc(cfg_t *cfg, const char *fmt, va_list ap)
{
	char msg[512];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	log_err("%s:%d: %s", parsing_path, cfg ? cfg->line : 0, msg);
}

static void set_validators(cfg_t *cfg)
{
	static const struct {
		const char *key;
		cfg_validate_callback_t fn;
	} v[] = {
		{ "log-level", v_log_level },
		{ "syslog-facility", v_facility },
		{ "api|base-url", v_base_url },
		{ "api|connect-timeout", v_positive },
		{ "api|timeout", v_positive },
		{ "api|max-rate", v_not_negative },
		{ "sync|interval", v_positive },
		{ "sync|page-size", v_page_size },
		{ "sync|status", v_status },
		{ "sync|max-details", v_not_negative },
		{ "outbox|poll-interval", v_positive },
		{ "outbox|max-attempts", v_positive },
		{ "outbox|min-backoff", v_positive },
		{ "outbox|max-backoff", v_positive },
		{ "outbox|max-age", v_positive },
		{ "outbox", v_outbox },
	};

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		cfg_set_validate_func(cfg, v[i].key, v[i].fn);
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* Copy the parsed tree into *c; returns -1 only when out of memory. */
static int conf_copy(cfg_t *cfg, const char *path, struct conf *c)
{
	cfg_t *api = cfg_getsec(cfg, "api");
	cfg_t *sync = cfg_getsec(cfg, "sync");
	cfg_t *ob = cfg_getsec(cfg, "outbox");
	char *url;
	size_t n;

	c->path = strdup(path);
	c->database = strdup(cfg_getstr(cfg, "database"));
	c->log_level = log_level_from_name(cfg_getstr(cfg, "log-level"));
	c->syslog_facility = log_facility_from_name(cfg_getstr(cfg, "syslog-facility"));

	url = strdup(cfg_getstr(api, "base-url"));
	if (url)
		for (n = strlen(url); n > 0 && url[n - 1] == '/'; n--)
			url[n - 1] = '\0';
	c->base_url = url;
	c->api_key_file = strdup(cfg_getstr(api, "api-key-file"));
	c->api_key_file_set = (cfg_getopt(api, "api-key-file")->flags & CFGF_MODIFIED) != 0;
	c->api_key = dup_or_null(cfg_getstr(api, "api-key"));
	c->connect_timeout = cfg_getint(api, "connect-timeout");
	c->timeout = cfg_getint(api, "timeout");
	c->max_rate = cfg_getint(api, "max-rate");
	c->ca_file = strdup(cfg_getstr(api, "ca-file"));
	c->proxy = strdup(cfg_getstr(api, "proxy"));

	c->sync_interval = cfg_getint(sync, "interval");
	c->page_size = cfg_getint(sync, "page-size");
	c->nstatus = cfg_size(sync, "status");
	c->status = calloc(c->nstatus + 1, sizeof(char *));
	for (unsigned i = 0; c->status && i < c->nstatus; i++)
		if (!(c->status[i] = strdup(cfg_getnstr(sync, "status", i))))
			return -1;
	c->fetch_details = cfg_getbool(sync, "fetch-details");
	c->max_details = cfg_getint(sync, "max-details");

	c->poll_interval = cfg_getint(ob, "poll-interval");
	c->max_attempts = cfg_getint(ob, "max-attempts");
	c->min_backoff = cfg_getint(ob, "min-backoff");
	c->max_backoff = cfg_getint(ob, "max-backoff");
	c->max_age = cfg_getint(ob, "max-age");

	if (!c->path || !c->database || !c->base_url || !c->api_key_file || !c->ca_file ||
	    !c->proxy || !c->status || (cfg_getstr(api, "api-key") && !c->api_key))
		return -1;
	return 0;
}

/* Parse path, or the empty text when path is NULL (the defaults). */
static int conf_read(const char *path, struct conf *c)
{
	cfg_t *cfg;
	struct stat st;
	int rc;

	memset(c, 0, sizeof(*c));
	cfg = cfg_init(top_opts, CFGF_NONE);
	if (!cfg) {
		log_err("%s: out of memory", path ? path : "defaults");
		return -1;
	}
	cfg_set_error_function(cfg, conf_errfunc);
	set_validators(cfg);

	parsing_path = path;
	rc = path ? cfg_parse(cfg, path) : cfg_parse_buf(cfg, "");
	parsing_path = NULL;
	if (!path)
		path = "(defaults)";
	if (rc == CFG_FILE_ERROR) {
		log_err("%s: cannot read: %s", path, strerror(errno));
	} else if (rc == CFG_SUCCESS) {
		if (conf_copy(cfg, path, c) < 0) {
			log_err("%s: out of memory", path);
			rc = CFG_PARSE_ERROR;
		} else if (c->api_key && stat(path, &st) == 0 && (st.st_mode & (S_IRGRP | S_IROTH))) {
			log_warning("%s: holds an api-key and is readable by group or others; "
				    "chmod 600 it or use api-key-file", path);
		}
	}
	cfg_free(cfg);
	if (rc != CFG_SUCCESS) {
		conf_free(c);
		return -1;
	}
	return 0;
}

int conf_load(const char *path, struct conf *c)
{
	return conf_read(path, c);
}

int conf_defaults(struct conf *c)
{
	return conf_read(NULL, c);
}

void conf_free(struct conf *c)
{
	free(c->path);
	free(c->database);
	free(c->base_url);
	free(c->api_key_file);
	conf_key_free(c->api_key);
	free(c->ca_file);
	free(c->proxy);
	for (unsigned i = 0; c->status && i < c->nstatus; i++)
		free(c->status[i]);
	free(c->status);
	memset(c, 0, sizeof(*c));
}

void conf_key_free(char *key)
{
	if (key) {
		explicit_bzero(key, strlen(key));
		free(key);
	}
}

/* Read a key file: the first line, trailing white space removed.
 * Returns the key, or NULL with errno set (ENOENT kept for the caller). */
static char *read_key_file(const char *path, int *insecure)
{
	char buf[MAX_KEY_LEN + 2];
	struct stat st;
	ssize_t n;
	char *key;
	int fd, e;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		errno = EINVAL;
		return NULL;
	}
	*insecure = (st.st_mode & (S_IRGRP | S_IROTH)) != 0;
	n = read(fd, buf, sizeof(buf) - 1);
	e = errno;
	close(fd);
	if (n < 0) {
		errno = e;
		return NULL;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	for (n = (ssize_t)strlen(buf); n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t'); n--)
		buf[n - 1] = '\0';
	key = NULL;
	if (!*buf || strlen(buf) > MAX_KEY_LEN)
		errno = EINVAL;
	else if (!(key = strdup(buf)))
		errno = ENOMEM;
	explicit_bzero(buf, sizeof(buf));
	return key;
}

/* One key file source.  Returns 1 with *key set, 0 when the file does not
 * exist and may be skipped, -1 after logging an error. */
static int key_from_file(const char *path, int must_exist, char **key)
{
	int insecure = 0;

	*key = read_key_file(path, &insecure);
	if (*key) {
		if (insecure)
			log_warning("API key file %s is readable by group or others; chmod 600 it", path);
		return 1;
	}
	if (errno == ENOENT && !must_exist)
		return 0;
	if (errno == EINVAL)
		log_err("API key file %s: empty, too long or not a regular file", path);
	else
		log_err("API key file %s: %s", path, strerror(errno));
	return -1;
}

char *conf_api_key(const struct conf *c)
{
	const char *credentials = getenv("CREDENTIALS_DIRECTORY");
	const char *env;
	char *key = NULL;
	int rc;

	if (credentials && *credentials) {
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/api-key", credentials);
		rc = key_from_file(path, 0, &key);
		if (rc)
			return rc > 0 ? key : NULL;
	}
	if (c->api_key_file && *c->api_key_file) {
		rc = key_from_file(c->api_key_file, c->api_key_file_set, &key);
		if (rc)
			return rc > 0 ? key : NULL;
	}
	env = getenv("DEXRA_API_KEY");
	if (env && *env)
		return strdup(env);
	if (c->api_key && *c->api_key)
		return strdup(c->api_key);
	log_err("no API key: none in $CREDENTIALS_DIRECTORY/api-key, api-key-file (%s), "
		"$DEXRA_API_KEY or api-key in %s", c->api_key_file, c->path);
	return NULL;
}
