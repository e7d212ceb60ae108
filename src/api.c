/* api.c - the Dexra HTTP client over libcurl
 *
 * One easy handle is reused for every request so that the connection stays
 * open (keep-alive).  Only http and https are allowed, redirects are not
 * followed, TLS verification is never turned off.  The API key lives in one
 * header string that is wiped when the client is freed; it is never logged. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "backoff.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"

#define MAX_BODY     (64u << 20) /* a larger answer is an error, not an OOM */
#define MAX_SHOWN    160	 /* bytes of a path or body quoted in errors */
#define MAX_KEY	     255	 /* Idempotency-Key characters (SPEC 3) */
#define IDEM_HEADER  "Idempotency-Key: "
#define AUTH_HEADER  "Authorization: Bearer "
#define API_SLICE_MS 100 /* how often a pause looks at the flags */

/* max-rate caps what the server sees from this process: the walk's client
 * and the outbox's take turns on one clock. */
static pthread_mutex_t pace_lock = PTHREAD_MUTEX_INITIALIZER;
static struct timespec last_start;

struct api {
	CURL *curl;
	struct curl_slist *headers; /* Authorization first: wiped on free */
	char *base_url;
	char *url; /* base_url + path, reused */
	size_t url_size;
	char *body; /* response body, reused */
	size_t body_len, body_size;
	int too_big;
	long retry_after;
	time_t not_before; /* api_not_before() */
	long min_gap_ns;   /* from max-rate; 0 = no cap */
	unsigned long requests;
	volatile sig_atomic_t *stop; /* abort in-flight requests when set */
	atomic_int *cancel;	     /* ... or when this is set */
	atomic_int performing;	     /* a request is in curl (api_performing) */
	char curl_err[CURL_ERROR_SIZE];
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct api *api = userdata;
	size_t n = size * nmemb;

	if (api->body_len + n + 1 > MAX_BODY) {
		api->too_big = 1;
		return 0;
	}
	if (api->body_len + n + 1 > api->body_size) {
		size_t want = api->body_size ? api->body_size : 16384;
		char *p;

		while (want < api->body_len + n + 1)
			want *= 2;
		p = realloc(api->body, want);
		if (!p)
			return 0;
		api->body = p;
		api->body_size = want;
	}
	memcpy(api->body + api->body_len, ptr, n);
	api->body_len += n;
	api->body[api->body_len] = '\0';
	return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	static const char name[] = "retry-after:";
	struct api *api = userdata;
	size_t n = size * nmemb;
	char value[128];
	size_t vlen;

	if (n > sizeof(name) - 1 && strncasecmp(ptr, name, sizeof(name) - 1) == 0) {
		vlen = n - (sizeof(name) - 1);
		if (vlen >= sizeof(value))
			vlen = sizeof(value) - 1;
		memcpy(value, ptr + sizeof(name) - 1, vlen);
		value[vlen] = '\0';
		api->retry_after = api_parse_retry_after(value, time(NULL));
	}
	return n;
}

/* Is the client's stop or cancel flag set? */
static int stopped(const struct api *api)
{
	return (api->stop && *api->stop) || (api->cancel && atomic_load(api->cancel));
}

/* Called by libcurl about once a second and while data moves: the place to
 * notice a stop request during a slow answer, and to keep the watchdog fed. */
static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	struct api *api = userdata;

	(void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	notify_watchdog();
	return stopped(api);
}

void api_set_stop(struct api *api, volatile sig_atomic_t *stop)
{
	api->stop = stop;
}

void api_set_cancel(struct api *api, atomic_int *cancel)
{
	api->cancel = cancel;
}

int api_performing(struct api *api)
{
	return atomic_load(&api->performing);
}

/* libcurl's memory is wiped when freed: its request buffers hold the
 * Authorization header, and a key that a reload rotated out must not stay
 * behind in the freed heap. */
static void wipe_free(void *p)
{
	if (p) {
		explicit_bzero(p, malloc_usable_size(p));
		free(p);
	}
}

static void *wipe_realloc(void *p, size_t n)
{
	size_t had;
	void *q;

	if (!p)
		return malloc(n);
	had = malloc_usable_size(p);
	if (!(q = malloc(n ? n : 1)))
		return NULL;
	memcpy(q, p, had < n ? had : n);
	wipe_free(p);
	return q;
}

enum dx_result api_global_init(void)
{
	return curl_global_init_mem(CURL_GLOBAL_DEFAULT, malloc, wipe_free, wipe_realloc, strdup, calloc) ==
			       CURLE_OK ?
		       DX_OK :
		       DX_SYSTEM;
}

struct api *api_new(const struct conf *c, const char *key)
{
	struct api *api = calloc(1, sizeof(*api));
	char *auth;
	size_t alen;

	if (!api)
		return NULL;
	api->base_url = strdup(c->base_url);
	api->curl = curl_easy_init();
	alen = strlen(AUTH_HEADER) + strlen(key) + 1;
	auth = malloc(alen);
	if (!api->base_url || !api->curl || !auth) {
		free(auth);
		api_free(api);
		return NULL;
	}
	snprintf(auth, alen, AUTH_HEADER "%s", key);
	api->headers = curl_slist_append(NULL, auth);
	explicit_bzero(auth, alen);
	free(auth);
	api->headers = curl_slist_append(api->headers, "Accept: application/json");
	api->headers = curl_slist_append(api->headers, "Content-Type: application/json");
	api->headers = curl_slist_append(api->headers, "Expect:");
	if (c->max_rate > 0)
		api->min_gap_ns = 1000000000L / c->max_rate;

	CURL *h = api->curl;
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L); /* an id ".." is an id, not a step up */
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, c->connect_timeout);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, c->timeout);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "dexsyncd/" PACKAGE_VERSION);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, api->curl_err);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, api);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, api);
	curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, api);
	/* An extra bundle adds to the system's CA directory, it does not replace it. */
	if (*c->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
	if (*c->proxy)
		curl_easy_setopt(h, CURLOPT_PROXY, c->proxy);
	if (!api->headers) {
		api_free(api);
		return NULL;
	}
	return api;
}

void api_free(struct api *api)
{
	if (!api)
		return;
	if (api->curl)
		curl_easy_cleanup(api->curl);
	if (api->headers)
		explicit_bzero(api->headers->data, strlen(api->headers->data));
	curl_slist_free_all(api->headers);
	free(api->base_url);
	free(api->url);
	free(api->body);
	free(api);
}

time_t api_not_before(const struct api *api)
{
	return api->not_before;
}

unsigned long api_requests(const struct api *api)
{
	return api->requests;
}

char *api_escape(struct api *api, const char *s)
{
	return curl_easy_escape(api->curl, s, 0);
}

enum dx_result api_classify(CURLcode cc, long status)
{
	if (cc != CURLE_OK)
		return DX_TRANSIENT; /* our side or the network: never the item's fault */
	if (status >= 200 && status < 300)
		return DX_OK;
	if (status == 408 || status == 429 || status >= 500)
		return DX_TRANSIENT;
	if (status == 404 || status == 410)
		return DX_GONE;
	return DX_PERMANENT;
}

long api_parse_retry_after(const char *value, time_t now)
{
	char buf[128];
	size_t n;
	const char *s;
	time_t t;

	if (!value)
		return -1;
	while (*value == ' ' || *value == '\t')
		value++;
	n = strcspn(value, "\r\n");
	while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t'))
		n--;
	if (n == 0 || n >= sizeof(buf))
		return -1;
	memcpy(buf, value, n);
	buf[n] = '\0';
	for (s = buf; isdigit((unsigned char)*s); s++)
		;
	if (*s == '\0') {
		errno = 0;
		long v = strtol(buf, NULL, 10);

		return errno ? LONG_MAX : v; /* digits past a long: wait "forever" */
	}
	t = curl_getdate(buf, NULL);
	if (t == -1)
		return -1;
	return t > now ? (long)(t - now) : 0;
}

/* Copy at most MAX_SHOWN bytes of s into out, control bytes as '?'. */
static void shown(char *out, size_t size, const char *s, size_t len)
{
	size_t i, n = len < MAX_SHOWN ? len : MAX_SHOWN;

	if (n >= size)
		n = size - 1;
	for (i = 0; i < n; i++)
		out[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	out[i] = '\0';
	if (len > n && i >= 3)
		memcpy(out + i - 3, "...", 3);
}

/* Wait so that request starts are at least min_gap_ns apart (max-rate),
 * counting every client of the process. */
static void pace(struct api *api)
{
	struct timespec now, wait;
	long elapsed;

	if (!api->min_gap_ns)
		return;
	pthread_mutex_lock(&pace_lock);
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (last_start.tv_sec || last_start.tv_nsec) {
		elapsed = (now.tv_sec - last_start.tv_sec) * 1000000000L + (now.tv_nsec - last_start.tv_nsec);
		if (elapsed >= 0 && elapsed < api->min_gap_ns) {
			wait.tv_sec = 0;
			wait.tv_nsec = api->min_gap_ns - elapsed;
			nanosleep(&wait, NULL);
			clock_gettime(CLOCK_MONOTONIC, &now);
		}
	}
	last_start = now;
	pthread_mutex_unlock(&pace_lock);
}

/* Can key go into a header exactly as it is?  The schema refuses other
 * keys (migration 0003); this is the last line against a header injected
 * through the database. */
static int key_sendable(const char *key)
{
	size_t n = strlen(key);

	if (n == 0 || n > MAX_KEY || key[0] == ' ' || key[n - 1] == ' ')
		return 0;
	for (; *key; key++)
		if (*key < 0x20 || *key > 0x7e)
			return 0;
	return 1;
}

static int set_url(struct api *api, const char *path)
{
	size_t need = strlen(api->base_url) + strlen(path) + 1;

	if (need > api->url_size) {
		char *p = realloc(api->url, need);

		if (!p)
			return -1;
		api->url = p;
		api->url_size = need;
	}
	snprintf(api->url, api->url_size, "%s%s", api->base_url, path);
	return 0;
}

static void describe_failure(struct api *api, const char *method, const char *path, CURLcode cc,
			     struct api_response *r)
{
	char where[MAX_SHOWN + 1], what[MAX_SHOWN + 1];

	shown(where, sizeof(where), path, strlen(path));
	if (api->too_big)
		snprintf(r->error, sizeof(r->error), "%s %s: answer larger than %u MiB", method, where,
			 MAX_BODY >> 20);
	else if (cc == CURLE_ABORTED_BY_CALLBACK)
		snprintf(r->error, sizeof(r->error), "%s %s: %s", method, where,
			 api->stop && *api->stop ? "stopped by a signal" : "cancelled");
	else if (cc != CURLE_OK)
		snprintf(r->error, sizeof(r->error), "%s %s: %s", method, where,
			 *api->curl_err ? api->curl_err : curl_easy_strerror(cc));
	else {
		shown(what, sizeof(what), r->body, r->len);
		snprintf(r->error, sizeof(r->error), "%s %s: HTTP %ld: %s", method, where, r->status,
			 *what ? what : "(empty body)");
	}
}

/* The value of the four hex digits at p, -1 when they are not. */
static long hex4(const char *p)
{
	long v = 0;

	for (int i = 0; i < 4; i++) {
		int c = (unsigned char)p[i];

		if (!isxdigit(c))
			return -1;
		v = v * 16 + (isdigit(c) ? c - '0' : (tolower(c) - 'a' + 10));
	}
	return v;
}

/* The length of the span at p (at most n bytes) that spells key, each
 * character as itself or as a JSON escape of it (\/, \", \\, \u0041);
 * 0 when it does not. */
static size_t key_span(const char *p, size_t n, const char *key)
{
	size_t j = 0;

	for (; *key; key++) {
		if (j + 1 < n && p[j] == '\\' && p[j + 1] == *key && strchr("\\\"/", *key))
			j += 2; /* \\, \" or \/, as JSON may write them */
		else if (j < n && p[j] == *key)
			j++;
		else if (j + 5 < n && p[j] == '\\' && p[j + 1] == 'u' &&
			 hex4(p + j + 2) == (unsigned char)*key)
			j += 6;
		else
			return 0;
	}
	return j;
}

/* A server that echoes the key (an error quoting the Authorization header)
 * must not put it in a log line, an item's last_error or a stored answer:
 * every copy in the body, JSON-escaped or not, becomes '*'s (the JSON
 * stays valid).  A key under 8 characters is a test key, and would blank
 * out plain words. */
static void redact_key(struct api *api)
{
	const char *key = api->headers->data + strlen(AUTH_HEADER);
	size_t klen = strlen(key), span;
	char *p, *end;

	if (!api->body || klen < 8)
		return;
	p = api->body;
	end = api->body + api->body_len;
	for (; p < end; p++) {
		if ((*p != *key && *p != '\\') || !(span = key_span(p, (size_t)(end - p), key)))
			continue;
		memset(p, '*', span);
		p += span - 1;
	}
}

enum dx_result api_request(struct api *api, const char *method, const char *path, const char *body,
			   const char *idempotency_key, struct api_response *r)
{
	/* The key's header goes in front of the shared list for this request
	 * only: a list node of our own on the stack, whose next is the shared
	 * list.  curl only reads the list during curl_easy_perform() below,
	 * and curl_slist_free_all() is never called on it, so the node needs
	 * no malloc and the shared list is left as it was. */
	struct curl_slist idem = { NULL, api->headers };
	char idem_line[sizeof(IDEM_HEADER) + MAX_KEY];
	CURL *h = api->curl;
	CURLcode cc;

	memset(r, 0, sizeof(*r));
	r->retry_after = -1;
	api->retry_after = -1;
	api->body_len = 0;
	api->too_big = 0;
	api->curl_err[0] = '\0';
	if (api->body)
		api->body[0] = '\0';
	if (idempotency_key && !key_sendable(idempotency_key)) {
		r->outcome = DX_PERMANENT;
		snprintf(r->error, sizeof(r->error),
			 "%s: the Idempotency-Key is not 1 to %d printable "
			 "ASCII characters; not sent",
			 method, MAX_KEY);
		return r->outcome;
	}
	if (set_url(api, path) < 0) {
		r->outcome = DX_TRANSIENT; /* our side: never the item's fault */
		snprintf(r->error, sizeof(r->error), "%s: out of memory", method);
		return r->outcome;
	}

	curl_easy_setopt(h, CURLOPT_URL, api->url);
	if (strcmp(method, "GET") == 0) {
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, NULL);
	} else {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)(body ? strlen(body) : 0));
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") == 0 ? NULL : method);
	}
	if (idempotency_key) {
		snprintf(idem_line, sizeof(idem_line), IDEM_HEADER "%s", idempotency_key);
		idem.data = idem_line;
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, &idem);
	} else {
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, api->headers);
	}

	pace(api);
	api->requests++;
	atomic_store(&api->performing, 1);
	cc = curl_easy_perform(h);
	atomic_store(&api->performing, 0);
	if (cc == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	redact_key(api);
	r->body = api->body ? api->body : "";
	r->len = api->body_len;
	r->retry_after = api->retry_after;
	if (r->retry_after >= 0)
		api->not_before =
			time(NULL) + (r->retry_after < LONG_MAX / 2 ? r->retry_after : LONG_MAX / 2);
	r->outcome = api_classify(cc, r->status);
	metrics_request(r->outcome);
	if (r->outcome != DX_OK)
		describe_failure(api, method, path, cc, r);
	log_debug("%s %.*s: %s%ld, %zu bytes", method, MAX_SHOWN, path,
		  cc == CURLE_OK ? "HTTP " : "curl error ", cc == CURLE_OK ? r->status : (long)cc, r->len);
	return r->outcome;
}

/* Sleep up to secs, in slices of API_SLICE_MS, until the client's stop or
 * cancel flag is set; nonzero if it was. */
static int pause_for(const struct api *api, long secs)
{
	struct timespec slice = { 0, API_SLICE_MS * 1000000L };

	for (long ms = secs * 1000; ms > 0 && !stopped(api); ms -= API_SLICE_MS)
		nanosleep(&slice, NULL);
	return stopped(api);
}

enum dx_result api_get(struct api *api, const char *path, struct api_response *r, long *retries, int *fails,
		       int max_fails)
{
	enum dx_result o;
	long wait;

	for (int attempt = 0;; attempt++) {
		o = api_request(api, "GET", path, NULL, NULL, r);
		if (fails)
			*fails = o == DX_TRANSIENT ? *fails + 1 : 0;
		if (o != DX_TRANSIENT || attempt == API_GET_RETRIES || stopped(api) ||
		    (fails && *fails >= max_fails))
			return o;
		wait = backoff_ceiling(attempt, 1, API_GET_MAX_WAIT);
		if (r->retry_after > wait)
			wait = r->retry_after;
		if (wait > API_GET_MAX_WAIT) {
			size_t n = strlen(r->error);

			snprintf(r->error + n, sizeof(r->error) - n,
				 "; the server asks to wait %ld s, longer than a retry waits (%d s)", wait,
				 API_GET_MAX_WAIT);
			return o;
		}
		log_notice("%s; retrying in %ld s", r->error, wait);
		(*retries)++;
		if (pause_for(api, wait))
			return o;
	}
}

json_t *api_json(const struct api_response *r, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *j = json_loadb(r->body, r->len, JSON_ALLOW_NUL, &jerr);

	if (!j)
		snprintf(err, errlen, "invalid JSON at line %d, column %d (byte %d): %s", jerr.line,
			 jerr.column, jerr.position, jerr.text);
	return j;
}
