/* log.c - syslog(3) with an optional copy on stderr */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "escape.h"
#include "log.h"

static atomic_int log_level = LOG_INFO; /* set by a reload while the outbox logs */
static int log_to_stderr;
static int log_to_syslog;
static const char *log_ident = PACKAGE;

/* An error or warning logged again and again (a full disk refuses every
 * try, and two threads may take turns with two such lines) is written once
 * a minute, then how many times it came meanwhile: the last REPEAT_SLOTS
 * errors and warnings written, each with its priority, when, and the
 * repeats since. */
#define REPEAT_S     60
#define REPEAT_SLOTS 4
static pthread_mutex_t repeat_mu = PTHREAD_MUTEX_INITIALIZER;
static struct repeat {
	char *line; /* NULL: free */
	int prio;
	time_t at;
	unsigned long written; /* the order lines were written in */
	long count;
} recent[REPEAT_SLOTS];
static unsigned long written;

static const struct {
	const char *name;
	int value;
} levels[] = {
	{ "err", LOG_ERR },
	{ "warning", LOG_WARNING },
	{ "notice", LOG_NOTICE },
	{ "info", LOG_INFO },
	{ "debug", LOG_DEBUG },
}, facilities[] = {
	{ "daemon", LOG_DAEMON },
	{ "user", LOG_USER },
	{ "local0", LOG_LOCAL0 },
	{ "local1", LOG_LOCAL1 },
	{ "local2", LOG_LOCAL2 },
	{ "local3", LOG_LOCAL3 },
	{ "local4", LOG_LOCAL4 },
	{ "local5", LOG_LOCAL5 },
	{ "local6", LOG_LOCAL6 },
	{ "local7", LOG_LOCAL7 },
};

/* Is stderr the systemd journal ($JOURNAL_STREAM is its device:inode)? */
static int stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char *end;

	if (!js)
		return 0;
	dev = strtoull(js, &end, 10);
	if (*end != ':')
		return 0;
	ino = strtoull(end + 1, &end, 10);
	return *end == '\0' && fstat(2, &st) == 0 && (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

static void write_line(int prio, const char *line);

void log_open(const char *ident, int facility, int to_stderr, int use_syslog)
{
	static int at_exit;

	/* The repeats of the last error are said at the end too. */
	if (!at_exit)
		at_exit = atexit(log_close) == 0;
	log_ident = ident;
	log_to_stderr = to_stderr && !(use_syslog && stderr_is_journal());
	log_to_syslog = use_syslog;
	if (use_syslog)
		openlog(ident, LOG_PID | LOG_NDELAY, facility);
}

/* Say how many times r's line came since it was written, and forget the
 * count (repeat_mu held). */
static void repeats_flush(struct repeat *r)
{
	char *note = NULL;

	if (r->count > 0 &&
	    asprintf(&note, "(the %s \"%s\" came %ld more time%s)", r->prio == LOG_ERR ? "error" : "warning",
		     r->line, r->count, r->count == 1 ? "" : "s") >= 0) {
		write_line(r->prio, note);
		free(note);
	}
	r->count = 0;
}

void log_repeats_forget(void)
{
	pthread_mutex_lock(&repeat_mu);
	for (int i = 0; i < REPEAT_SLOTS; i++) {
		if (recent[i].line)
			repeats_flush(&recent[i]);
		free(recent[i].line);
		recent[i].line = NULL;
	}
	pthread_mutex_unlock(&repeat_mu);
}

void log_close(void)
{
	log_repeats_forget();
	if (log_to_syslog)
		closelog();
	log_to_syslog = 0;
}

void log_set_facility(int facility)
{
	if (log_to_syslog) {
		closelog();
		openlog(log_ident, LOG_PID | LOG_NDELAY, facility);
	}
}

void log_set_level(int level)
{
	atomic_store(&log_level, level);
}

int log_get_level(void)
{
	return atomic_load(&log_level);
}

int log_level_from_name(const char *name)
{
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strcmp(name, levels[i].name) == 0)
			return levels[i].value;
	return -1;
}

int log_facility_from_name(const char *name)
{
	for (size_t i = 0; i < sizeof(facilities) / sizeof(facilities[0]); i++)
		if (strcmp(name, facilities[i].name) == 0)
			return facilities[i].value;
	return -1;
}

/* Is line (of priority prio, an error or a warning) one of the last
 * written, less than REPEAT_S ago?  Then it is counted, not written.  Else
 * it takes the slot of its own older copy (whose count is said first) or
 * of the line written longest ago. */
static int repeated(int prio, const char *line)
{
	time_t now = time(NULL);
	struct repeat *r = &recent[0];
	int yes = 0;

	pthread_mutex_lock(&repeat_mu);
	for (int i = 0; i < REPEAT_SLOTS; i++) {
		if (recent[i].line && recent[i].prio == prio && !strcmp(recent[i].line, line)) {
			r = &recent[i];
			yes = now - r->at < REPEAT_S;
			break;
		}
		if (!recent[i].line || (r->line && recent[i].written < r->written))
			r = &recent[i];
	}
	if (yes) {
		r->count++;
	} else {
		if (r->line)
			repeats_flush(r);
		if (!r->line || strcmp(r->line, line)) {
			free(r->line);
			r->line = strdup(line); /* NULL out of memory: nothing is held back */
		}
		r->prio = prio;
		r->at = now;
		r->written = ++written;
	}
	pthread_mutex_unlock(&repeat_mu);
	return yes;
}

static const char *level_name(int prio)
{
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (levels[i].value == prio)
			return levels[i].name;
	return "?";
}

/* Format, escape (see escape.h: a message that quotes a server's error, a
 * row or an argument can neither start a line of its own nor drive the
 * terminal), then write to stderr and syslog. */
/* One line to standard error and syslog, as configured. */
static void write_line(int prio, const char *line)
{
	if (log_to_stderr) {
		flockfile(stderr); /* one line, whichever thread logs */
		fprintf(stderr, "%s: %s: %s\n", log_ident, prio == LOG_ERR ? "error" : level_name(prio),
			line);
		funlockfile(stderr);
	}
	if (log_to_syslog)
		syslog(prio, "%s", line);
}

void log_vmsg(int prio, const char *fmt, va_list ap)
{
	char *text = NULL, *safe = NULL;
	const char *line;
	int n;

	if (prio > atomic_load(&log_level))
		return;
	n = vasprintf(&text, fmt, ap);
	if (n < 0)
		text = NULL;
	else
		safe = escape_text(text, (size_t)n);
	line = safe ? safe : "(out of memory formatting a log message)";
	if (prio <= LOG_WARNING && repeated(prio, line)) {
		free(safe);
		free(text);
		return;
	}
	write_line(prio, line);
	free(safe);
	free(text);
}

void log_msg(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(prio, fmt, ap);
	va_end(ap);
}
