/* service.h - dexsyncd's cycles: once (-1) or the long-running loop */
#ifndef DEXSYNC_SERVICE_H
#define DEXSYNC_SERVICE_H

#include "conf.h"

/* One walk, with the outbox drained meanwhile and once more after it.
 * Takes c, and lock_fd: the daemon's lock on c's database (lock.h).
 * Returns the exit status. */
int service_once(struct conf *c, int lock_fd);

/* Walk every sync.interval, drain the outbox every poll-interval (in a
 * thread of its own, walks or not), until SIGTERM or SIGINT; SIGHUP
 * reloads conf_path, SIGUSR1 walks now.  level_override >= 0 keeps the log
 * level from the command line across reloads.  Takes c and lock_fd, as
 * service_once.  Returns the exit status. */
int service_loop(struct conf *c, const char *conf_path, int level_override, int lock_fd);

#endif
