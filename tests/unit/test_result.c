/* test_result.c - every result code has a message of its own */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "result.h"

static void test_distinct(void **state)
{
	(void)state;
	for (int i = 0; i < DX_RESULT_COUNT; i++) {
		const char *a = dx_strerror((enum dx_result)i);

		assert_non_null(a);
		assert_true(strlen(a) > 0);
		assert_string_not_equal(a, dx_strerror((enum dx_result)DX_RESULT_COUNT));
		for (int j = 0; j < i; j++)
			assert_string_not_equal(a, dx_strerror((enum dx_result)j));
	}
}

static void test_out_of_range(void **state)
{
	(void)state;
	assert_non_null(dx_strerror((enum dx_result)DX_RESULT_COUNT));
	assert_true(strlen(dx_strerror((enum dx_result)DX_RESULT_COUNT)) > 0);
	assert_string_equal(dx_strerror((enum dx_result)-1),
			    dx_strerror((enum dx_result)DX_RESULT_COUNT));
	assert_string_equal(dx_strerror((enum dx_result)12345),
			    dx_strerror((enum dx_result)DX_RESULT_COUNT));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_distinct),
		cmocka_unit_test(test_out_of_range),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
