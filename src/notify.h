/* notify.h - telling systemd how we are (sd_notify(3)); no-ops without $NOTIFY_SOCKET */
#ifndef DEXSYNC_NOTIFY_H
#define DEXSYNC_NOTIFY_H

/* Read $WATCHDOG_USEC (and $WATCHDOG_PID) once; call at start-up. */
void notify_init(void);

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);
/* STATUS=..., one line shown by systemctl status. */
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* WATCHDOG=1, at most every half watchdog period: cheap to call often, and
 * called from long walks and drains as well as the idle loop. */
void notify_watchdog(void);

/* Milliseconds between watchdog pings, or -1 when no watchdog is set. */
long notify_watchdog_ms(void);

#endif
