/* notify.c - sd_notify(3) for Type=notify, with a paced watchdog
 *
 * The protocol is done here, not through libsystemd: it is one datagram to
 * the AF_UNIX socket $NOTIFY_SOCKET names, which systemd documents as the
 * stable interface (sd_notify(3), "Notes", has a reference implementation
 * and advises linking libsystemd for nothing else); the library would load
 * six more shared libraries into every dexsyncd and dexsync process. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "notify.h"

static long watchdog_ms = -1;			/* half of WatchdogSec */
static _Thread_local struct timespec last_ping; /* per thread: the walk lists in one */

/* Send state to $NOTIFY_SOCKET, a path or, with a leading '@', an abstract
 * name; nothing without one.  Best effort, as sd_notify: systemd notices a
 * missing READY or WATCHDOG by itself. */
static void notify_send(const char *state)
{
	const char *name = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = name ? strlen(name) : 0;
	int fd;

	if (len < 2 || len >= sizeof(sa.sun_path) || (name[0] != '/' && name[0] != '@'))
		return;
	memcpy(sa.sun_path, name, len);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0';
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return;
	(void)sendto(fd, state, strlen(state), MSG_NOSIGNAL, (const struct sockaddr *)&sa,
		     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
	close(fd);
}

/* As sd_watchdog_enabled(3): $WATCHDOG_USEC, when $WATCHDOG_PID is unset
 * or ours. */
void notify_init(void)
{
	const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	unsigned long long us;
	char *end;

	watchdog_ms = -1;
	if (!usec || (pid && strtol(pid, NULL, 10) != (long)getpid()))
		return;
	errno = 0;
	us = strtoull(usec, &end, 10);
	if (errno || end == usec || *end || us == 0)
		return;
	watchdog_ms = (long)(us / 2000);
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
