/* test_conf.c - configuration parsing, durations, the API key sources */
#include "config.h"

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf.h"
#include "log.h"

static char dir[] = "/tmp/dexsync-test-conf-XXXXXX";

/* Write text to dir/name and return the path (static buffer). */
static const char *write_file(const char *name, const char *text, mode_t mode)
{
	static char path[PATH_MAX];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
	return path;
}

/* Load text as a config; returns conf_load's result. */
static int load(const char *text, struct conf *c)
{
	return conf_load(write_file("t.conf", text, 0600), c);
}

static void test_duration(void **state)
{
	long v;

	(void)state;
	assert_int_equal(conf_parse_duration("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(conf_parse_duration("45", &v), 0);
	assert_int_equal(v, 45);
	assert_int_equal(conf_parse_duration("10s", &v), 0);
	assert_int_equal(v, 10);
	assert_int_equal(conf_parse_duration("5m", &v), 0);
	assert_int_equal(v, 300);
	assert_int_equal(conf_parse_duration("1h", &v), 0);
	assert_int_equal(v, 3600);
	assert_int_equal(conf_parse_duration("3d", &v), 0);
	assert_int_equal(v, 259200);
	assert_int_equal(conf_parse_duration("-5s", &v), -1);
	assert_int_equal(conf_parse_duration("", &v), -1);
	assert_int_equal(conf_parse_duration("5x", &v), -1);
	assert_int_equal(conf_parse_duration("5mm", &v), -1);
	assert_int_equal(conf_parse_duration("m", &v), -1);
	assert_int_equal(conf_parse_duration(" 5", &v), -1);
	assert_int_equal(conf_parse_duration("99999999999999999999", &v), -1);
	assert_int_equal(conf_parse_duration("9223372036854775807d", &v), -1);
}

static void test_defaults(void **state)
{
	struct conf c;

	(void)state;
	assert_int_equal(load("", &c), 0);
	assert_string_equal(c.base_url, "https://api.dexra.net/v1");
	assert_int_equal(c.log_level, LOG_INFO);
	assert_int_equal(c.syslog_facility, LOG_DAEMON);
	assert_int_equal(c.connect_timeout, 10);
	assert_int_equal(c.timeout, 60);
	assert_int_equal(c.max_rate, 10);
	assert_int_equal(c.sync_interval, 300);
	assert_int_equal(c.page_size, 100);
	assert_int_equal(c.nstatus, 0);
	assert_true(c.fetch_details);
	assert_int_equal(c.max_details, 1000);
	assert_int_equal(c.poll_interval, 2);
	assert_int_equal(c.max_attempts, 12);
	assert_int_equal(c.min_backoff, 10);
	assert_int_equal(c.max_backoff, 3600);
	assert_int_equal(c.max_age, 3 * 86400);
	assert_false(c.api_key_file_set);
	assert_null(c.api_key);
	conf_free(&c);
}

static void test_values(void **state)
{
	struct conf c;

	(void)state;
	assert_int_equal(load("database = \"/x/m.db\"\nlog-level = debug\nsyslog-facility = local3\n"
			      "api { base-url = \"http://127.0.0.1:9/v1/\" timeout = 2m }\n"
			      "sync { interval = 1h page-size = 7 status = {\"open\", \"snoozed\"} "
			      "fetch-details = false }\n"
			      "outbox { min-backoff = 1s max-backoff = 1d max-age = 12h }\n", &c), 0);
	assert_string_equal(c.database, "/x/m.db");
	assert_int_equal(c.log_level, LOG_DEBUG);
	assert_int_equal(c.syslog_facility, LOG_LOCAL3);
	assert_string_equal(c.base_url, "http://127.0.0.1:9/v1");   /* slash trimmed */
	assert_int_equal(c.timeout, 120);
	assert_int_equal(c.sync_interval, 3600);
	assert_int_equal(c.page_size, 7);
	assert_int_equal(c.nstatus, 2);
	assert_string_equal(c.status[1], "snoozed");
	assert_false(c.fetch_details);
	assert_int_equal(c.max_backoff, 86400);
	assert_int_equal(c.max_age, 43200);
	conf_free(&c);
}

static void test_refused(void **state)
{
	static const char *bad[] = {
		"no-such-key = 1\n",
		"sync { page-size = 0 }\n",
		"sync { page-size = 101 }\n",
		"sync { page-size = \"many\" }\n",
		"sync { interval = -5 }\n",
		"sync { interval = 0 }\n",
		"sync { interval = 5 minutes }\n",
		"sync { status = {\"pending\"} }\n",
		"sync { fetch-details = maybe }\n",
		"log-level = loud\n",
		"syslog-facility = kern\n",
		"api { base-url = \"ftp://x\" }\n",
		"api { max-rate = -1 }\n",
		"outbox { min-backoff = 2h max-backoff = 1h }\n",
		"outbox { max-attempts = 0 }\n",
		"api }\n",
		"database = \"unterminated\n",
	};
	struct conf c;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (load(bad[i], &c) != -1)
			fail_msg("accepted: %s", bad[i]);
	}
	assert_int_equal(conf_load("/nonexistent/dexsyncd.conf", &c), -1);
}

static void test_key_sources(void **state)
{
	struct conf c;
	char *key, text[512];
	const char *kf;

	(void)state;
	unsetenv("CREDENTIALS_DIRECTORY");
	unsetenv("DEXRA_API_KEY");

	/* An explicit key file that is missing is an error ... */
	snprintf(text, sizeof(text), "api { api-key-file = \"%s/missing\" api-key = \"inline\" }\n", dir);
	assert_int_equal(load(text, &c), 0);
	assert_null(conf_api_key(&c));
	conf_free(&c);

	/* ... the default one is skipped: the config's own key is used. */
	assert_int_equal(load("api { api-key = \"inline\" }\n", &c), 0);
	free(c.api_key_file);
	c.api_key_file = strdup("/nonexistent/api-key");
	key = conf_api_key(&c);
	assert_string_equal(key, "inline");
	conf_key_free(key);

	setenv("DEXRA_API_KEY", "fromenv", 1);
	key = conf_api_key(&c);
	assert_string_equal(key, "fromenv");
	conf_key_free(key);
	conf_free(&c);

	/* A key file wins over the environment; trailing newline trimmed. */
	kf = write_file("key", "filekey \n", 0600);
	snprintf(text, sizeof(text), "api { api-key-file = \"%s\" }\n", kf);
	assert_int_equal(load(text, &c), 0);
	key = conf_api_key(&c);
	assert_string_equal(key, "filekey");
	conf_key_free(key);

	/* The systemd credential wins over everything. */
	write_file("api-key", "credkey\n", 0400);
	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	key = conf_api_key(&c);
	assert_string_equal(key, "credkey");
	conf_key_free(key);
	conf_free(&c);
	unsetenv("CREDENTIALS_DIRECTORY");

	/* An empty key file is an error, not an empty key. */
	kf = write_file("empty", "\n", 0600);
	snprintf(text, sizeof(text), "api { api-key-file = \"%s\" }\n", kf);
	assert_int_equal(load(text, &c), 0);
	assert_null(conf_api_key(&c));
	conf_free(&c);

	/* No key anywhere. */
	unsetenv("DEXRA_API_KEY");
	assert_int_equal(load("", &c), 0);
	free(c.api_key_file);
	c.api_key_file = strdup("/nonexistent/api-key");
	assert_null(conf_api_key(&c));
	conf_free(&c);
}

static int setup(void **state)
{
	(void)state;
	log_open("test_conf", LOG_USER, 0, 0);
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_key_sources),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
