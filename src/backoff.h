/* backoff.h - when to try an outbox item again (pure, no I/O) */
#ifndef DEXSYNC_BACKOFF_H
#define DEXSYNC_BACKOFF_H

#include <stdint.h>

/* Full-jitter exponential backoff after the attempts-th failed attempt
 * (attempts >= 1): a delay drawn uniformly from [min_backoff, ceiling],
 * ceiling = min(max_backoff, min_backoff * 2^attempts), using the random
 * value rnd; never less than retry_after (-1: none), which is not capped. */
long backoff_delay(long attempts, long min_backoff, long max_backoff, long retry_after, uint32_t rnd);

/* The ceiling of that draw: min(max_backoff, min_backoff * 2^attempts).
 * A retry within one request (api_get) waits the ceiling itself: a few
 * seconds, where jitter would buy nothing. */
long backoff_ceiling(long attempts, long min_backoff, long max_backoff);

#endif
