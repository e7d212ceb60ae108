/* lister.h - the pages of one list walk, fetched and parsed ahead in a thread */
#ifndef DEXSYNC_LISTER_H
#define DEXSYNC_LISTER_H

#include <signal.h>

#include "api.h"
#include "conf.h"
#include "page.h"
#include "result.h"

struct lister;

/* A page handed to the store. */
struct listed {
	struct page page;
	char *next_cursor; /* malloc'd copy; NULL on the last page */
	int restart;	   /* the walk started over from the first page here */
};

/* Start listing status (NULL: everything) from cursor (NULL: the first
 * page); with rows, the thread also turns each page into rows (page_rows).
 * The lister's thread owns api until lister_finish().  A stored cursor the
 * server rejects (4xx) starts the list over, once.  Its requests are
 * api_get's, retried as that says.  NULL when the thread
 * cannot be started. */
struct lister *lister_start(struct api *api, const struct conf *c, const char *status, const char *cursor,
			    int rows, volatile sig_atomic_t *stop);

/* Is a page waiting, or does one come within wait_ms? */
int lister_ready(struct lister *l, long wait_ms);

/* The next page into *out (free with listed_free): DX_OK with *page 1, or
 * 0 at the end of the list; DX_STOPPED when *stop was raised or the lister
 * cancelled, or what listing failed with (DX_TRANSIENT, DX_PERMANENT,
 * DX_GONE, DX_BAD_ANSWER, DX_NOMEM); lister_error says why.  Blocks while
 * the next page is on its way. */
enum dx_result lister_next(struct lister *l, struct listed *out, int *page);
void listed_free(struct listed *p);

/* Why lister_next failed. */
const char *lister_error(struct lister *l);

/* Stop the thread (a request in flight is abandoned), free what is still
 * queued and the lister; *retries gets the transient failures it retried. */
void lister_finish(struct lister *l, long *retries);

#endif
