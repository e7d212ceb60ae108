/* test_escape.c - control characters and broken UTF-8 made visible */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "escape.h"

/* escape_text of the n bytes at in is want. */
static void esc(const char *in, size_t n, const char *want)
{
	char *got = escape_text(in, n);

	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

#define ESC(in, want) esc(in, sizeof(in) - 1, want)

static void test_plain_text_unchanged(void **state)
{
	(void)state;
	ESC("", "");
	ESC("conv_0001 sent as m_77", "conv_0001 sent as m_77");
	ESC("ünïcødé 日本 \xf0\x9f\x98\x80", "ünïcødé 日本 \xf0\x9f\x98\x80");
	ESC("~ !\"#$%&'()*+,-./", "~ !\"#$%&'()*+,-./");
}

static void test_controls(void **state)
{
	(void)state;
	ESC("a\nb", "a\\nb");
	ESC("a\r\n\tb", "a\\r\\n\\tb");
	ESC("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m");
	ESC("\x01\x07\x08\x0b\x0c\x1f\x7f", "\\x01\\x07\\x08\\x0b\\x0c\\x1f\\x7f");
	ESC("a\0b", "a\\x00b");
	ESC("back\\slash", "back\\\\slash");
	ESC("not a newline: \\n", "not a newline: \\\\n");
}

static void test_unicode_controls(void **state)
{
	(void)state;
	ESC("\xc2\x9b" "31m", "\\u009b31m");             /* C1 CSI */
	ESC("\xc2\x85", "\\u0085");                      /* NEL */
	ESC("\xc2\xa0", "\xc2\xa0");                     /* NBSP stays */
	ESC("a\xe2\x80\xa8" "b", "a\\u2028b");           /* line separator */
	ESC("\xe2\x80\xae" "cba", "\\u202ecba");         /* right-to-left override */
	ESC("\xe2\x81\xa6" "x", "\\u2066x");             /* isolate */
}

static void test_invalid_utf8(void **state)
{
	(void)state;
	ESC("\xff", "\\xff");
	ESC("a\x80" "b", "a\\x80b");                     /* stray continuation */
	ESC("\xc3", "\\xc3");                            /* cut short */
	ESC("\xc3(", "\\xc3(");
	ESC("\xc0\xaf", "\\xc0\\xaf");                   /* overlong '/' */
	ESC("\xe0\x80\xaf", "\\xe0\\x80\\xaf");          /* overlong */
	ESC("\xed\xa0\x80", "\\xed\\xa0\\x80");          /* surrogate */
	ESC("\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80"); /* > U+10FFFF */
	ESC("\xf0\x9f\x98", "\\xf0\\x9f\\x98");          /* cut short */
	ESC("\xe6\x97\xa5\xe6", "日\\xe6");
}

static void test_utf8_len(void **state)
{
	(void)state;
	assert_int_equal(escape_utf8_len("a", 1), 1);
	assert_int_equal(escape_utf8_len("\xc3\xbc", 2), 2);
	assert_int_equal(escape_utf8_len("\xc3\xbc", 1), 0);
	assert_int_equal(escape_utf8_len("\xe6\x97\xa5", 3), 3);
	assert_int_equal(escape_utf8_len("\xf4\x8f\xbf\xbf", 4), 4);
	assert_int_equal(escape_utf8_len("\xef\xbf\xbd", 3), 3);
	assert_int_equal(escape_utf8_len("", 0), 0);
}

static void test_find(void **state)
{
	(void)state;
	assert_int_equal(escape_find("plain", 5, ""), 5);
	assert_int_equal(escape_find("two\nlines", 9, ""), 3);
	assert_int_equal(escape_find("two\nlines", 9, "\t\n\r"), 9);
	assert_int_equal(escape_find("a\0b", 3, "\t\n\r"), 1);
	assert_int_equal(escape_find("ok \x1b", 4, "\t\n\r"), 3);
	assert_int_equal(escape_find("caf\xc3\xa9", 5, ""), 5);
	assert_int_equal(escape_find("caf\xc3", 4, ""), 3);
	assert_int_equal(escape_find("x\xc2\x9b", 3, ""), 1);
	assert_int_equal(escape_find("back\\slash", 10, ""), 4);
}

/* The escaped form is never longer than 4 bytes a byte, is valid UTF-8,
 * holds no control character, and a second escaping only doubles its
 * backslashes. */
static void test_every_byte(void **state)
{
	char in[3], *once, *twice;
	const char *q;

	(void)state;
	for (int a = 0; a < 256; a++)
		for (int b = 0; b < 256; b += 7) {
			in[0] = (char)a;
			in[1] = (char)b;
			in[2] = 'z';
			once = escape_text(in, 3);
			assert_non_null(once);
			assert_true(strlen(once) <= 12);
			assert_int_equal(escape_find(once, strlen(once), "\\"), strlen(once));
			twice = escape_text(once, strlen(once));
			assert_non_null(twice);
			q = twice;
			for (const char *p = once; *p; p++, q++) {
				assert_int_equal(*q, *p);
				if (*p == '\\')
					assert_int_equal(*++q, '\\');
			}
			assert_int_equal(*q, '\0');
			free(once);
			free(twice);
		}
}

static void test_fputs(void **state)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	(void)state;
	assert_non_null(f);
	assert_int_equal(escape_fputs("line\n\x1b[2J", f), 0);
	fclose(f);
	assert_string_equal(buf, "line\\n\\x1b[2J");
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_text_unchanged),
		cmocka_unit_test(test_controls),
		cmocka_unit_test(test_unicode_controls),
		cmocka_unit_test(test_invalid_utf8),
		cmocka_unit_test(test_utf8_len),
		cmocka_unit_test(test_find),
		cmocka_unit_test(test_every_byte),
		cmocka_unit_test(test_fputs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
