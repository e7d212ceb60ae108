/* backoff.c - full-jitter exponential backoff
 *
 * Jitter spreads the retries of many items (and many hosts) so that they do
 * not hit a recovering server at the same moment. */
#include "config.h"

#include "backoff.h"

long backoff_ceiling(long attempts, long min_backoff, long max_backoff)
{
	long ceiling = min_backoff;

	if (max_backoff < min_backoff)
		max_backoff = min_backoff;
	for (long i = 0; i < attempts && ceiling < max_backoff; i++)
		ceiling = ceiling > max_backoff / 2 ? max_backoff : ceiling * 2;
	return ceiling > max_backoff ? max_backoff : ceiling;
}

long backoff_delay(long attempts, long min_backoff, long max_backoff, long retry_after, uint32_t rnd)
{
	long ceiling = backoff_ceiling(attempts, min_backoff, max_backoff), delay;

	delay = min_backoff + (long)(rnd % (uint64_t)(ceiling - min_backoff + 1));
	return retry_after > delay ? retry_after : delay;
}
