/* test_log.c - an error logged again and again is counted, not written */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

/* Run what, with standard error going to a file, and return what it wrote
 * (to free), log_close's lines included. */
static char *stderr_of(void (*what)(void))
{
	char path[] = "/tmp/test_log.XXXXXX";
	int fd = mkstemp(path), saved = dup(2);
	char *text = calloc(1, 1 << 16);
	FILE *f;

	assert_true(fd >= 0 && saved >= 0 && text);
	unlink(path);
	fflush(stderr);
	dup2(fd, 2);
	log_open("t", LOG_DAEMON, 1, 0);
	what();
	log_close();
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	lseek(fd, 0, SEEK_SET);
	assert_true((f = fdopen(fd, "r")) != NULL);
	assert_true(fread(text, 1, (1 << 16) - 1, f) < (1 << 16) - 1);
	fclose(f);
	return text;
}

static int count(const char *text, const char *needle)
{
	int n = 0;

	for (const char *p = text; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

/* How many times what wrote needle to standard error. */
static int written(void (*what)(void), const char *needle)
{
	char *text = stderr_of(what);
	int n = count(text, needle);

	free(text);
	return n;
}

/* Two threads' errors taking turns, a notice between them now and then. */
static void alternating(void)
{
	for (int i = 0; i < 50; i++) {
		log_err("database d: database or disk is full (in COMMIT)");
		log_err("outbox: database d: database or disk is full (in UPDATE outbox)");
		if (i % 10 == 0)
			log_notice("a notice");
	}
}

static void test_two_errors_taking_turns_are_each_written_once(void **state)
{
	char *text = stderr_of(alternating);

	(void)state;
	assert_int_equal(count(text, "t: error: database d: database or disk is full (in COMMIT)\n"), 1);
	assert_int_equal(count(text, "t: error: outbox: database d:"), 1);
	assert_int_equal(count(text, "t: notice: a notice\n"), 5);
	assert_int_equal(count(text,
			       "(the error \"database d: database or disk is full (in COMMIT)\" came 49 more "
			       "times)"),
			 1);
	assert_int_equal(count(text,
			       "(the error \"outbox: database d: database or disk is full (in UPDATE "
			       "outbox)\" came 49 more times)"),
			 1);
	free(text);
}

/* More different lines than are remembered, in turn: none is held back. */
static void five_in_turn(void)
{
	for (int i = 0; i < 10; i++)
		for (int k = 0; k < 5; k++)
			log_warning("warning %d", k);
}

static void test_lines_beyond_those_remembered_are_all_written(void **state)
{
	char *text = stderr_of(five_in_turn);

	(void)state;
	assert_int_equal(count(text, "t: warning: warning "), 50);
	assert_int_equal(count(text, "more time"), 0);
	free(text);
}

/* Notices and info lines are never counted. */
static void notices(void)
{
	for (int i = 0; i < 3; i++)
		log_notice("the same notice");
}

static void test_notices_are_always_written(void **state)
{
	(void)state;
	assert_int_equal(written(notices, "t: notice: the same notice\n"), 3);
}

/* A reload forgets: its refusal is written each time it is asked for. */
static void reloads(void)
{
	for (int i = 0; i < 3; i++) {
		log_repeats_forget();
		log_err("c.conf is invalid; keeping the running configuration");
	}
}

static void test_forgotten_repeats_are_written_again(void **state)
{
	(void)state;
	assert_int_equal(written(reloads, "t: error: c.conf is invalid; keeping the running configuration\n"),
			 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_two_errors_taking_turns_are_each_written_once),
		cmocka_unit_test(test_lines_beyond_those_remembered_are_all_written),
		cmocka_unit_test(test_notices_are_always_written),
		cmocka_unit_test(test_forgotten_repeats_are_written_again),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
