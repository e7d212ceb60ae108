/* log.c - syslog(3) with an optional copy on stderr */
#include "config.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "escape.h"
#include "log.h"

static atomic_int log_level = LOG_INFO; /* set by a reload while the outbox logs */
static int log_to_stderr;
static int log_to_syslog;
static const char *log_ident = PACKAGE;

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

void log_open(const char *ident, int facility, int to_stderr, int use_syslog)
{
	log_ident = ident;
	log_to_stderr = to_stderr && !(use_syslog && stderr_is_journal());
	log_to_syslog = use_syslog;
	if (use_syslog)
		openlog(ident, LOG_PID | LOG_NDELAY, facility);
}

void log_close(void)
{
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
	if (log_to_stderr) {
		flockfile(stderr); /* one line, whichever thread logs */
		fprintf(stderr, "%s: %s: %s\n", log_ident, prio == LOG_ERR ? "error" : level_name(prio),
			line);
		funlockfile(stderr);
	}
	if (log_to_syslog)
		syslog(prio, "%s", line);
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
