/* confurl.c - the checks of the URL keys (base-url, proxy) by libcurl
 *
 * Apart from conf.c so that dexsync, which never connects, need not link
 * libcurl: loading it and the thirty libraries it pulls in costs about
 * 5 ms, a tenth of a search at a million rows, on every command. */
#include "config.h"

#include <confuse.h>
#include <curl/curl.h>
#include <string.h>
#include <strings.h>

#include "conf.h"
#include "confurl.h"

/* Does u have part, and not empty? */
static int url_has(CURLU *u, CURLUPart what)
{
	char *part = NULL;
	int has = curl_url_get(u, what, &part, 0) == CURLUE_OK && part && *part;

	curl_free(part);
	return has;
}

/* Why url is not a URL written scheme://host... with one of schemes (a
 * NULL-terminated list), or NULL when it is.  A base URL (base != 0) may
 * not have a query or a fragment either: request paths are appended to it.
 * libcurl's URL API does the parsing, so what passes here is what libcurl
 * will understand. */
static const char *url_problem(const char *url, const char *const *schemes, int base)
{
	CURLU *u = curl_url();
	char *scheme = NULL;
	const char *why = NULL;
	CURLUcode rc;
	size_t i, n;

	if (!u)
		return "cannot be checked: out of memory";
	rc = curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
	if (rc == CURLUE_NO_HOST) {
		why = "has no host";
	} else if (rc != CURLUE_OK || curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
		why = "is not a URL";
	} else {
		for (i = 0; schemes[i] && strcasecmp(scheme, schemes[i]); i++)
			;
		n = strlen(scheme);
		if (!schemes[i] || strncasecmp(url, scheme, n) || strncmp(url + n, "://", 3))
			why = "has another scheme";
		else if (url[n + 3] == '/' || !url_has(u, CURLUPART_HOST))
			why = "has no host";
		else if (base && url_has(u, CURLUPART_QUERY))
			why = "has a query (?...)";
		else if (base && url_has(u, CURLUPART_FRAGMENT))
			why = "has a fragment (#...)";
	}
	curl_free(scheme);
	curl_url_cleanup(u);
	return why;
}

/* base-url: printed in the error, unlike a proxy. */
static int v_base_url(cfg_t *cfg, cfg_opt_t *opt)
{
	static const char *const schemes[] = { "http", "https", NULL };
	const char *v = cfg_opt_getnstr(opt, 0);
	const char *why = url_problem(v, schemes, 1);

	if (why) {
		cfg_error(cfg, "option '%s': '%s' %s; an http:// or https:// URL with a host is needed",
			  opt->name, conf_shown_value(v), why);
		return -1;
	}
	return 0;
}

/* The proxy is not printed: its URL may hold a password. */
static int v_proxy(cfg_t *cfg, cfg_opt_t *opt)
{
	static const char *const schemes[] = {
		"http", "https", "socks4", "socks4a", "socks5", "socks5h", NULL
	};
	const char *v = cfg_opt_getnstr(opt, 0);
	const char *why;

	if (!*v)
		return 0;
	if ((why = url_problem(v, schemes, 0))) {
		cfg_error(cfg,
			  "option '%s': the value %s; a URL such as http://proxy.example:3128 "
			  "(http, https, socks4, socks4a, socks5 or socks5h) is needed",
			  opt->name, why);
		return -1;
	}
	return 0;
}

const struct conf_check conf_url_checks[] = {
	{ "api|base-url", v_base_url },
	{ "api|proxy", v_proxy },
	{ NULL, NULL },
};
