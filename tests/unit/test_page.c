/* test_page.c - parsing list pages and mapping items to rows */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "page.h"

static enum dx_result parse(const char *body, struct page *p, char *err)
{
	return page_parse(body, strlen(body), p, err, 256);
}

static void test_page_cursor(void **state)
{
	struct page p;
	char err[256];

	(void)state;
	assert_int_equal(parse("{\"data\":[],\"meta\":{\"total\":154,\"next_cursor\":\"abc\"}}", &p, err), DX_OK);
	assert_string_equal(p.next_cursor, "abc");
	assert_int_equal(p.total, 154);
	page_free(&p);
	/* The three ends of a walk: null, empty, absent. */
	assert_int_equal(parse("{\"data\":[],\"meta\":{\"next_cursor\":null}}", &p, err), DX_OK);
	assert_null(p.next_cursor);
	assert_int_equal(p.total, -1);
	page_free(&p);
	assert_int_equal(parse("{\"data\":[],\"meta\":{\"next_cursor\":\"\"}}", &p, err), DX_OK);
	assert_null(p.next_cursor);
	page_free(&p);
	assert_int_equal(parse("{\"data\":[]}", &p, err), DX_OK);
	assert_null(p.next_cursor);
	page_free(&p);
}

static void test_page_refused(void **state)
{
	struct page p;
	char err[256];

	(void)state;
	assert_int_equal(parse("{\"data\":[", &p, err), DX_BAD_ANSWER);
	assert_non_null(strstr(err, "invalid JSON at line 1"));
	assert_int_equal(parse("[1,2]", &p, err), DX_BAD_ANSWER);
	assert_string_equal(err, "page has no \"data\" array");
	assert_int_equal(parse("{\"data\":{}}", &p, err), DX_BAD_ANSWER);
	assert_int_equal(parse("{\"data\":[],\"meta\":{\"next_cursor\":5}}", &p, err), DX_BAD_ANSWER);
	assert_string_equal(err, "meta.next_cursor is neither a string nor null");
	assert_int_equal(parse("{\"data\":[],\"meta\":7}", &p, err), DX_BAD_ANSWER);
	assert_int_equal(parse("{\"data\":[\"\xff\"]}", &p, err), DX_BAD_ANSWER);
	assert_non_null(strstr(err, "invalid JSON"));
	assert_int_equal(parse("", &p, err), DX_BAD_ANSWER);
}

static void test_row_map(void **state)
{
	struct page p;
	const struct conv_row *row;
	char err[256];

	(void)state;
	assert_int_equal(parse("{\"data\":[{\"id\":\"conv_1\",\"status\":\"open\",\"subject\":\"Billing\","
			       "\"created_at\":\"2023-10-25T10:00:00Z\",\"user_id\":\"u_1\","
			       "\"last_message\":{\"id\":\"msg_1\",\"text\":\"Hello\"}}]}", &p, err), DX_OK);
	assert_int_equal(page_rows(&p, 1), 0);
	/* The tree is gone: the rows live on their own. */
	assert_null(p.root);
	assert_int_equal(p.nrows, 1);
	row = &p.rows[0];
	assert_string_equal(row->id, "conv_1");
	assert_null(row->skip);
	assert_string_equal(row->status, "open");
	assert_string_equal(row->subject, "Billing");
	assert_string_equal(row->created_at, "2023-10-25T10:00:00Z");
	assert_string_equal(row->user_id, "u_1");
	assert_string_equal(row->last_message_id, "msg_1");
	assert_string_equal(row->last_message_text, "Hello");
	page_free(&p);
}

static void test_row_wrong_types(void **state)
{
	struct page p;
	char err[256];

	(void)state;
	assert_int_equal(parse("{\"data\":[{\"id\":\"c\",\"status\":1,\"subject\":null,"
			       "\"user\":{\"id\":\"u_9\"},\"last_message\":\"x\"},"
			       "{\"status\":\"open\"}, {\"id\":42}, {\"id\":\"\"}, 7]}", &p, err), DX_OK);
	assert_int_equal(page_rows(&p, 1), 0);
	assert_int_equal(p.nrows, 5);
	assert_string_equal(p.rows[0].id, "c");
	assert_null(p.rows[0].status);
	assert_null(p.rows[0].subject);
	assert_null(p.rows[0].created_at);
	assert_string_equal(p.rows[0].user_id, "u_9");
	assert_null(p.rows[0].message_json);
	assert_null(p.rows[0].last_message_id);
	for (int i = 1; i < 4; i++) {
		assert_null(p.rows[i].id);
		assert_string_equal(p.rows[i].skip, "item has no string \"id\"");
	}
	assert_null(p.rows[4].id);
	assert_string_equal(p.rows[4].skip, "item is not an object");
	page_free(&p);
}

static void assert_json(const char *json, size_t len, const char *want)
{
	assert_int_equal(len, strlen(want));
	assert_memory_equal(json, want, len);
}

/* Every item rendered compact, and each last_message object, in memory
 * that must grow many times (items larger than the page's first chunk). */
static void test_rows_json(void **state)
{
	struct page p;
	char err[256], body[16384];
	int n;

	(void)state;
	n = snprintf(body, sizeof(body), "{\"data\": [ {\"id\": \"c1\", \"s\": \"a\\nb \\\"q\\\"\","
		     " \"last_message\": {\"id\": \"m1\", \"text\": \"h\u00e9\"}},"
		     " {\"last_message\": \"no\", \"id\": \"c2\"}");
	for (int i = 0; i < 40; i++)
		n += snprintf(body + n, sizeof(body) - (size_t)n,
			      ", {\"id\": \"c%d\", \"pad\": \"%0300d\"}", i + 3, i);
	snprintf(body + n, sizeof(body) - (size_t)n, "]}");
	assert_int_equal(parse(body, &p, err), DX_OK);
	p.body_len = 16;        /* as if the page were small: chunks of 1 KB */
	assert_int_equal(page_rows(&p, 1), 0);
	assert_int_equal(p.nrows, 42);
	assert_json(p.rows[0].json, p.rows[0].json_len,
		    "{\"id\":\"c1\",\"s\":\"a\\nb \\\"q\\\"\",\"last_message\":{\"id\":\"m1\",\"text\":\"h\xc3\xa9\"}}");
	assert_json(p.rows[0].message_json, p.rows[0].message_json_len,
		    "{\"id\":\"m1\",\"text\":\"h\xc3\xa9\"}");
	assert_json(p.rows[1].json, p.rows[1].json_len, "{\"last_message\":\"no\",\"id\":\"c2\"}");
	assert_null(p.rows[1].message_json);
	for (int i = 2; i < 42; i++) {
		char want[400];

		snprintf(want, sizeof(want), "{\"id\":\"c%d\",\"pad\":\"%0300d\"}", i + 1, i - 2);
		assert_json(p.rows[i].json, p.rows[i].json_len, want);
		snprintf(want, sizeof(want), "c%d", i + 1);
		assert_string_equal(p.rows[i].id, want);
	}
	page_free(&p);
	assert_int_equal(parse("{\"data\": []}", &p, err), DX_OK);
	assert_int_equal(page_rows(&p, 1), 0);
	assert_int_equal(p.nrows, 0);
	page_free(&p);
	/* Not self-contained: the tree stays, and last_message points into it. */
	assert_int_equal(parse(body, &p, err), DX_OK);
	assert_int_equal(page_rows(&p, 0), 0);
	assert_non_null(p.root);
	assert_null(p.rows[0].message_json);
	assert_ptr_equal(p.rows[0].last_message, json_object_get(json_array_get(p.data, 0), "last_message"));
	assert_null(p.rows[1].last_message);
	assert_json(p.rows[0].json, p.rows[0].json_len,
		    "{\"id\":\"c1\",\"s\":\"a\\nb \\\"q\\\"\",\"last_message\":{\"id\":\"m1\",\"text\":\"h\xc3\xa9\"}}");
	assert_string_equal(p.rows[0].last_message_text, "h\xc3\xa9");
	page_free(&p);
}

static void test_participant(void **state)
{
	json_t *a = json_pack("{s:s}", "id", "u_1");
	json_t *b = json_pack("{s:s}", "user_id", "u_2");
	json_t *c = json_pack("{s:i}", "id", 3);
	json_t *d = json_pack("{s:s%}", "id", "u\0x", (size_t)3);
	size_t len;

	(void)state;
	assert_string_equal(participant_user_id(a, &len), "u_1");
	assert_int_equal(len, 3);
	assert_string_equal(participant_user_id(b, &len), "u_2");
	assert_null(participant_user_id(c, &len));
	assert_memory_equal(participant_user_id(d, &len), "u\0x", 3);
	assert_int_equal(len, 3);
	json_decref(a);
	json_decref(b);
	json_decref(c);
	json_decref(d);
}

/* \u0000 is valid JSON: the page is taken, every string kept whole with its
 * length, and the item's JSON keeps the escape.  A cursor holding one could
 * not be sent back whole: refused by name. */
static void test_page_nul(void **state)
{
	static const char body[] =
		"{\"data\":[{\"id\":\"c\\u0000d\",\"status\":\"open\",\"subject\":\"a\\u0000b\","
		"\"user\":{\"id\":\"u\\u0000\"},\"last_message\":{\"id\":\"m\",\"text\":\"\\u0000t\"}},"
		"{\"id\":\"\\u0000\"}],\"meta\":{\"total\":2}}";
	struct page p;
	const struct conv_row *row;
	char err[256];

	(void)state;
	for (int self_contained = 0; self_contained < 2; self_contained++) {
		assert_int_equal(parse(body, &p, err), DX_OK);
		assert_int_equal(page_rows(&p, self_contained), 0);
		assert_int_equal(p.nrows, 2);
		row = &p.rows[0];
		assert_int_equal(row->id_len, 3);
		assert_memory_equal(row->id, "c\0d", 4);
		assert_int_equal(row->subject_len, 3);
		assert_memory_equal(row->subject, "a\0b", 4);
		assert_int_equal(row->user_id_len, 2);
		assert_memory_equal(row->user_id, "u\0", 3);
		assert_int_equal(row->last_message_text_len, 2);
		assert_memory_equal(row->last_message_text, "\0t", 3);
		assert_int_equal(row->status_len, 4);
		assert_string_equal(row->status, "open");
		assert_json(row->json, row->json_len,
			    "{\"id\":\"c\\u0000d\",\"status\":\"open\",\"subject\":\"a\\u0000b\","
			    "\"user\":{\"id\":\"u\\u0000\"},\"last_message\":{\"id\":\"m\",\"text\":\"\\u0000t\"}}");
		if (self_contained)
			assert_json(row->message_json, row->message_json_len,
				    "{\"id\":\"m\",\"text\":\"\\u0000t\"}");
		/* An id of one NUL is an id, not an empty one. */
		assert_int_equal(p.rows[1].id_len, 1);
		assert_null(p.rows[1].skip);
		page_free(&p);
	}
	assert_int_equal(parse("{\"data\":[],\"meta\":{\"next_cursor\":\"a\\u0000b\"}}", &p, err), DX_BAD_ANSWER);
	assert_string_equal(err, "meta.next_cursor holds a NUL character: it cannot be sent back");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_page_cursor),
		cmocka_unit_test(test_page_refused),
		cmocka_unit_test(test_row_map),
		cmocka_unit_test(test_row_wrong_types),
		cmocka_unit_test(test_rows_json),
		cmocka_unit_test(test_participant),
		cmocka_unit_test(test_page_nul),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
