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

#define DEFAULT_DATABASE LOCALSTATEDIR "/lib/dexsyncd/mirror.db"
#define DEFAULT_KEY_FILE SYSCONFDIR "/dexsyncd/api-key"
#define MAX_KEY_LEN	 4096
#define MAX_CONF_SIZE	 1048576 /* 1 MiB; a config is a few hundred bytes */
#define MAX_TIMEOUT	 86400	 /* connect-timeout and timeout */
#define MAX_DETAILS	 1000000 /* the walk allocates a slot for each */
#define MAX_HISTORY_DAYS 36500	 /* history-days */

static int cb_duration(cfg_t *cfg, cfg_opt_t *opt, const char *value, void *result);

static cfg_opt_t api_opts[] = { CFG_STR("base-url", "https://api.dexra.net/v1", CFGF_NONE),
				CFG_STR("api-key-file", DEFAULT_KEY_FILE, CFGF_NONE), /* see conf_api_key() */
				CFG_STR("api-key", NULL, CFGF_NODEFAULT), /* last resort; warns if readable */
				CFG_INT_CB("connect-timeout", 10, CFGF_NONE, cb_duration),
				CFG_INT_CB("timeout", 60, CFGF_NONE, cb_duration), /* whole request */
				CFG_INT("max-rate", 10, CFGF_NONE), /* requests/s, 0 = no cap */
				CFG_STR("ca-file", "", CFGF_NONE),  /* extra CA bundle */
				CFG_STR("proxy", "", CFGF_NONE),
				CFG_END() };

static cfg_opt_t sync_opts[] = { CFG_INT_CB("interval", 300, CFGF_NONE,
					    cb_duration),		  /* from end of one walk */
				 CFG_INT("page-size", 100, CFGF_NONE),	  /* 1..100 */
				 CFG_STR_LIST("status", "{}", CFGF_NONE), /* {} = everything */
				 CFG_BOOL("fetch-details", cfg_true, CFGF_NONE),
				 CFG_INT("max-details", 1000, CFGF_NONE), /* per cycle */
				 CFG_INT("history-days", 0, CFGF_NONE),	  /* events kept, 0 = forever */
				 CFG_END() };

static cfg_opt_t outbox_opts[] = { CFG_INT_CB("poll-interval", 2, CFGF_NONE, cb_duration),
				   CFG_INT("max-attempts", 12, CFGF_NONE),
				   CFG_INT_CB("min-backoff", 10, CFGF_NONE, cb_duration),
				   CFG_INT_CB("max-backoff", 3600, CFGF_NONE, cb_duration),
				   CFG_INT_CB("max-age", 3 * 86400L, CFGF_NONE,
					      cb_duration), /* then failed */
				   CFG_END() };

static cfg_opt_t top_opts[] = { CFG_STR("database", DEFAULT_DATABASE, CFGF_NONE),
				CFG_STR("log-level", "info", CFGF_NONE),
				CFG_STR("syslog-facility", "daemon", CFGF_NONE),
				CFG_STR("metrics-file", "", CFGF_NONE), /* "" = none (metrics.h) */
				CFG_SEC("api", api_opts, CFGF_NONE),
				CFG_SEC("sync", sync_opts, CFGF_NONE),
				CFG_SEC("outbox", outbox_opts, CFGF_NONE),
				CFG_END() };

/* The working directory at start: relative paths in the config, and the
 * config's own path, mean the same after daemon() moved to / and on every
 * reload.  Taken by the first conf_abspath() or conf_load(), which the
 * programs call before they detach. */
static char *start_dir;

/* Take the start directory if not yet taken; -1 when getcwd() fails (the
 * directory was removed), which only relative names then trip over. */
static int remember_start_dir(void)
{
	if (!start_dir)
		start_dir = getcwd(NULL, 0);
	return start_dir ? 0 : -1;
}

/* See conf.h.  A leading "./" is dropped; nothing else is normalised. */
char *conf_abspath(const char *path)
{
	size_t n;
	char *abs;

	if (*path == '/' || !*path)
		return strdup(path);
	if (remember_start_dir() < 0)
		return NULL;
	while (path[0] == '.' && path[1] == '/')
		for (path += 2; *path == '/'; path++)
			;
	n = strlen(start_dir) + 1 + strlen(path) + 1;
	if (!(abs = malloc(n)))
		return NULL;
	snprintf(abs, n, "%s%s%s", start_dir, strcmp(start_dir, "/") ? "/" : "", path);
	return abs;
}

/* What is wrong with key, or NULL when it can go into an HTTP header as
 * "Authorization: Bearer KEY": 1 to MAX_KEY_LEN visible ASCII characters.
 * The answer never quotes the key. */
static const char *key_problem(const char *key)
{
	size_t n = strlen(key);

	if (n == 0)
		return "the key is empty";
	if (n > MAX_KEY_LEN)
		return "the key is longer than 4096 characters";
	for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
		if (*p == '\r' || *p == '\n')
			return "the key holds a line break";
		if (*p < 0x20 || *p == 0x7f)
			return "the key holds a control character";
		if (*p == ' ')
			return "the key holds a space";
		if (*p > 0x7f)
			return "the key holds a non-ASCII character";
	}
	return NULL;
}

/* See conf.h.  The ceiling keeps sums of durations (an item's age plus its
 * next delay, three intervals) far from overflowing a long, even a 32-bit one. */
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
	if (v > CONF_DURATION_MAX / mult)
		return -1;
	*secs = v * mult;
	return 0;
}

const char *conf_shown_value(const char *v)
{
	/* A closing quote forgotten runs a value into the lines after it,
	 * where an api-key or a proxy's password may be; on one line, the key
	 * is written after its name. */
	if (strchr(v, '\n') || strstr(v, "api-key") || strstr(v, "proxy"))
		return "(not shown: it runs into an api-key or a proxy; a closing quote missing?)";
	return v;
}

/* libconfuse's parser for a duration option: the value into *result. */
static int cb_duration(cfg_t *cfg, cfg_opt_t *opt, const char *value, void *result)
{
	if (conf_parse_duration(value, result) < 0) {
		cfg_error(cfg,
			  "option '%s': invalid duration '%s' "
			  "(seconds, or a number with s, m, h or d; at most %ldd)",
			  opt->name, conf_shown_value(value), CONF_DURATION_MAX / 86400);
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

/* Validators: each is attached to its key by set_validators(), called by
 * libconfuse once the key's value is read, and reports with cfg_error(). */
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
			  opt->name, conf_shown_value(v));
		return -1;
	}
	return 0;
}

static int v_facility(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, 0);

	if (log_facility_from_name(v) < 0) {
		cfg_error(cfg, "option '%s': unknown facility '%s' (daemon, user, local0..local7)", opt->name,
			  conf_shown_value(v));
		return -1;
	}
	return 0;
}

/* connect-timeout and timeout: libcurl counts them in milliseconds in a long. */
static int v_timeout(cfg_t *cfg, cfg_opt_t *opt)
{
	return check_range(cfg, opt, 1, MAX_TIMEOUT);
}

/* max-details: a walk allocates a slot for each detail it may fetch. */
static int v_max_details(cfg_t *cfg, cfg_opt_t *opt)
{
	return check_range(cfg, opt, 0, MAX_DETAILS);
}

/* history-days: a hundred years is forever enough. */
static int v_history_days(cfg_t *cfg, cfg_opt_t *opt)
{
	return check_range(cfg, opt, 0, MAX_HISTORY_DAYS);
}

/* A file name, made absolute against the start directory; "" is allowed
 * where it means "none". */
static int v_path(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, 0);
	char *path;

	if (!*v) {
		if (strcmp(opt->name, "database"))
			return 0;
		cfg_error(cfg, "option '%s': empty; a file name is needed", opt->name);
		return -1;
	}
	if (!(path = conf_abspath(v))) {
		cfg_error(cfg, "option '%s': cannot make '%s' absolute: %s", opt->name, conf_shown_value(v),
			  strerror(errno));
		return -1;
	}
	free(path);
	return 0;
}

/* ca-file: a readable regular file (O_NONBLOCK: a FIFO does not hang us). */
static int v_ca_file(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, 0);
	struct stat st;
	char *path;
	int fd, rc = -1;

	if (!*v)
		return 0;
	if (!(path = conf_abspath(v))) {
		cfg_error(cfg, "option '%s': cannot make '%s' absolute: %s", opt->name, conf_shown_value(v),
			  strerror(errno));
		return -1;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) < 0)
		cfg_error(cfg, "option '%s': cannot read %s: %s", opt->name, conf_shown_value(path),
			  strerror(errno));
	else if (!S_ISREG(st.st_mode))
		cfg_error(cfg, "option '%s': %s is not a regular file", opt->name, conf_shown_value(path));
	else
		rc = 0;
	if (fd >= 0)
		close(fd);
	free(path);
	return rc;
}

/* api-key: checked like every key, and never printed. */
static int v_api_key(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, 0);
	const char *why = *v ? key_problem(v) : NULL;

	if (why) {
		cfg_error(cfg, "option '%s': %s (its value is not shown)", opt->name, why);
		return -1;
	}
	return 0;
}

/* status: each one of the API's three. */
static int v_status(cfg_t *cfg, cfg_opt_t *opt)
{
	for (unsigned i = 0; i < cfg_opt_size(opt); i++) {
		const char *v = cfg_opt_getnstr(opt, i);

		if (strcmp(v, "open") && strcmp(v, "closed") && strcmp(v, "snoozed")) {
			cfg_error(cfg, "option '%s': unknown status '%s' (open, closed, snoozed)", opt->name,
				  conf_shown_value(v));
			return -1;
		}
	}
	return 0;
}

/* The outbox section as a whole, once it is read. */
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
static const char *parsing_path, *parsing_text;
static int parsing_errors; /* lines conf_errfunc logged */

/* libconfuse's own message msg with the tokens it quotes ('...') not
 * shown when the file sets an api-key or a proxy (whose URL may hold a
 * password) anywhere: such a token may be a piece of one (a key with a
 * space or a +, not quoted; two strings; a key name on one line and its
 * value on the next), and telling the pieces apart is a parser's work.
 * Our validators' messages ("option '...", "section '...") name keys and
 * never a secret's value: they are shown whole.  Malloc'd, or NULL out of
 * memory. */
static char *hide_secrets(const char *msg)
{
	static const char hidden[] = "(not shown: the file sets an api-key or a proxy)";
	int secrets = parsing_text && (strstr(parsing_text, "api-key") || strstr(parsing_text, "proxy"));
	char *out, *o;
	const char *q, *end;

	if (!secrets || !strncmp(msg, "option '", 8) || !strncmp(msg, "section '", 9))
		return strdup(msg);
	if (!(out = o = malloc(strlen(msg) * sizeof(hidden) + 1)))
		return NULL;
	for (q = msg; (q = strchr(q, '\'')) && (end = strchr(q + 1, '\'')); q = end + 1) {
		memcpy(o, msg, (size_t)(q + 1 - msg));
		o += q + 1 - msg;
		memcpy(o, hidden, sizeof(hidden) - 1);
		o += sizeof(hidden) - 1;
		*o++ = '\'';
		msg = end + 1;
	}
	memcpy(o, msg, strlen(msg) + 1);
	return out;
}

/* libconfuse's error function, and our validators' through cfg_error():
 * one line, "file:line: message".  The config's text in it (quoted strings
 * may hold "\n") is escaped by the logger, and secrets hidden
 * (hide_secrets). */
static void conf_errfunc(cfg_t *cfg, const char *fmt, va_list ap)
{
	char *msg = NULL, *shown = NULL;

	if (vasprintf(&msg, fmt, ap) >= 0)
		shown = hide_secrets(msg);
	log_err("%s:%d: %s", parsing_path ? parsing_path : "(defaults)", cfg ? cfg->line : 0,
		shown ? shown : "(out of memory)");
	parsing_errors++;
	free(shown);
	free(msg);
}

/* Attach every validator to its key ("section|key"), then those in more
 * (see conf.h). */
static void set_validators(cfg_t *cfg, const struct conf_check *more)
{
	static const struct {
		const char *key;
		cfg_validate_callback_t fn;
	} v[] = {
		{ "log-level", v_log_level },
		{ "syslog-facility", v_facility },
		{ "database", v_path },
		{ "metrics-file", v_path },
		{ "api|api-key-file", v_path },
		{ "api|api-key", v_api_key },
		{ "api|connect-timeout", v_timeout },
		{ "api|timeout", v_timeout },
		{ "api|max-rate", v_not_negative },
		{ "api|ca-file", v_ca_file },
		{ "sync|interval", v_positive },
		{ "sync|page-size", v_page_size },
		{ "sync|status", v_status },
		{ "sync|max-details", v_max_details },
		{ "sync|history-days", v_history_days },
		{ "outbox|poll-interval", v_positive },
		{ "outbox|max-attempts", v_positive },
		{ "outbox|min-backoff", v_positive },
		{ "outbox|max-backoff", v_positive },
		{ "outbox|max-age", v_positive },
		{ "outbox", v_outbox },
	};

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		cfg_set_validate_func(cfg, v[i].key, v[i].fn);
	for (; more && more->key; more++)
		cfg_set_validate_func(cfg, more->key, more->fn);
}

/* strdup() that passes NULL through. */
static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* Copy the parsed tree of path (NULL: the defaults) into *c, file names
 * made absolute; returns -1 only when out of memory (the validators made
 * sure the names can be made absolute). */
static int conf_copy(cfg_t *cfg, const char *path, struct conf *c)
{
	cfg_t *api = cfg_getsec(cfg, "api");
	cfg_t *sync = cfg_getsec(cfg, "sync");
	cfg_t *ob = cfg_getsec(cfg, "outbox");
	char *url;
	size_t n;

	c->path = path ? conf_abspath(path) : strdup("(defaults)");
	c->database = conf_abspath(cfg_getstr(cfg, "database"));
	c->log_level = log_level_from_name(cfg_getstr(cfg, "log-level"));
	c->syslog_facility = log_facility_from_name(cfg_getstr(cfg, "syslog-facility"));
	c->metrics_file = conf_abspath(cfg_getstr(cfg, "metrics-file"));

	url = strdup(cfg_getstr(api, "base-url"));
	if (url)
		for (n = strlen(url); n > 0 && url[n - 1] == '/'; n--)
			url[n - 1] = '\0';
	c->base_url = url;
	c->api_key_file = conf_abspath(cfg_getstr(api, "api-key-file"));
	c->api_key_file_set = (cfg_getopt(api, "api-key-file")->flags & CFGF_MODIFIED) != 0;
	c->api_key = dup_or_null(cfg_getstr(api, "api-key"));
	c->connect_timeout = cfg_getint(api, "connect-timeout");
	c->timeout = cfg_getint(api, "timeout");
	c->max_rate = cfg_getint(api, "max-rate");
	c->ca_file = conf_abspath(cfg_getstr(api, "ca-file"));
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
	c->history_days = cfg_getint(sync, "history-days");

	c->poll_interval = cfg_getint(ob, "poll-interval");
	c->max_attempts = cfg_getint(ob, "max-attempts");
	c->min_backoff = cfg_getint(ob, "min-backoff");
	c->max_backoff = cfg_getint(ob, "max-backoff");
	c->max_age = cfg_getint(ob, "max-age");

	if (!c->path || !c->database || !c->metrics_file || !c->base_url || !c->api_key_file || !c->ca_file ||
	    !c->proxy || !c->status || (cfg_getstr(api, "api-key") && !c->api_key))
		return -1;
	return 0;
}

/* Line number of the byte at offset in text. */
static int line_of(const char *text, size_t offset)
{
	int line = 1;

	for (size_t i = 0; i < offset; i++)
		line += text[i] == '\n';
	return line;
}

/* Read the config at path into a string for cfg_parse_buf(), *mode its
 * permissions.  libconfuse's own reader would exit the process on a read
 * error (a directory: "input in flex scanner failed") and stop quietly at
 * a NUL byte, so only a regular file of at most MAX_CONF_SIZE bytes without
 * one gets past here.  Returns the text (wipe it before free(): it may hold
 * an api-key), or NULL after logging one line that names the file. */
static char *conf_slurp(const char *path, mode_t *mode)
{
	struct stat st;
	size_t len = 0, size;
	char *buf = NULL, *more, *nul;
	ssize_t n;
	int fd;

	/* O_NONBLOCK: opening a FIFO must not wait for a writer */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) < 0) {
		log_err("%s: cannot read: %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		log_err("%s: cannot read: %s, not a config file", path,
			S_ISDIR(st.st_mode) ? "a directory" : "not a regular file");
		goto fail;
	}
	*mode = st.st_mode;
	if (st.st_size > MAX_CONF_SIZE) {
		log_err("%s: larger than %d bytes, not a config file", path, MAX_CONF_SIZE);
		goto fail;
	}
	/* room for the file, a byte more to see its end (or that it grew), the NUL */
	size = (size_t)st.st_size + 2;
	if (!(buf = malloc(size))) {
		log_err("%s: out of memory", path);
		goto fail;
	}
	for (;;) {
		n = read(fd, buf + len, size - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			log_err("%s: cannot read: %s", path, strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len + 1 < size)
			continue;
		if (len > MAX_CONF_SIZE) {
			log_err("%s: larger than %d bytes, not a config file", path, MAX_CONF_SIZE);
			goto fail;
		}
		size = size * 2 > MAX_CONF_SIZE + 2 ? MAX_CONF_SIZE + 2 : size * 2;
		if (!(more = realloc(buf, size))) {
			log_err("%s: out of memory", path);
			goto fail;
		}
		buf = more;
	}
	close(fd);
	buf[len] = '\0';
	if ((nul = memchr(buf, '\0', len))) {
		log_err("%s:%d: holds a NUL byte, not a config file", path,
			line_of(buf, (size_t)(nul - buf)));
		explicit_bzero(buf, len);
		free(buf);
		return NULL;
	}
	/* A backslash at the very end, in a string cut short, matches no rule
	 * of libconfuse's scanner, whose default (flex's ECHO) writes it to
	 * standard output.  A space after it changes no meaning: the string
	 * is cut short anyway, and elsewhere a space is eaten.  The loop above
	 * left room for it: len + 1 < size. */
	if (len > 0 && buf[len - 1] == '\\') {
		buf[len] = ' ';
		buf[len + 1] = '\0';
	}
	return buf;
fail:
	if (fd >= 0)
		close(fd);
	if (buf)
		explicit_bzero(buf, len); /* what was read may hold an api-key */
	free(buf);
	return NULL;
}

/* Parse path, or the empty text when path is NULL (the defaults). */
static int conf_read(const char *path, const struct conf_check *more, struct conf *c)
{
	const char *name = path ? path : "(defaults)";
	cfg_t *cfg;
	char *text = NULL;
	mode_t mode = 0;
	int rc;

	memset(c, 0, sizeof(*c));
	remember_start_dir(); /* before anything can change the directory */
	if (path && !(text = conf_slurp(path, &mode)))
		return -1;
	cfg = cfg_init(top_opts, CFGF_NONE);
	if (!cfg) {
		log_err("%s: out of memory", name);
		if (text)
			explicit_bzero(text, strlen(text));
		free(text);
		return -1;
	}
	cfg_set_error_function(cfg, conf_errfunc);
	set_validators(cfg, more);

	parsing_path = path;
	parsing_text = text;
	parsing_errors = 0;
	rc = cfg_parse_buf(cfg, text ? text : "");
	parsing_path = parsing_text = NULL;
	/* libconfuse fails some input without a word ("" = 1). */
	if (rc == CFG_PARSE_ERROR && parsing_errors == 0)
		log_err("%s:%d: a syntax error (an empty key name?)", name, cfg->line);
	if (text) {
		explicit_bzero(text, strlen(text)); /* it may hold an api-key */
		free(text);
	}
	if (rc == CFG_FILE_ERROR) {
		log_err("%s: cannot read: %s", name, strerror(errno));
	} else if (rc == CFG_SUCCESS) {
		if (conf_copy(cfg, path, c) < 0) {
			log_err("%s: out of memory", name);
			rc = CFG_PARSE_ERROR;
		} else if (c->api_key && (mode & (S_IRGRP | S_IROTH))) {
			log_warning(
				"%s: holds an api-key and is readable by group or others; "
				"chmod 600 it or use api-key-file",
				name);
		}
	}
	cfg_free(cfg);
	if (rc != CFG_SUCCESS) {
		conf_free(c);
		return -1;
	}
	return 0;
}

/* See conf.h. */
int conf_load(const char *path, const struct conf_check *more, struct conf *c)
{
	return conf_read(path, more, c);
}

int conf_defaults(struct conf *c)
{
	return conf_read(NULL, NULL, c);
}

void conf_free(struct conf *c)
{
	free(c->path);
	free(c->database);
	free(c->metrics_file);
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

/* Read a key file: one line, white space around it removed.  Returns the
 * key; or NULL with *why saying what is wrong with the file (never quoting
 * it); or NULL with *why NULL and errno set (ENOENT kept for the caller).
 * O_NONBLOCK: a FIFO must not hang the daemon waiting for a writer. */
static char *read_key_file(const char *path, int *insecure, const char **why)
{
	char buf[MAX_KEY_LEN + 8];
	char *start, *end, *key = NULL;
	struct stat st;
	size_t len = 0;
	ssize_t n = 0;
	int fd, e;

	*why = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0) {
		e = errno;
		close(fd);
		errno = e;
		return NULL;
	}
	if (!S_ISREG(st.st_mode)) {
		*why = S_ISDIR(st.st_mode) ? "a directory, not a key file" : "not a regular file";
		close(fd);
		return NULL;
	}
	*insecure = (st.st_mode & (S_IRGRP | S_IROTH)) != 0;
	while (len < sizeof(buf) - 1) {
		n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	e = errno;
	close(fd);
	if (n < 0) {
		explicit_bzero(buf, sizeof(buf));
		errno = e;
		return NULL;
	}
	buf[len] = '\0';
	if (len == sizeof(buf) - 1)
		*why = "the key is longer than 4096 characters";
	else if (memchr(buf, '\0', len))
		*why = "the file holds a NUL byte";
	for (start = buf; *start == ' ' || *start == '\t'; start++)
		;
	for (end = buf + len; end > start && end[-1] && strchr(" \t\r\n", end[-1]); end--)
		;
	*end = '\0';
	if (!*why)
		*why = key_problem(start);
	if (!*why && !(key = strdup(start)))
		errno = ENOMEM;
	explicit_bzero(buf, sizeof(buf));
	return key;
}

/* One key file source.  Returns 1 with *key set, 0 when the file does not
 * exist and may be skipped, -1 after logging an error. */
static int key_from_file(const char *path, int must_exist, char **key)
{
	const char *why;
	int insecure = 0;

	*key = read_key_file(path, &insecure, &why);
	if (*key) {
		if (insecure)
			log_warning("API key file %s is readable by group or others; chmod 600 it", path);
		return 1;
	}
	if (why)
		log_err("API key file %s: %s", path,
			strstr(why, "line break") ?
				"more than one line; it must hold the key alone on one line" :
				why);
	else if (errno == ENOENT && !must_exist)
		return 0;
	else
		log_err("API key file %s: %s", path, strerror(errno));
	return -1;
}

char *conf_api_key(const struct conf *c)
{
	const char *credentials = getenv("CREDENTIALS_DIRECTORY");
	const char *env, *why;
	char *key = NULL;
	int rc;

	if (credentials && *credentials) {
		char path[PATH_MAX];

		if ((size_t)snprintf(path, sizeof(path), "%s/api-key", credentials) >= sizeof(path)) {
			log_err("$CREDENTIALS_DIRECTORY is too long");
			return NULL;
		}
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
	if (env && *env) {
		if ((why = key_problem(env))) {
			log_err("$DEXRA_API_KEY: %s (its value is not shown)", why);
			return NULL;
		}
		return strdup(env);
	}
	if (c->api_key && *c->api_key)
		return strdup(c->api_key);
	log_err("no API key: none in $CREDENTIALS_DIRECTORY/api-key, api-key-file (%s), "
		"$DEXRA_API_KEY or api-key in %s",
		c->api_key_file, c->path);
	return NULL;
}
