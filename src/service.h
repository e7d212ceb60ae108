/* service.h - dexsyncd's cycles: once (-1) or the long-running loop */
#ifndef DEXSYNC_SERVICE_H
#define DEXSYNC_SERVICE_H

#include "conf.h"

/* One walk and one outbox drain.  Takes c.  Returns the exit status. */
int service_once(struct conf *c);

/* Walk every sync.interval, drain the outbox every poll-interval, until
 * SIGTERM or SIGINT; SIGHUP reloads conf_path, SIGUSR1 walks now.
 * level_override >= 0 keeps the log level from the command line across
 * reloads.  Takes c.  Returns the exit status. */
int service_loop(struct conf *c, const char *conf_path, int level_override);

#endif
