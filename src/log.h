/* log.h - the only way dexsync speaks: syslog(3), and stderr in the foreground */
#ifndef DEXSYNC_LOG_H
#define DEXSYNC_LOG_H

#include <stdarg.h>
#include <syslog.h>

/* Open the log.  ident is the program name, facility a LOG_* facility;
 * to_stderr copies every line to standard error (unless stderr is the
 * journal, which has the syslog copy already), use_syslog sends them to
 * syslog(3) (the command-line tool speaks to stderr only). */
void log_open(const char *ident, int facility, int to_stderr, int use_syslog);
void log_close(void);

/* Say the counts of the errors and warnings held back as repeats, and
 * forget them: what comes next is written even if it came before (a
 * reload's refusal each time an operator asks for one). */
void log_repeats_forget(void);

/* Reopen syslog with another facility (after a reload). */
void log_set_facility(int facility);

/* Lines with a priority above level (LOG_ERR..LOG_DEBUG) are dropped. */
void log_set_level(int level);
int log_get_level(void);

/* Map "err", "warning", "notice", "info", "debug" to LOG_*; -1 if unknown. */
int log_level_from_name(const char *name);
/* Map "daemon", "user", "local0".."local7" to LOG_*; -1 if unknown. */
int log_facility_from_name(const char *name);

/* Log one line.  The formatted message is escaped (escape.h) before it
 * goes out, so text from the server, the database or the user quoted in it
 * can neither start a line of its own nor drive a terminal. */
void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(int prio, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#define log_err(...)	 log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...)	 log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...)	 log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)	 log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
