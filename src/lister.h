/* lister.h - the pages of one list walk, fetched and parsed ahead in a thread */
#ifndef DEXSYNC_LISTER_H
#define DEXSYNC_LISTER_H

#include <signal.h>

#include "api.h"
#include "conf.h"
#include "page.h"

struct lister;

/* A page handed to the store. */
struct listed {
	struct page page;
	char *next_cursor;          /* malloc'd copy; NULL on the last page */
	int restart;                /* the walk started over from the first page here */
};

/* Start listing status (NULL: everything) from cursor (NULL: the first
 * page); with rows, the thread also turns each page into rows (page_rows).
 * The lister's thread owns api until lister_finish().  A stored cursor the
 * server rejects (4xx) starts the list over, once.  NULL when the thread
 * cannot be started. */
struct lister *lister_start(struct api *api, const struct conf *c, const char *status,
			    const char *cursor, int rows, volatile sig_atomic_t *stop);

/* Is a page waiting, or does one come within wait_ms? */
int lister_ready(struct lister *l, long wait_ms);

/* The next page into *out (free with listed_free): 1, or 0 at the end of
 * the list, or -1 when listing failed or *stop was raised (lister_error
 * says why).  Blocks while the next page is on its way. */
int lister_next(struct lister *l, struct listed *out);
void listed_free(struct listed *p);

/* Why lister_next returned -1. */
const char *lister_error(struct lister *l);

/* Stop the thread (a request in flight is abandoned), free what is still
 * queued and the lister; *retries gets the transient failures it retried. */
void lister_finish(struct lister *l, long *retries);

/* GET path, retrying transient failures three times with a growing pause
 * (1, 2, 4 s, or the server's Retry-After up to 60 s).  *retries counts the
 * retries.  The pause ends early once *stop is set.  *fails counts the
 * transient failures in a row across calls (an answer that is not one
 * resets it): once it reaches max_fails, no more retries. */
enum api_outcome lister_get(struct api *api, const char *path, struct api_response *r,
			    volatile sig_atomic_t *stop, long *retries, int *fails, int max_fails);

#endif
