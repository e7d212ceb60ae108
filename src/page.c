/* page.c - from a Dexra list page to conversation rows */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "page.h"

int page_parse(const char *body, size_t len, struct page *p, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *meta, *cursor, *total;

	p->root = json_loadb(body, len, 0, &jerr);
	p->data = NULL;
	p->next_cursor = NULL;
	p->total = -1;
	p->json = NULL;
	p->at = NULL;
	if (!p->root) {
		snprintf(err, errlen, "invalid JSON at line %d, column %d (byte %d): %s",
			 jerr.line, jerr.column, jerr.position, jerr.text);
		return -1;
	}
	p->data = json_object_get(p->root, "data");
	if (!json_is_array(p->data)) {
		snprintf(err, errlen, "page has no \"data\" array");
		goto fail;
	}
	meta = json_object_get(p->root, "meta");
	if (meta && !json_is_object(meta) && !json_is_null(meta)) {
		snprintf(err, errlen, "page \"meta\" is not an object");
		goto fail;
	}
	cursor = json_object_get(meta, "next_cursor");
	if (json_is_string(cursor)) {
		if (json_string_length(cursor) > 0)
			p->next_cursor = json_string_value(cursor);
	} else if (cursor && !json_is_null(cursor)) {
		snprintf(err, errlen, "meta.next_cursor is neither a string nor null");
		goto fail;
	}
	total = json_object_get(meta, "total");
	if (json_is_integer(total) && json_integer_value(total) >= 0)
		p->total = (long)json_integer_value(total);
	return 0;
fail:
	page_free(p);
	return -1;
}

size_t json_append(json_t *v, char **buf, size_t *size, size_t *used)
{
	const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
	size_t need = json_dumpb(v, *buf ? *buf + *used : NULL, *size - *used, flags);

	if (need > *size - *used) {
		size_t grown = *size * 2 > *used + need ? *size * 2 : *used + need;
		char *p = realloc(*buf, grown);

		if (!p)
			return 0;
		*buf = p;
		*size = grown;
		json_dumpb(v, *buf + *used, *size - *used, flags);
	}
	*used += need;
	return need;
}

int page_dump(struct page *p, size_t size_hint)
{
	size_t n = json_array_size(p->data), size = size_hint + 1, used = 0, i;
	json_t *item, *msg;

	p->json = malloc(size);
	p->at = calloc(n ? n : 1, sizeof(*p->at));
	if (!p->json || !p->at)
		return -1;
	json_array_foreach(p->data, i, item) {
		p->at[i].off = used;
		if (!(p->at[i].len = json_append(item, &p->json, &size, &used)))
			return -1;
		msg = json_object_get(item, "last_message");
		if (json_is_object(msg)) {
			p->at[i].msg_off = used;
			if (!(p->at[i].msg_len = json_append(msg, &p->json, &size, &used)))
				return -1;
		}
	}
	return 0;
}

void page_free(struct page *p)
{
	json_decref(p->root);
	free(p->json);
	free(p->at);
	p->root = NULL;
	p->data = NULL;
	p->next_cursor = NULL;
	p->json = NULL;
	p->at = NULL;
}

/* The string value of key in obj, or NULL if absent or not a string. */
static const char *str(json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

int conv_row_map(json_t *item, struct conv_row *row, char *err, size_t errlen)
{
	json_t *user;

	if (!json_is_object(item)) {
		snprintf(err, errlen, "item is not an object");
		return -1;
	}
	row->id = str(item, "id");
	if (!row->id || !*row->id) {
		snprintf(err, errlen, "item has no string \"id\"");
		return -1;
	}
	row->status = str(item, "status");
	row->subject = str(item, "subject");
	row->created_at = str(item, "created_at");
	row->user_id = str(item, "user_id");
	user = json_object_get(item, "user");
	if (!row->user_id && json_is_object(user))
		row->user_id = str(user, "id");
	row->last_message = json_object_get(item, "last_message");
	if (!json_is_object(row->last_message))
		row->last_message = NULL;
	row->last_message_id = str(row->last_message, "id");
	row->last_message_text = str(row->last_message, "text");
	row->json = row->message_json = NULL;
	row->json_len = row->message_json_len = 0;
	return 0;
}

const char *participant_user_id(json_t *participant)
{
	const char *id = str(participant, "id");

	return id ? id : str(participant, "user_id");
}
