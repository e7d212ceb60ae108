/* test_kept.c - the file of answers kept at a stop: what is saved is read
 * back the same, odd bytes included; what is not an answer is left out or
 * moved aside, never taken. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "kept.h"
#include "log.h"

static char dir[] = "/tmp/test_kept_XXXXXX";
static char path[64], bad[sizeof(path) + 4];

struct seen {
	struct kept k[4];
	char response[4][64];
	char error[4][64];
	int n;
};

/* Item 1, delivered (201): the answer most tests keep. */
#define DELIVERED_A                                                                                  \
	{                                                                                            \
		.id = 1, .key = "a", .asked = 1, .status = 201, .outcome = DX_OK, .retry_after = -1, \
		.error = ""                                                                          \
	}

static enum dx_result take(const struct kept *k, void *arg)
{
	struct seen *s = arg;

	assert_true(s->n < 4);
	s->k[s->n] = *k;
	assert_true(k->response_len < sizeof(s->response[0]));
	memcpy(s->response[s->n], k->response, k->response_len);
	snprintf(s->error[s->n], sizeof(s->error[0]), "%s", k->error);
	s->n++;
	return DX_OK;
}

static int setup(void **state)
{
	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/m.db.answers", dir);
	snprintf(bad, sizeof(bad), "%s.bad", path);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	unlink(bad);
	rmdir(dir);
	return 0;
}

static void write_file(const char *file, const char *text)
{
	FILE *f = fopen(file, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void write_text(const char *text)
{
	write_file(path, text);
}

/* The victim of a link: it still holds what it held. */
static void assert_untouched(const char *victim)
{
	char text[32] = "";
	FILE *f = fopen(victim, "r");

	assert_non_null(f);
	assert_non_null(fgets(text, sizeof(text), f));
	fclose(f);
	assert_string_equal(text, "precious");
}

static void test_saved_answers_read_back_the_same(void **state)
{
	static const char nul_answer[] = "{\"id\":\"m\\u0000\"}\0tail";
	struct kept v[3] = {
		{ .id = 17,
		  .key = "k-17",
		  .asked = 1,
		  .status = 201,
		  .outcome = DX_OK,
		  .retry_after = -1,
		  .error = "",
		  .body = "{\"conversation_id\":\"c_1\"}",
		  .response = nul_answer,
		  .response_len = sizeof(nul_answer) - 1 },
		{ .id = 18,
		  .key = "k-18",
		  .asked = 1,
		  .status = 503,
		  .outcome = DX_TRANSIENT,
		  .retry_after = 30,
		  .error = "HTTP 503",
		  .response = "\xff\xfe not UTF-8",
		  .response_len = 13 },
		{ .id = 19, .key = "k-19", .asked = 0, .outcome = DX_OK, .retry_after = -1, .error = "" },
	};
	struct seen s = { .n = 0 };
	int entries;
	struct stat st;

	(void)state;
	assert_int_equal(kept_save(path, v, 3), DX_OK);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(kept_load(path, take, &s, &entries), DX_OK);
	assert_int_equal(entries, 3);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.k[0].id, 17);
	assert_int_equal(s.k[0].asked, 1);
	assert_int_equal(s.k[0].status, 201);
	assert_int_equal(s.k[0].outcome, DX_OK);
	assert_int_equal(s.k[0].response_len, sizeof(nul_answer) - 1);
	assert_memory_equal(s.response[0], nul_answer, sizeof(nul_answer) - 1);
	/* An answer that is not UTF-8 is not JSON either: kept as none. */
	assert_int_equal(s.k[1].outcome, DX_TRANSIENT);
	assert_int_equal(s.k[1].retry_after, 30);
	assert_string_equal(s.error[1], "HTTP 503");
	assert_int_equal(s.k[1].response_len, 0);
	assert_int_equal(s.k[2].asked, 0);
	assert_int_equal(kept_remove(path), DX_OK);
	assert_int_equal(access(path, F_OK), -1);
	/* No file: no answer, no error. */
	s.n = 0;
	assert_int_equal(kept_load(path, take, &s, &entries), DX_OK);
	assert_int_equal(entries, -1);
	assert_int_equal(s.n, 0);
}

static void test_entries_that_are_not_answers_are_left_out(void **state)
{
	struct seen s = { .n = 0 };
	int entries;

	(void)state;
	write_text(
		"[{\"id\": 1, \"key\": \"k\", \"asked\": true, \"status\": 201, \"outcome\": \"maybe\","
		" \"retry_after\": -1, \"error\": \"\", \"body\": null, \"response\": \"\"},"
		" {\"id\": \"2\"}, 3,"
		" {\"id\": 4, \"key\": \"k4\", \"asked\": true, \"status\": 409, \"outcome\": \"permanent\","
		" \"retry_after\": -1, \"error\": \"HTTP 409\", \"body\": null, \"response\": null}]");
	assert_int_equal(kept_load(path, take, &s, &entries), DX_OK);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.k[0].id, 4);
	assert_int_equal(s.k[0].outcome, DX_PERMANENT);
	unlink(path);
}

static void test_a_file_that_is_not_a_list_is_moved_aside(void **state)
{
	struct seen s = { .n = 0 };
	int entries;

	(void)state;
	write_text("[{\"id\": 1, \"key\": \"trunc");
	assert_int_equal(kept_load(path, take, &s, &entries), DX_OK);
	assert_int_equal(entries, -1);
	assert_int_equal(s.n, 0);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(access(bad, F_OK), 0);
	unlink(bad);
	write_text("{\"id\": 1}");
	assert_int_equal(kept_load(path, take, &s, &entries), DX_OK);
	assert_int_equal(s.n, 0);
	assert_int_equal(access(bad, F_OK), 0);
}

static enum dx_result refuse(const struct kept *k, void *arg)
{
	(void)k;
	(*(int *)arg)++;
	return DX_DB;
}

static void test_a_refusal_stops_the_load_and_keeps_the_file(void **state)
{
	struct kept v[2] = {
		DELIVERED_A,
		{ .id = 2,
		  .key = "b",
		  .asked = 1,
		  .status = 201,
		  .outcome = DX_OK,
		  .retry_after = -1,
		  .error = "" },
	};
	int calls = 0, entries;

	(void)state;
	assert_int_equal(kept_save(path, v, 2), DX_OK);
	assert_int_equal(kept_load(path, refuse, &calls, &entries), DX_DB);
	assert_int_equal(calls, 1);
	assert_int_equal(access(path, F_OK), 0);
	unlink(path);
}

/* A link in place of the file, or of its temporary file, is never
 * followed: not read, not written through. */
static void test_links_are_not_followed(void **state)
{
	struct kept v[1] = {
		DELIVERED_A,
	};
	char victim[sizeof(path) + 8], tmp[sizeof(path) + 4];
	struct seen s = { .n = 0 };
	int entries;

	(void)state;
	snprintf(victim, sizeof(victim), "%s/victim", dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	write_file(victim, "precious");
	assert_int_equal(symlink(victim, tmp), 0);
	assert_int_equal(kept_save(path, v, 1), DX_OK);
	assert_untouched(victim);
	unlink(path);
	assert_int_equal(kept_save(victim, v, 1), DX_OK); /* a file of answers elsewhere */
	assert_int_equal(symlink(victim, path), 0);
	assert_int_equal(kept_load(path, take, &s, &entries), DX_OK);
	assert_int_equal(s.n, 0);
	unlink(path);
	unlink(tmp);
	unlink(victim);
}

static void test_the_reserve_is_made_once_and_never_through_a_link(void **state)
{
	char db[sizeof(path)], reserve[sizeof(path) + 16], victim[sizeof(path) + 8];
	struct stat st, again;

	(void)state;
	snprintf(db, sizeof(db), "%s/m.db", dir);
	snprintf(reserve, sizeof(reserve), "%s.answers-reserve", db);
	snprintf(victim, sizeof(victim), "%s/victim", dir);
	assert_int_equal(kept_reserve(db), DX_OK);
	assert_int_equal(lstat(reserve, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_size, 1 << 20);
	assert_true(st.st_blocks * 512 >= st.st_size); /* written, not a hole */
	assert_int_equal(kept_reserve(db), DX_OK);     /* there: left as it is */
	assert_int_equal(lstat(reserve, &again), 0);
	assert_int_equal(again.st_ino, st.st_ino);
	unlink(reserve);
	write_file(victim, "precious");
	assert_int_equal(symlink(victim, reserve), 0);
	assert_int_equal(kept_reserve(db), DX_OK); /* the link is replaced */
	assert_int_equal(lstat(reserve, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_untouched(victim);
	/* Another mode (or owner) than its own: made again. */
	assert_int_equal(lstat(reserve, &st), 0);
	assert_int_equal(chmod(reserve, 0644), 0);
	assert_int_equal(kept_reserve(db), DX_OK);
	assert_int_equal(lstat(reserve, &again), 0);
	assert_int_equal(again.st_mode & 0777, 0600);
	assert_true(again.st_ino != st.st_ino);
	unlink(reserve);
	unlink(victim);
}

static void test_answers_taken_become_the_reserve(void **state)
{
	struct kept v[1] = {
		DELIVERED_A,
	};
	char reserve[sizeof(path) + 16];
	struct stat answers, st;

	(void)state;
	snprintf(reserve, sizeof(reserve), "%s-reserve", path);
	assert_int_equal(kept_save(path, v, 1), DX_OK);
	assert_int_equal(stat(path, &answers), 0);
	assert_int_equal(kept_remove(path), DX_OK);
	assert_int_equal(access(path, F_OK), -1);
	/* Its blocks are kept for the stop: the disk may still be full. */
	assert_int_equal(lstat(reserve, &st), 0);
	assert_int_equal(st.st_ino, answers.st_ino);
	unlink(reserve);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_saved_answers_read_back_the_same),
		cmocka_unit_test(test_entries_that_are_not_answers_are_left_out),
		cmocka_unit_test(test_a_file_that_is_not_a_list_is_moved_aside),
		cmocka_unit_test(test_a_refusal_stops_the_load_and_keeps_the_file),
		cmocka_unit_test(test_links_are_not_followed),
		cmocka_unit_test(test_the_reserve_is_made_once_and_never_through_a_link),
		cmocka_unit_test(test_answers_taken_become_the_reserve),
	};

	log_open("test_kept", LOG_USER, 0, 0);
	return cmocka_run_group_tests(tests, setup, teardown);
}
