/* fuzz_escape.c - arbitrary bytes through escape.c: the escaped form is
 * valid UTF-8 without a control character, reads back to the input, and
 * escape_find agrees with escape_text about what needs escaping. */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The hex digit c's value, or abort. */
static unsigned hexval(char c)
{
	if (c >= '0' && c <= '9')
		return (unsigned)(c - '0');
	if (c >= 'a' && c <= 'f')
		return (unsigned)(c - 'a' + 10);
	abort();
}

/* Undo escape_text on s into out (room for strlen(s) bytes); its length. */
static size_t unescape(const char *s, char *out)
{
	size_t n = 0;
	unsigned cp;

	while (*s) {
		if (*s != '\\') {
			out[n++] = *s++;
			continue;
		}
		switch (s[1]) {
		case '\\': out[n++] = '\\'; s += 2; break;
		case 'n': out[n++] = '\n'; s += 2; break;
		case 'r': out[n++] = '\r'; s += 2; break;
		case 't': out[n++] = '\t'; s += 2; break;
		case 'x':
			out[n++] = (char)(hexval(s[2]) << 4 | hexval(s[3]));
			s += 4;
			break;
		case 'u':
			cp = hexval(s[2]) << 12 | hexval(s[3]) << 8 | hexval(s[4]) << 4 | hexval(s[5]);
			if (cp < 0x800) {
				out[n++] = (char)(0xc0 | cp >> 6);
			} else {
				out[n++] = (char)(0xe0 | cp >> 12);
				out[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
			}
			out[n++] = (char)(0x80 | (cp & 0x3f));
			s += 6;
			break;
		default:
			abort();        /* a lone backslash: ambiguous */
		}
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	char *out = escape_text(in, size), *back;
	size_t len, found;

	if (!out)
		return 0;
	len = strlen(out);
	if (len > 4 * size)
		abort();
	/* Valid UTF-8, nothing but backslashes left to escape. */
	if (escape_find(out, len, "\\") != len)
		abort();
	/* Nothing needed escaping exactly when nothing changed (backslash aside). */
	found = escape_find(in, size, "");
	if ((found == size) != (len == size && memcmp(out, in, size) == 0))
		abort();
	back = malloc(len + 1);
	if (!back)
		abort();
	if (unescape(out, back) != size || memcmp(back, in, size))
		abort();
	free(back);
	free(out);
	return 0;
}
