/* test_queue.c - command-line arguments to outbox payloads */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "queue.h"

static void attr(const char *arg, const char *key, const char *json)
{
	char err[256], *k, *dump;
	json_t *v;

	assert_int_equal(queue_parse_attribute(arg, &k, &v, err, sizeof(err)), 0);
	assert_string_equal(k, key);
	dump = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
	assert_string_equal(dump, json);
	free(dump);
	free(k);
	json_decref(v);
}

static void test_attribute_values(void **state)
{
	(void)state;
	attr("ltv=1200", "ltv", "1200");
	attr("vip=true", "vip", "true");
	attr("gone=null", "gone", "null");
	attr("plan=enterprise", "plan", "\"enterprise\"");
	attr("name=\"Jane\"", "name", "\"Jane\"");
	attr("tags=[1,\"a\"]", "tags", "[1,\"a\"]");
	attr("empty=", "empty", "\"\"");
	attr("expr=a=b", "expr", "\"a=b\"");
	attr("ratio=0.5", "ratio", "0.5");
	attr("bad=[1,", "bad", "\"[1,\"");
	attr("word=ünï", "word", "\"ünï\"");
	attr("ünï=1", "ünï", "1");
	attr("favourite colour=blue", "favourite colour", "\"blue\"");
	attr("lines=a\nb", "lines", "\"a\\nb\"");
	attr("esc=\"\\u001b\"", "esc", "\"\\u001B\"");     /* explicit JSON: as written */
	attr("max=9223372036854775807", "max", "9223372036854775807");
}

static void test_attribute_refused(void **state)
{
	char err[256], *k;
	json_t *v;

	(void)state;
	assert_int_equal(queue_parse_attribute("novalue", &k, &v, err, sizeof(err)), -1);
	assert_string_equal(err, "'novalue' is not KEY=VALUE");
	assert_null(k);
	assert_int_equal(queue_parse_attribute("=1", &k, &v, err, sizeof(err)), -1);
	assert_int_equal(queue_parse_attribute(" a=1", &k, &v, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "starts or ends with a space"));
	assert_int_equal(queue_parse_attribute("a =1", &k, &v, err, sizeof(err)), -1);
	assert_int_equal(queue_parse_attribute("k=\xff\xfe", &k, &v, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not valid UTF-8"));
	assert_int_equal(queue_parse_attribute("\xff=1", &k, &v, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not valid UTF-8"));
	assert_int_equal(queue_parse_attribute("a\tb=1", &k, &v, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "control character"));
	assert_int_equal(queue_parse_attribute("a\x1b[2J=1", &k, &v, err, sizeof(err)), -1);
	assert_int_equal(queue_parse_attribute("a=\x1b[2J", &k, &v, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "control character"));
	assert_int_equal(queue_parse_attribute("a=\xc2\x9b", &k, &v, err, sizeof(err)), -1);
	assert_int_equal(queue_parse_attribute("n=99999999999999999999", &k, &v, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "too large"));
	assert_int_equal(queue_parse_attribute("n=1e999", &k, &v, err, sizeof(err)), -1);
	assert_int_equal(queue_parse_attribute("o={\"a\":1,\"a\":2}", &k, &v, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "key twice"));
	assert_int_equal(queue_parse_attribute("s=\"a\\u0000b\"", &k, &v, err, sizeof(err)), -1);
	assert_null(k);
	assert_null(v);
}

static void test_items_and_refs(void **state)
{
	(void)state;
	assert_int_equal(queue_parse_item("17"), 17);
	assert_int_equal(queue_parse_item("outbox:17"), 17);
	assert_int_equal(queue_parse_item("007"), 7);
	assert_int_equal(queue_parse_item("9223372036854775807"), 9223372036854775807LL);
	assert_int_equal(queue_parse_item("9223372036854775808"), -1);
	assert_int_equal(queue_parse_item("99999999999999999999"), -1);
	assert_int_equal(queue_parse_item("0"), -1);
	assert_int_equal(queue_parse_item("-1"), -1);
	assert_int_equal(queue_parse_item("+1"), -1);
	assert_int_equal(queue_parse_item(" 1"), -1);
	assert_int_equal(queue_parse_item("1 "), -1);
	assert_int_equal(queue_parse_item("1x"), -1);
	assert_int_equal(queue_parse_item(""), -1);
	assert_int_equal(queue_parse_item("outbox:"), -1);
	assert_int_equal(queue_outbox_ref("conv_1"), 0);
	assert_int_equal(queue_outbox_ref("outbox:12"), 12);
	assert_int_equal(queue_outbox_ref("outbox:012"), -1);
	assert_int_equal(queue_outbox_ref("outbox:+12"), -1);
	assert_int_equal(queue_outbox_ref("outbox:99999999999999999999"), -1);
	assert_int_equal(queue_outbox_ref("outbox:"), -1);
}

static void test_email(void **state)
{
	(void)state;
	assert_true(queue_valid_email("jane@example.com"));
	assert_true(queue_valid_email("a.b+c@sub.example.org"));
	assert_false(queue_valid_email("jane"));
	assert_false(queue_valid_email("@example.com"));
	assert_false(queue_valid_email("jane@"));
	assert_false(queue_valid_email("jane@example"));
	assert_false(queue_valid_email("jane@example."));
	assert_false(queue_valid_email("jane@.com"));
	assert_false(queue_valid_email("ja ne@example.com"));
	assert_false(queue_valid_email("a@b@example.com"));
}

static void test_ids(void **state)
{
	char longid[202];

	(void)state;
	assert_true(queue_valid_id("conv_892ns"));
	assert_true(queue_valid_id("outbox:12"));
	assert_false(queue_valid_id(""));
	assert_false(queue_valid_id("a b"));
	assert_false(queue_valid_id("a/b"));
	assert_false(queue_valid_id("tab\there"));
	memset(longid, 'x', 201);
	longid[201] = '\0';
	assert_false(queue_valid_id(longid));
	longid[200] = '\0';
	assert_true(queue_valid_id(longid));
}

static void test_message(void **state)
{
	char err[256], *dump;
	json_t *j;

	(void)state;
	j = queue_message("conv_1", "Hello", 5, 0, err, sizeof(err));
	dump = json_dumps(j, JSON_COMPACT);
	assert_string_equal(dump, "{\"conversation_id\":\"conv_1\",\"content\":\"Hello\",\"type\":\"text\"}");
	free(dump);
	json_decref(j);
	j = queue_message("conv_1", "psst", 4, 1, err, sizeof(err));
	assert_string_equal(json_string_value(json_object_get(j, "type")), "private_note");
	json_decref(j);
	assert_null(queue_message("conv_1", "", 0, 0, err, sizeof(err)));
	assert_string_equal(err, "the message text is empty");
	assert_null(queue_message("conv_1", " \n\t\r", 4, 0, err, sizeof(err)));
	assert_string_equal(err, "the message text is empty");
	assert_null(queue_message("conv_1", "\xff", 1, 0, err, sizeof(err)));
	assert_string_equal(err, "the message text is not valid UTF-8");
	assert_null(queue_message("conv_1", "a\0b", 3, 0, err, sizeof(err)));
	assert_string_equal(err, "the message text holds a NUL byte");
	assert_null(queue_message("conv_1", "\0", 1, 0, err, sizeof(err)));
	assert_string_equal(err, "the message text holds a NUL byte");
	assert_null(queue_message("conv_1", "red \x1b[31m", 12, 0, err, sizeof(err)));
	assert_string_equal(err, "the message text holds a control character");
	j = queue_message("conv_1", "two\r\nlines\tand a tab", 20, 0, err, sizeof(err));
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "content")), "two\r\nlines\tand a tab");
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_attribute_values),
		cmocka_unit_test(test_attribute_refused),
		cmocka_unit_test(test_email),
		cmocka_unit_test(test_ids),
		cmocka_unit_test(test_items_and_refs),
		cmocka_unit_test(test_message),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
