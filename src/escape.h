/* escape.h - text from the server, the database or the user, made safe for
 * a log line or a terminal (SPEC 3, "Logs and terminals get no raw control
 * characters").  Pure: no I/O but escape_fputs, no locale.
 *
 * The escaped form is valid UTF-8 without a control character, and it can
 * be read back unambiguously:
 *
 *	backslash            \\
 *	newline, CR, tab     \n  \r  \t
 *	other C0, DEL        \xNN          (\x1b for ESC)
 *	a byte that is not
 *	part of valid UTF-8  \xNN          (\xff)
 *	C1 controls, line and paragraph separators, bidirectional
 *	overrides and isolates                       \uNNNN   (\u009b, \u202e)
 *
 * Everything else, valid UTF-8 included, is kept as it is. */
#ifndef DEXSYNC_ESCAPE_H
#define DEXSYNC_ESCAPE_H

#include <stddef.h>
#include <stdio.h>

/* The length (1..4) of the valid UTF-8 character at s, of which n bytes
 * are available; 0 when s does not start one (a stray continuation byte,
 * an overlong form, a surrogate, beyond U+10FFFF, or cut short by n). */
size_t escape_utf8_len(const char *s, size_t n);

/* Does the character of len bytes at s (len from escape_utf8_len, or 1
 * for an invalid byte) need escaping? */
int escape_needed(const char *s, size_t len);

/* The offset of the first byte in s[0..n) that is not valid UTF-8 or is a
 * character escaping would change, apart from the bytes in allow (say
 * "\t\n\r" for a multi-line text); n when there is none. */
size_t escape_find(const char *s, size_t n, const char *allow);

/* The n bytes at s (NUL bytes included) escaped, as a malloc'd string;
 * NULL when out of memory. */
char *escape_text(const char *s, size_t n);

/* Write s (up to its NUL) escaped to out; EOF on a write error, else 0. */
int escape_fputs(const char *s, FILE *out);

#endif
