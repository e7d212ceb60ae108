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
	assert_int_equal(queue_parse_attribute("a b=1", &k, &v, err, sizeof(err)), -1);
	assert_int_equal(queue_parse_attribute("k=\xff\xfe", &k, &v, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not valid UTF-8"));
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
	j = queue_message("conv_1", "Hello", 0, err, sizeof(err));
	dump = json_dumps(j, JSON_COMPACT);
	assert_string_equal(dump, "{\"conversation_id\":\"conv_1\",\"content\":\"Hello\",\"type\":\"text\"}");
	free(dump);
	json_decref(j);
	j = queue_message("conv_1", "psst", 1, err, sizeof(err));
	assert_string_equal(json_string_value(json_object_get(j, "type")), "private_note");
	json_decref(j);
	assert_null(queue_message("conv_1", "", 0, err, sizeof(err)));
	assert_string_equal(err, "the message text is empty");
	assert_null(queue_message("conv_1", " \n\t", 0, err, sizeof(err)));
	assert_null(queue_message("conv_1", "\xff", 0, err, sizeof(err)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_attribute_values),
		cmocka_unit_test(test_attribute_refused),
		cmocka_unit_test(test_email),
		cmocka_unit_test(test_ids),
		cmocka_unit_test(test_message),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
