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
#include "confurl.h"
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
	return conf_load(write_file("t.conf", text, 0600), conf_url_checks, c);
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
	/* at most ten years, so that sums of durations cannot overflow */
	assert_int_equal(conf_parse_duration("3650d", &v), 0);
	assert_int_equal(v, CONF_DURATION_MAX);
	assert_int_equal(conf_parse_duration("3651d", &v), -1);
	assert_int_equal(conf_parse_duration("315360001", &v), -1);
	assert_int_equal(conf_parse_duration("87601h", &v), -1);
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
			      "outbox { min-backoff = 1s max-backoff = 1d max-age = 12h }\n",
			      &c),
			 0);
	assert_string_equal(c.database, "/x/m.db");
	assert_int_equal(c.log_level, LOG_DEBUG);
	assert_int_equal(c.syslog_facility, LOG_LOCAL3);
	assert_string_equal(c.base_url, "http://127.0.0.1:9/v1"); /* slash trimmed */
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
		"database = \"\"\n",
		"api { base-url = \"http://\" }\n",
		"api { base-url = \"https:///v1\" }\n",
		"api { base-url = \"https://h/v1?page=2\" }\n",
		"api { base-url = \"https//h/v1\" }\n",
		"api { proxy = \"junk\" }\n",
		"api { proxy = \"gopher://h\" }\n",
		"api { ca-file = \"/nonexistent/ca.pem\" }\n",
		"api { ca-file = \"/\" }\n",
		"api { timeout = 2d }\n",
		"api { connect-timeout = 0 }\n",
		"api { api-key = \"a\\r\\nX-Injected: 1\" }\n",
		"api { api-key = \"a b\" }\n",
		"sync { interval = 3651d }\n",
		"sync { max-details = 1000001 }\n",
	};
	struct conf c;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (load(bad[i], &c) != -1)
			fail_msg("accepted: %s", bad[i]);
	}
	assert_int_equal(conf_load("/nonexistent/dexsyncd.conf", conf_url_checks, &c), -1);
	/* Without the URL checks (dexsync's way), the URLs pass as written;
	 * every other key is still checked. */
	const char *path = write_file("t.conf", "api { base-url = \"ftp://x\" proxy = \"junk\" }\n", 0600);
	assert_int_equal(conf_load(path, NULL, &c), 0);
	assert_string_equal(c.base_url, "ftp://x");
	conf_free(&c);
	path = write_file("t.conf", "api { base-url = \"ftp://x\" timeout = 2d }\n", 0600);
	assert_int_equal(conf_load(path, NULL, &c), -1);
	/* libconfuse's scanner is global: a file cut short in a string or a
	 * comment leaves nothing behind for the next one (a reload after a
	 * refused reload).  An open comment at the end is accepted. */
	static const char *cut[] = { "database = \"x\\", "database = \"x", "/* x", "database = '" };
	for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
		if (load(cut[i], &c) == 0)
			conf_free(&c);
		assert_int_equal(load("database = \"/a b\"\nlog-level = 'debug'\n", &c), 0);
		assert_string_equal(c.database, "/a b");
		assert_int_equal(c.log_level, LOG_DEBUG);
		conf_free(&c);
	}
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

/* Paths in the config are made absolute against the directory the
 * program started in, even after it moved elsewhere (as daemon() does). */
static void test_relative_paths(void **state)
{
	char start[PATH_MAX], want[PATH_MAX + 16], *abs;
	struct conf c;

	(void)state;
	assert_non_null(getcwd(start, sizeof(start)));
	assert_int_equal(load("database = \"m.db\"\napi { api-key-file = \"./k\" ca-file = \"\" }\n", &c), 0);
	snprintf(want, sizeof(want), "%s/m.db", strcmp(start, "/") ? start : "");
	assert_string_equal(c.database, want);
	snprintf(want, sizeof(want), "%s/k", strcmp(start, "/") ? start : "");
	assert_string_equal(c.api_key_file, want);
	assert_string_equal(c.ca_file, "");
	conf_free(&c);

	assert_int_equal(chdir(dir), 0);
	abs = conf_abspath("x/y");
	snprintf(want, sizeof(want), "%s/x/y", strcmp(start, "/") ? start : "");
	assert_string_equal(abs, want);
	free(abs);
	abs = conf_abspath("/etc/x");
	assert_string_equal(abs, "/etc/x");
	free(abs);
	/* a config read after the move: its relative names still mean start */
	assert_int_equal(load("database = \"m.db\"\n", &c), 0);
	snprintf(want, sizeof(want), "%s/m.db", strcmp(start, "/") ? start : "");
	assert_string_equal(c.database, want);
	conf_free(&c);
	assert_int_equal(chdir(start), 0);
}

/* What libconfuse must never see: it would exit on a read error and stop
 * quietly at a NUL byte.  conf_load() refuses, and the process goes on. */
static void test_not_a_config_file(void **state)
{
	char path[PATH_MAX];
	struct conf c;
	FILE *f;

	(void)state;
	assert_int_equal(conf_load(dir, conf_url_checks, &c), -1);
	snprintf(path, sizeof(path), "%s/nul.conf", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fwrite("log-level = info\n\0\n", 1, 20, f);
	fclose(f);
	assert_int_equal(conf_load(path, conf_url_checks, &c), -1);
	snprintf(path, sizeof(path), "%s/fifo.conf", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(conf_load(path, conf_url_checks, &c), -1); /* at once, no writer needed */
	snprintf(path, sizeof(path), "%s/big.conf", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	for (int i = 0; i < 70000; i++)
		fputs("# a comment line\n", f);
	fclose(f);
	assert_int_equal(conf_load(path, conf_url_checks, &c), -1);
	/* a config just under the limit is fine */
	f = fopen(path, "w");
	assert_non_null(f);
	for (int i = 0; i < 60000; i++)
		fputs("# a comment line\n", f);
	fputs("log-level = debug\n", f);
	fclose(f);
	assert_int_equal(conf_load(path, conf_url_checks, &c), 0);
	assert_int_equal(c.log_level, LOG_DEBUG);
	conf_free(&c);
}

#define KEY_FROM(text) key_from(text, sizeof(text) - 1)

/* Load a config naming key file kf (written with text) and read the key. */
static char *key_from(const char *text, size_t len)
{
	char conf[512], *key;
	struct conf c;
	FILE *f;

	f = fopen(write_file("kf", "", 0600), "w");
	assert_non_null(f);
	fwrite(text, 1, len, f);
	fclose(f);
	snprintf(conf, sizeof(conf), "api { api-key-file = \"%s/kf\" }\n", dir);
	assert_int_equal(load(conf, &c), 0);
	key = conf_api_key(&c);
	conf_free(&c);
	return key;
}

/* The key goes into "Authorization: Bearer KEY": a line break or a control
 * character in it would write other headers. */
static void test_key_content(void **state)
{
	char conf[PATH_MAX + 64], path[PATH_MAX], *key;
	struct conf c;

	(void)state;
	unsetenv("CREDENTIALS_DIRECTORY");
	unsetenv("DEXRA_API_KEY");
	key = KEY_FROM("  k3y-ok\r\n\n");
	assert_string_equal(key, "k3y-ok");
	conf_key_free(key);
	assert_null(KEY_FROM("abc\r\nX-Injected: 1\n"));
	assert_null(KEY_FROM("abc\nsecond\n"));
	assert_null(KEY_FROM("abc\0def\n"));
	assert_null(
		KEY_FROM("abc\x01"
			 "def\n"));
	assert_null(KEY_FROM("abc def\n"));
	assert_null(KEY_FROM("\xc3\xa9\n"));
	assert_null(KEY_FROM(" \n"));

	/* a FIFO is refused at once, a directory too */
	snprintf(path, sizeof(path), "%s/key-fifo", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	snprintf(conf, sizeof(conf), "api { api-key-file = \"%s\" }\n", path);
	assert_int_equal(load(conf, &c), 0);
	assert_null(conf_api_key(&c));
	conf_free(&c);
	snprintf(conf, sizeof(conf), "api { api-key-file = \"%s\" }\n", dir);
	assert_int_equal(load(conf, &c), 0);
	assert_null(conf_api_key(&c));
	conf_free(&c);

	/* the environment is checked the same way */
	assert_int_equal(load("api { api-key-file = \"\" }\n", &c), 0);
	setenv("DEXRA_API_KEY", "abc\r\nX-Injected: 1", 1);
	assert_null(conf_api_key(&c));
	setenv("DEXRA_API_KEY", "abc", 1);
	key = conf_api_key(&c);
	assert_string_equal(key, "abc");
	conf_key_free(key);
	unsetenv("DEXRA_API_KEY");
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
		cmocka_unit_test(test_relative_paths),
		cmocka_unit_test(test_not_a_config_file),
		cmocka_unit_test(test_key_content),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
