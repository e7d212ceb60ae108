/* test_backoff.c - the retry delay: bounds, growth, jitter, Retry-After */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "backoff.h"

static void test_bounds(void **state)
{
	(void)state;
	/* The lowest and highest random draws give the ends of the range. */
	assert_int_equal(backoff_delay(1, 10, 3600, -1, 0), 10);
	assert_int_equal(backoff_delay(1, 10, 3600, -1, 10), 20);       /* ceiling 20 */
	assert_int_equal(backoff_delay(3, 10, 3600, -1, 70), 80);       /* ceiling 80 */
	assert_int_equal(backoff_delay(3, 10, 3600, -1, 71), 10);       /* wraps */
	for (uint32_t r = 0; r < 100000; r += 7) {
		long d = backoff_delay(1 + r % 30, 10, 3600, -1, r * 2654435761u);

		assert_in_range(d, 10, 3600);
	}
}

static void test_growth(void **state)
{
	long prev = 0;

	(void)state;
	/* The largest possible delay doubles with each attempt up to max. */
	for (long a = 1; a <= 12; a++) {
		long top = backoff_delay(a, 10, 3600, -1, UINT32_MAX);
		long ceiling = 10L << a > 3600 ? 3600 : 10L << a;
		long hi = 0;

		for (uint32_t r = 0; r < 5000; r++) {
			long d = backoff_delay(a, 10, 3600, -1, r);

			hi = d > hi ? d : hi;
		}
		assert_int_equal(hi, ceiling);
		assert_true(top <= ceiling);
		assert_true(hi >= prev);
		prev = hi;
	}
	/* Huge attempt counts do not overflow. */
	assert_in_range(backoff_delay(1000000, 10, 3600, -1, 12345), 10, 3600);
	assert_in_range(backoff_delay(62, 1, 9223372036854775807L / 2, -1, 5), 1, 9223372036854775807L / 2);
}

static void test_jitter_spread(void **state)
{
	int buckets[4] = { 0 };

	(void)state;
	/* attempt 6: range [10, 640]; random draws fill its quarters evenly. */
	srandom(42);
	for (int i = 0; i < 40000; i++) {
		long d = backoff_delay(6, 10, 3600, -1, (uint32_t)random());

		buckets[(d - 10) * 4 / 631]++;
	}
	for (int i = 0; i < 4; i++)
		assert_in_range(buckets[i], 9000, 11000);
}

static void test_retry_after_floor(void **state)
{
	(void)state;
	assert_int_equal(backoff_delay(1, 10, 3600, 2, 0), 10);          /* below: ignored */
	assert_int_equal(backoff_delay(1, 10, 3600, 300, 0), 300);       /* above: obeyed */
	assert_int_equal(backoff_delay(1, 10, 3600, 7200, 0), 7200);     /* even past max */
	assert_int_equal(backoff_delay(1, 1, 1, 2, 0), 2);
	assert_int_equal(backoff_delay(1, 5, 3, -1, 9), 5);              /* max < min: min */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_growth),
		cmocka_unit_test(test_jitter_spread),
		cmocka_unit_test(test_retry_after_floor),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
