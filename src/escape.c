/* escape.c - control characters and broken UTF-8 made visible (see escape.h) */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"

size_t escape_utf8_len(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t len;
	uint32_t cp;

	if (n == 0)
		return 0;
	if (u[0] < 0x80)
		return 1;
	if (u[0] >= 0xc2 && u[0] <= 0xdf) {
		len = 2;
		cp = u[0] & 0x1f;
	} else if (u[0] >= 0xe0 && u[0] <= 0xef) {
		len = 3;
		cp = u[0] & 0x0f;
	} else if (u[0] >= 0xf0 && u[0] <= 0xf4) {
		len = 4;
		cp = u[0] & 0x07;
	} else {
		return 0; /* continuation byte, C0/C1 overlong lead, or > U+13FFFF */
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((u[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (u[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* The code point of a valid UTF-8 character of len bytes. */
static uint32_t code_point(const unsigned char *u, size_t len)
{
	static const unsigned char lead_mask[] = { 0, 0x7f, 0x1f, 0x0f, 0x07 };
	uint32_t cp = u[0] & lead_mask[len];

	for (size_t i = 1; i < len; i++)
		cp = cp << 6 | (u[i] & 0x3f);
	return cp;
}

/* Characters that are valid but move the cursor, end a line or reorder
 * what follows them on a terminal: C1 controls (U+009B is CSI), the line
 * and paragraph separators, and the bidirectional embeddings, overrides
 * and isolates. */
static int unicode_control(uint32_t cp)
{
	return (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 || (cp >= 0x202a && cp <= 0x202e) ||
	       (cp >= 0x2066 && cp <= 0x2069);
}

int escape_needed(const char *s, size_t len)
{
	unsigned char c = (unsigned char)s[0];

	if (len <= 1)
		return c < 0x20 || c == 0x7f || c == '\\' || c >= 0x80;
	return unicode_control(code_point((const unsigned char *)s, len));
}

size_t escape_find(const char *s, size_t n, const char *allow)
{
	size_t i = 0, len;

	while (i < n) {
		len = escape_utf8_len(s + i, n - i);
		if (len == 0)
			return i;
		if (escape_needed(s + i, len) && !(len == 1 && s[i] && strchr(allow, s[i])))
			return i;
		i += len;
	}
	return n;
}

/* The escaped form of the character (or invalid byte, len 0) at s into
 * out (at least 7 bytes, not NUL-terminated); returns its length. */
static size_t escape_char(const char *s, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char c = (unsigned char)s[0];
	uint32_t cp;

	if (len > 1) {
		if (!escape_needed(s, len)) {
			memcpy(out, s, len);
			return len;
		}
		cp = code_point((const unsigned char *)s, len);
		out[0] = '\\';
		out[1] = 'u';
		for (int i = 0; i < 4; i++)
			out[2 + i] = hex[(cp >> (12 - 4 * i)) & 0xf];
		return 6;
	}
	if (len == 1 && !escape_needed(s, 1)) {
		out[0] = (char)c;
		return 1;
	}
	out[0] = '\\';
	switch (c) {
	case '\\':
		out[1] = '\\';
		return 2;
	case '\n':
		out[1] = 'n';
		return 2;
	case '\r':
		out[1] = 'r';
		return 2;
	case '\t':
		out[1] = 't';
		return 2;
	}
	out[1] = 'x';
	out[2] = hex[c >> 4];
	out[3] = hex[c & 0xf];
	return 4;
}

/* Walk s[0..n), handing each escaped piece to emit; the total length, or
 * SIZE_MAX when emit fails. */
static size_t escape_walk(const char *s, size_t n, int (*emit)(const char *, size_t, void *), void *arg)
{
	size_t i = 0, total = 0, len, k;
	char piece[8];

	while (i < n) {
		len = escape_utf8_len(s + i, n - i);
		k = escape_char(s + i, len, piece);
		if (emit && emit(piece, k, arg) < 0)
			return SIZE_MAX;
		total += k;
		i += len ? len : 1;
	}
	return total;
}

/* Append to the buffer at *arg (a char **, advanced). */
static int emit_buf(const char *piece, size_t k, void *arg)
{
	char **o = arg;

	memcpy(*o, piece, k);
	*o += k;
	return 0;
}

static int emit_file(const char *piece, size_t k, void *arg)
{
	return fwrite(piece, 1, k, arg) == k ? 0 : -1;
}

char *escape_text(const char *s, size_t n)
{
	size_t size = escape_walk(s, n, NULL, NULL);
	char *buf, *o;

	if (size == SIZE_MAX || !(buf = malloc(size + 1)))
		return NULL;
	o = buf;
	escape_walk(s, n, emit_buf, &o);
	*o = '\0';
	return buf;
}

int escape_fputs(const char *s, FILE *out)
{
	return escape_walk(s, strlen(s), emit_file, out) == SIZE_MAX ? EOF : 0;
}
