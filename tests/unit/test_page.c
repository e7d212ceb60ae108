/* test_page.c - parsing list pages and mapping items to rows */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "page.h"

static int parse(const char *body, struct page *p, char *err)
{
	return page_parse(body, strlen(body), p, err, 256);
}

static void test_page_cursor(void **state)
{
	struct page p;
	char err[256];

	(void)state;
	assert_int_equal(parse("{\"data\":[],\"meta\":{\"total\":154,\"next_cursor\":\"abc\"}}", &p, err), 0);
	assert_string_equal(p.next_cursor, "abc");
	assert_int_equal(p.total, 154);
	page_free(&p);
	/* The three ends of a walk: null, empty, absent. */
	assert_int_equal(parse("{\"data\":[],\"meta\":{\"next_cursor\":null}}", &p, err), 0);
	assert_null(p.next_cursor);
	assert_int_equal(p.total, -1);
	page_free(&p);
	assert_int_equal(parse("{\"data\":[],\"meta\":{\"next_cursor\":\"\"}}", &p, err), 0);
	assert_null(p.next_cursor);
	page_free(&p);
	assert_int_equal(parse("{\"data\":[]}", &p, err), 0);
	assert_null(p.next_cursor);
	page_free(&p);
}

static void test_page_refused(void **state)
{
	struct page p;
	char err[256];

	(void)state;
	assert_int_equal(parse("{\"data\":[", &p, err), -1);
	assert_non_null(strstr(err, "invalid JSON at line 1"));
	assert_int_equal(parse("[1,2]", &p, err), -1);
	assert_string_equal(err, "page has no \"data\" array");
	assert_int_equal(parse("{\"data\":{}}", &p, err), -1);
	assert_int_equal(parse("{\"data\":[],\"meta\":{\"next_cursor\":5}}", &p, err), -1);
	assert_string_equal(err, "meta.next_cursor is neither a string nor null");
	assert_int_equal(parse("{\"data\":[],\"meta\":7}", &p, err), -1);
	assert_int_equal(parse("{\"data\":[\"\xff\"]}", &p, err), -1);
	assert_non_null(strstr(err, "invalid JSON"));
	assert_int_equal(parse("", &p, err), -1);
}

static void test_row_map(void **state)
{
	struct page p;
	struct conv_row row;
	char err[256];

	(void)state;
	assert_int_equal(parse("{\"data\":[{\"id\":\"conv_1\",\"status\":\"open\",\"subject\":\"Billing\","
			       "\"created_at\":\"2023-10-25T10:00:00Z\",\"user_id\":\"u_1\","
			       "\"last_message\":{\"id\":\"msg_1\",\"text\":\"Hello\"}}]}", &p, err), 0);
	assert_int_equal(conv_row_map(json_array_get(p.data, 0), &row, err, sizeof(err)), 0);
	assert_string_equal(row.id, "conv_1");
	assert_string_equal(row.status, "open");
	assert_string_equal(row.subject, "Billing");
	assert_string_equal(row.created_at, "2023-10-25T10:00:00Z");
	assert_string_equal(row.user_id, "u_1");
	assert_string_equal(row.last_message_id, "msg_1");
	assert_string_equal(row.last_message_text, "Hello");
	page_free(&p);
}

static void test_row_wrong_types(void **state)
{
	struct page p;
	struct conv_row row;
	char err[256];

	(void)state;
	assert_int_equal(parse("{\"data\":[{\"id\":\"c\",\"status\":1,\"subject\":null,"
			       "\"user\":{\"id\":\"u_9\"},\"last_message\":\"x\"},"
			       "{\"status\":\"open\"}, {\"id\":42}, {\"id\":\"\"}, 7]}", &p, err), 0);
	assert_int_equal(conv_row_map(json_array_get(p.data, 0), &row, err, sizeof(err)), 0);
	assert_null(row.status);
	assert_null(row.subject);
	assert_null(row.created_at);
	assert_string_equal(row.user_id, "u_9");
	assert_null(row.last_message);
	assert_null(row.last_message_id);
	assert_int_equal(conv_row_map(json_array_get(p.data, 1), &row, err, sizeof(err)), -1);
	assert_string_equal(err, "item has no string \"id\"");
	assert_int_equal(conv_row_map(json_array_get(p.data, 2), &row, err, sizeof(err)), -1);
	assert_int_equal(conv_row_map(json_array_get(p.data, 3), &row, err, sizeof(err)), -1);
	assert_int_equal(conv_row_map(json_array_get(p.data, 4), &row, err, sizeof(err)), -1);
	assert_string_equal(err, "item is not an object");
	page_free(&p);
}

static void assert_json(const struct page *p, size_t off, size_t len, const char *want)
{
	assert_int_equal(len, strlen(want));
	assert_memory_equal(p->json + off, want, len);
}

/* Every item rendered compact whatever its type, and each last_message
 * object, from a buffer that must grow many times. */
static void test_dump(void **state)
{
	struct page p;
	char err[256];

	(void)state;
	assert_int_equal(parse("{\"data\": [ {\"id\": \"c1\", \"s\": \"a\\nb \\\"q\\\"\","
			       " \"last_message\": {\"id\": \"m1\", \"text\": \"h\u00e9\"}},"
			       " 7, null, {\"last_message\": \"no\"} ]}", &p, err), 0);
	assert_int_equal(page_dump(&p, 1), 0);
	assert_json(&p, p.at[0].off, p.at[0].len,
		    "{\"id\":\"c1\",\"s\":\"a\\nb \\\"q\\\"\",\"last_message\":{\"id\":\"m1\",\"text\":\"h\xc3\xa9\"}}");
	assert_json(&p, p.at[0].msg_off, p.at[0].msg_len, "{\"id\":\"m1\",\"text\":\"h\xc3\xa9\"}");
	assert_json(&p, p.at[1].off, p.at[1].len, "7");
	assert_json(&p, p.at[2].off, p.at[2].len, "null");
	assert_json(&p, p.at[3].off, p.at[3].len, "{\"last_message\":\"no\"}");
	assert_int_equal(p.at[1].msg_len, 0);
	assert_int_equal(p.at[3].msg_len, 0);
	page_free(&p);
	assert_int_equal(parse("{\"data\": []}", &p, err), 0);
	assert_int_equal(page_dump(&p, 0), 0);
	page_free(&p);
}

static void test_participant(void **state)
{
	json_t *a = json_pack("{s:s}", "id", "u_1");
	json_t *b = json_pack("{s:s}", "user_id", "u_2");
	json_t *c = json_pack("{s:i}", "id", 3);

	(void)state;
	assert_string_equal(participant_user_id(a), "u_1");
	assert_string_equal(participant_user_id(b), "u_2");
	assert_null(participant_user_id(c));
	json_decref(a);
	json_decref(b);
	json_decref(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_page_cursor),
		cmocka_unit_test(test_page_refused),
		cmocka_unit_test(test_row_map),
		cmocka_unit_test(test_row_wrong_types),
		cmocka_unit_test(test_dump),
		cmocka_unit_test(test_participant),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
