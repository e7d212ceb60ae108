/* notify.c - sd_notify(3) for Type=notify, with a paced watchdog */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "notify.h"

static long watchdog_ms = -1;           /* half of WatchdogSec */
static _Thread_local struct timespec last_ping;   /* per thread: the walk lists in one */

static void notify_send(const char *state)
{
#ifdef HAVE_LIBSYSTEMD
	sd_notify(0, state);
#else
	(void)state;
#endif
}

void notify_init(void)
{
#ifdef HAVE_LIBSYSTEMD
	uint64_t usec;

	if (sd_watchdog_enabled(0, &usec) > 0)
		watchdog_ms = (long)(usec / 2000);
#endif
}

void notify_ready(void)
{
	notify_send("READY=1");
}

void notify_reloading(void)
{
	notify_send("RELOADING=1");
}

void notify_stopping(void)
{
	notify_send("STOPPING=1");
}

void notify_status(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	n = snprintf(buf, sizeof(buf), "STATUS=");
	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	notify_send(buf);
}

long notify_watchdog_ms(void)
{
	return watchdog_ms;
}

void notify_watchdog(void)
{
	struct timespec now;
	long elapsed;

	if (watchdog_ms < 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	elapsed = (now.tv_sec - last_ping.tv_sec) * 1000 + (now.tv_nsec - last_ping.tv_nsec) / 1000000;
	if (last_ping.tv_sec && elapsed < watchdog_ms)
		return;
	last_ping = now;
	notify_send("WATCHDOG=1");
}
