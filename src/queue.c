/* queue.c - payloads for the outbox from command-line arguments */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"
#include "queue.h"

#define OUTBOX_REF "outbox:"

int queue_valid_id(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > 200)
		return 0;
	for (const char *p = id; *p; p++)
		if (*p <= ' ' || *p > '~' || *p == '/')
			return 0;
	return 1;
}

/* s as a positive decimal int64 made of digits only (leading zeros
 * allowed when zeros_ok); -1 when it is not one. */
static long long parse_decimal(const char *s, int zeros_ok)
{
	long long n;
	char *end;

	if (*s < '0' || *s > '9' || (!zeros_ok && *s == '0'))
		return -1;
	errno = 0;
	n = strtoll(s, &end, 10);
	if (*end || errno == ERANGE || n <= 0)
		return -1;
	return n;
}

long long queue_outbox_ref(const char *s)
{
	if (strncmp(s, OUTBOX_REF, strlen(OUTBOX_REF)))
		return 0;
	return parse_decimal(s + strlen(OUTBOX_REF), 0);
}

long long queue_parse_item(const char *s)
{
	if (!strncmp(s, OUTBOX_REF, strlen(OUTBOX_REF)))
		s += strlen(OUTBOX_REF);
	return parse_decimal(s, 1);
}

int queue_valid_email(const char *email)
{
	const char *at = strchr(email, '@');
	const char *dot;

	if (!at || at == email || strchr(at + 1, '@') || strlen(email) > 254)
		return 0;
	for (const char *p = email; *p; p++)
		if (*p <= ' ' || *p > '~')
			return 0;
	dot = strrchr(at, '.');
	return dot && dot > at + 1 && dot[1] != '\0';
}

const char *queue_text_problem(const char *s, size_t n, int multiline)
{
	size_t at = escape_find(s, n, multiline ? "\t\n\r" : "");

	if (at == n)
		return NULL;
	if (s[at] == '\0')
		return "holds a NUL byte";
	if (escape_utf8_len(s + at, n - at) == 0)
		return "is not valid UTF-8";
	return "holds a control character";
}

/* A value given as JSON that jansson cannot hold exactly: the reason, or
 * NULL when the text is simply not JSON (then it is a string). */
static const char *json_unholdable(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);

	if (j) {
		json_decref(j);
		return NULL;
	}
	switch (json_error_code(&e)) {
	case json_error_numeric_overflow:
		return "is a number too large to send exactly";
	case json_error_duplicate_key:
		return "is a JSON object with a key twice";
	case json_error_null_character:
		return "is JSON holding a NUL character";
	default:
		return NULL;
	}
}

int queue_parse_attribute(const char *arg, char **key, json_t **value, char *err, size_t errlen)
{
	const char *eq = strchr(arg, '=');
	const char *why, *val;
	size_t klen;
	json_t *v;

	*key = NULL;
	*value = NULL;
	if (!eq || eq == arg) {
		snprintf(err, errlen, "'%.80s' is not KEY=VALUE", arg);
		return -1;
	}
	klen = (size_t)(eq - arg);
	val = eq + 1;
	if ((why = queue_text_problem(arg, klen, 0))) {
		snprintf(err, errlen, "the attribute name in '%.80s' %s", arg, why);
		return -1;
	}
	if (arg[0] == ' ' || arg[klen - 1] == ' ') {
		snprintf(err, errlen, "the attribute name in '%.80s' starts or ends with a space", arg);
		return -1;
	}
	if ((why = json_unholdable(val))) {
		snprintf(err, errlen, "the value of '%.*s' %s", (int)(klen > 80 ? 80 : klen), arg, why);
		return -1;
	}
	v = json_loads(val, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
	if (!v) {
		if ((why = queue_text_problem(val, strlen(val), 1))) {
			snprintf(err, errlen, "the value of '%.*s' %s", (int)(klen > 80 ? 80 : klen), arg,
				 why);
			return -1;
		}
		v = json_string(val);
	}
	*key = strndup(arg, klen);
	if (!v || !*key) {
		json_decref(v);
		free(*key);
		*key = NULL;
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	*value = v;
	return 0;
}

json_t *queue_message(const char *conversation, const char *text, size_t len, int note, char *err,
		      size_t errlen)
{
	const char *why;
	size_t blank = 0;
	json_t *j;

	while (blank < len && strchr(" \t\r\n", text[blank]) && text[blank])
		blank++;
	if (blank == len) {
		snprintf(err, errlen, "the message text is empty");
		return NULL;
	}
	if (len > QUEUE_MAX_TEXT) {
		snprintf(err, errlen, "the message text is larger than %u bytes", QUEUE_MAX_TEXT);
		return NULL;
	}
	if ((why = queue_text_problem(text, len, 1))) {
		snprintf(err, errlen, "the message text %s", why);
		return NULL;
	}
	j = json_pack("{s:s, s:s%, s:s}", "conversation_id", conversation, "content", text, len, "type",
		      note ? "private_note" : "text");
	if (!j)
		snprintf(err, errlen,
			 "the message could not be built (out of memory, or the "
			 "conversation id is not UTF-8)");
	return j;
}
