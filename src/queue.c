/* queue.c - payloads for the outbox from command-line arguments */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue.h"

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

int queue_parse_attribute(const char *arg, char **key, json_t **value, char *err, size_t errlen)
{
	const char *eq = strchr(arg, '=');
	json_t *v;

	*key = NULL;
	*value = NULL;
	if (!eq || eq == arg) {
		snprintf(err, errlen, "'%.80s' is not KEY=VALUE", arg);
		return -1;
	}
	for (const char *p = arg; p < eq; p++)
		if (*p <= ' ' || *p > '~') {
			snprintf(err, errlen, "attribute name in '%.80s' has a space or control character", arg);
			return -1;
		}
	v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
	if (!v)
		v = json_string(eq + 1);
	if (!v) {
		snprintf(err, errlen, "value of '%.*s' is not valid UTF-8", (int)(eq - arg > 80 ? 80 : eq - arg), arg);
		return -1;
	}
	*key = strndup(arg, (size_t)(eq - arg));
	if (!*key) {
		json_decref(v);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	*value = v;
	return 0;
}

json_t *queue_message(const char *conversation, const char *text, int note, char *err, size_t errlen)
{
	json_t *j;

	if (strspn(text, " \t\r\n") == strlen(text)) {
		snprintf(err, errlen, "the message text is empty");
		return NULL;
	}
	j = json_pack("{s:s, s:s, s:s}", "conversation_id", conversation, "content", text,
		      "type", note ? "private_note" : "text");
	if (!j)
		snprintf(err, errlen, "the message text is not valid UTF-8");
	return j;
}
