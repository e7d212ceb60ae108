/* api.h - the Dexra HTTP client: one keep-alive libcurl handle, JSON bodies */
#ifndef DEXSYNC_API_H
#define DEXSYNC_API_H

#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

#include "conf.h"
#include "result.h"

/* What a request came to (api_classify), for the caller's retry decision:
 * DX_OK (2xx), DX_TRANSIENT (connection error, timeout, 408, 429, 5xx: try
 * again later; also a request stopped or out of memory on our side),
 * DX_GONE (404, 410: the thing asked for does not exist), DX_PERMANENT
 * (any other status, or a request we refuse to send: trying again will not
 * help). */
struct api_response {
	long status; /* HTTP status, 0 when there was none */
	enum dx_result outcome;
	long retry_after; /* seconds from now, -1 when not given */
	const char *body; /* NUL-terminated; valid until the next request */
	size_t len;
	char error[768]; /* one line for the log when outcome != DX_OK */
};

struct api;

/* curl_global_init, with libcurl's freed memory wiped (it held the key).
 * Once, before any thread; DX_OK or DX_SYSTEM. */
enum dx_result api_global_init(void);

/* A client for c->base_url with the given key (copied; the copy is wiped by
 * api_free()).  NULL when out of memory. */
struct api *api_new(const struct conf *c, const char *key);
void api_free(struct api *api);

/* Perform one request.  path starts with '/' and may carry a query;
 * body (JSON) goes with POST and PATCH; idempotency_key, when not NULL,
 * is sent as Idempotency-Key.  Returns r->outcome. */
enum dx_result api_request(struct api *api, const char *method, const char *path, const char *body,
			   const char *idempotency_key, struct api_response *r);

/* GET path, retrying a transient failure API_GET_RETRIES times after a
 * pause that grows as backoff_ceiling (1, 2, 4 s), or the server's
 * Retry-After when longer, up to API_GET_MAX_WAIT s (a longer one is left
 * to the caller's next cycle).  *retries counts the retries.  A pause ends
 * early once the client's stop or cancel flag is set.  With fails, *fails
 * counts the transient failures in a row across calls (an answer that is
 * not one resets it): once it reaches max_fails, no more retries.
 * Returns r->outcome. */
#define API_GET_RETRIES	 3
#define API_GET_MAX_WAIT 60
enum dx_result api_get(struct api *api, const char *path, struct api_response *r, long *retries, int *fails,
		       int max_fails);

/* Abort a request in flight (as a transient failure) once *stop is set. */
void api_set_stop(struct api *api, volatile sig_atomic_t *stop);
/* The same for a flag set by another thread; NULL: none. */
void api_set_cancel(struct api *api, atomic_int *cancel);
/* Is a request in flight?  May be asked from another thread. */
int api_performing(struct api *api);

/* When the server's last Retry-After ends (time(NULL)'s scale), 0 when it
 * never sent one: a walk it stopped is not tried again before. */
time_t api_not_before(const struct api *api);

/* Requests made since api_new(). */
unsigned long api_requests(const struct api *api);

/* URL-escape s for a query value or a path segment; free with curl_free(). */
char *api_escape(struct api *api, const char *s);

/* Parse r's body as JSON (\u0000 in strings accepted).  NULL on bad JSON,
 * with the position in err. */
json_t *api_json(const struct api_response *r, char *err, size_t errlen);

/* Pure helpers, exposed for the unit tests. */
enum dx_result api_classify(CURLcode cc, long status);
long api_parse_retry_after(const char *value, time_t now);

#endif
