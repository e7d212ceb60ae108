/* test_api.c - outcome classification and Retry-After parsing */
#include "config.h"

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "api.h"

static void test_classify(void **state)
{
	(void)state;
	assert_int_equal(api_classify(CURLE_OK, 200), DX_OK);
	assert_int_equal(api_classify(CURLE_OK, 201), DX_OK);
	assert_int_equal(api_classify(CURLE_OK, 204), DX_OK);
	assert_int_equal(api_classify(CURLE_OK, 408), DX_TRANSIENT);
	assert_int_equal(api_classify(CURLE_OK, 429), DX_TRANSIENT);
	assert_int_equal(api_classify(CURLE_OK, 500), DX_TRANSIENT);
	assert_int_equal(api_classify(CURLE_OK, 503), DX_TRANSIENT);
	assert_int_equal(api_classify(CURLE_OK, 599), DX_TRANSIENT);
	assert_int_equal(api_classify(CURLE_OK, 400), DX_PERMANENT);
	assert_int_equal(api_classify(CURLE_OK, 401), DX_PERMANENT);
	assert_int_equal(api_classify(CURLE_OK, 404), DX_GONE);
	assert_int_equal(api_classify(CURLE_OK, 410), DX_GONE);
	assert_int_equal(api_classify(CURLE_OK, 422), DX_PERMANENT);
	assert_int_equal(api_classify(CURLE_OK, 301), DX_PERMANENT);
	assert_int_equal(api_classify(CURLE_COULDNT_CONNECT, 0), DX_TRANSIENT);
	assert_int_equal(api_classify(CURLE_OPERATION_TIMEDOUT, 0), DX_TRANSIENT);
	assert_int_equal(api_classify(CURLE_RECV_ERROR, 0), DX_TRANSIENT);
	assert_int_equal(api_classify(CURLE_GOT_NOTHING, 0), DX_TRANSIENT);
	assert_int_equal(api_classify(CURLE_PARTIAL_FILE, 0), DX_TRANSIENT);
}

static void test_retry_after_seconds(void **state)
{
	(void)state;
	assert_int_equal(api_parse_retry_after("2", 0), 2);
	assert_int_equal(api_parse_retry_after(" 120\r\n", 0), 120);
	assert_int_equal(api_parse_retry_after("0", 0), 0);
	assert_int_equal(api_parse_retry_after("", 0), -1);
	assert_int_equal(api_parse_retry_after("\r\n", 0), -1);
	assert_int_equal(api_parse_retry_after("-3", 0), -1);
	assert_int_equal(api_parse_retry_after("3.5", 0), -1);
	assert_int_equal(api_parse_retry_after("soon", 0), -1);
	assert_int_equal(api_parse_retry_after(NULL, 0), -1);
	/* A valid delay too long for a long: as long as can be (past max-age). */
	assert_int_equal(api_parse_retry_after("99999999999999999999999", 0), LONG_MAX);
}

static void test_retry_after_date(void **state)
{
	/* Wed, 21 Oct 2015 07:28:00 GMT is 1445412480. */
	const time_t t = 1445412480;

	(void)state;
	assert_int_equal(api_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", t - 90), 90);
	assert_int_equal(api_parse_retry_after(" Wed, 21 Oct 2015 07:28:00 GMT\r\n", t - 5), 5);
	/* A date in the past means now. */
	assert_int_equal(api_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", t + 100), 0);
	/* The obsolete forms HTTP allows. */
	assert_int_equal(api_parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", t - 1), 1);
	assert_int_equal(api_parse_retry_after("Wed Oct 21 07:28:00 2015", t - 1), 1);
	assert_int_equal(api_parse_retry_after("Wed, 99 Foo 2015 07:28:00 GMT", t), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_retry_after_seconds),
		cmocka_unit_test(test_retry_after_date),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
