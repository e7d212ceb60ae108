/* page.c - from a Dexra list page to conversation rows */
#include "config.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "page.h"

enum dx_result page_parse(const char *body, size_t len, struct page *p, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *meta, *cursor, *total;

	/* \u0000 is valid JSON: strings are taken with their lengths. */
	p->root = json_loadb(body, len, JSON_ALLOW_NUL, &jerr);
	p->data = NULL;
	p->next_cursor = NULL;
	p->total = -1;
	p->body_len = len;
	p->rows = NULL;
	p->nrows = 0;
	p->mem = NULL;
	if (!p->root) {
		snprintf(err, errlen, "invalid JSON at line %d, column %d (byte %d): %s", jerr.line,
			 jerr.column, jerr.position, jerr.text);
		return DX_BAD_ANSWER;
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
		if (memchr(json_string_value(cursor), '\0', json_string_length(cursor))) {
			snprintf(err, errlen,
				 "meta.next_cursor holds a NUL character: it cannot be sent back");
			goto fail;
		}
		if (json_string_length(cursor) > 0)
			p->next_cursor = json_string_value(cursor);
	} else if (cursor && !json_is_null(cursor)) {
		snprintf(err, errlen, "meta.next_cursor is neither a string nor null");
		goto fail;
	}
	total = json_object_get(meta, "total");
	if (json_is_integer(total) && json_integer_value(total) >= 0)
		p->total = (long)json_integer_value(total);
	return DX_OK;
fail:
	page_free(p);
	return DX_BAD_ANSWER;
}

/* The string value of key in obj, or NULL if absent or not a string; its
 * length (it may hold a NUL) in *len. */
static const char *str(json_t *obj, const char *key, size_t *len)
{
	json_t *v = json_object_get(obj, key);

	*len = json_string_length(v);
	return json_string_value(v);
}

/* A page's rows point into chunks that never move once written. */
struct chunk {
	struct chunk *next;
	size_t size, used;
	char data[];
};

/* Room for n bytes at the end of the page's memory, in a new chunk (about
 * twice the page's size: its items' JSON and their strings) if need be. */
static char *room(struct page *p, size_t n)
{
	struct chunk *c = p->mem;

	assert(!c || c->used <= c->size); /* a chunk is never written past its end */
	if (!c || c->size - c->used < n) {
		size_t size = 2 * p->body_len + 1024;

		if (size < n)
			size = n;
		if (!(c = malloc(sizeof(*c) + size)))
			return NULL;
		c->next = p->mem;
		c->size = size;
		c->used = 0;
		p->mem = c;
	}
	return c->data + c->used;
}

/* A copy of the len bytes at s and a NUL (NULL stays NULL) in the page's
 * memory; *failed when out of it. */
static const char *keep(struct page *p, const char *s, size_t len, int *failed)
{
	char *d;

	if (!s)
		return NULL;
	if (!(d = room(p, len + 1))) {
		*failed = 1;
		return NULL;
	}
	assert(d == p->mem->data + p->mem->used && p->mem->size - p->mem->used >= len + 1);
	memcpy(d, s, len);
	d[len] = '\0';
	p->mem->used += len + 1;
	return d;
}

/* The string value of key in obj kept in the page's memory, its length in
 * *len; NULL if absent or not a string. */
static const char *keep_str(struct page *p, json_t *obj, const char *key, size_t *len, int *failed)
{
	const char *s = str(obj, key, len);

	return keep(p, s, *len, failed);
}

/* v as compact JSON in the page's memory (not NUL-terminated), its length
 * in *len; *failed when out of memory.  Rendered into the room left in the
 * current chunk, or again into a new one when it did not fit. */
static const char *render(struct page *p, json_t *v, size_t *len, int *failed)
{
	const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
	struct chunk *c = p->mem;
	size_t left = c ? c->size - c->used : 0;
	char *d = c ? c->data + c->used : NULL;
	size_t need = json_dumpb(v, d, left, flags);

	if (need == 0 || (need > left && !(d = room(p, need)))) {
		*failed = 1;
		return NULL;
	}
	if (need > left)
		json_dumpb(v, d, need, flags);
	assert(p->mem->size - p->mem->used >= need);
	p->mem->used += need;
	*len = need;
	return d;
}

/* One item as a row; 0, or -1 when out of memory. */
static int row_map(struct page *p, json_t *item, struct conv_row *row, int self_contained)
{
	size_t len;
	const char *id = str(item, "id", &len);
	json_t *msg;
	int failed = 0;

	if (!json_is_object(item) || !id || len == 0) {
		row->skip = json_is_object(item) ? "item has no string \"id\"" : "item is not an object";
		return 0;
	}
	row->id = keep(p, id, len, &failed);
	row->id_len = len;
	row->status = keep_str(p, item, "status", &row->status_len, &failed);
	row->subject = keep_str(p, item, "subject", &row->subject_len, &failed);
	row->created_at = keep_str(p, item, "created_at", &row->created_at_len, &failed);
	row->user_id = keep_str(p, item, "user_id", &row->user_id_len, &failed);
	if (!row->user_id)
		row->user_id = keep_str(p, json_object_get(item, "user"), "id", &row->user_id_len, &failed);
	msg = json_object_get(item, "last_message");
	if (json_is_object(msg)) {
		row->last_message_id = keep_str(p, msg, "id", &row->last_message_id_len, &failed);
		row->last_message_text = keep_str(p, msg, "text", &row->last_message_text_len, &failed);
		if (self_contained)
			row->message_json = render(p, msg, &row->message_json_len, &failed);
		else
			row->last_message = msg;
	}
	row->json = render(p, item, &row->json_len, &failed);
	return failed ? -1 : 0;
}

enum dx_result page_rows(struct page *p, int self_contained)
{
	size_t n = json_array_size(p->data), i;
	json_t *item;

	assert(p->root && !p->rows); /* parsed, and not turned into rows yet */
	if (!(p->rows = calloc(n ? n : 1, sizeof(*p->rows))))
		return DX_NOMEM;
	p->nrows = n;
	json_array_foreach(p->data, i, item)
		if (row_map(p, item, &p->rows[i], self_contained) < 0)
			return DX_NOMEM;
	if (!self_contained)
		return DX_OK;
	json_decref(p->root);
	p->root = p->data = NULL;
	p->next_cursor = NULL;
	return DX_OK;
}

void page_free(struct page *p)
{
	json_decref(p->root);
	free(p->rows);
	while (p->mem) {
		struct chunk *next = p->mem->next;

		free(p->mem);
		p->mem = next;
	}
	p->root = NULL;
	p->data = NULL;
	p->next_cursor = NULL;
	p->rows = NULL;
	p->nrows = 0;
}

const char *participant_user_id(json_t *participant, size_t *len)
{
	const char *id = str(participant, "id", len);

	return id ? id : str(participant, "user_id", len);
}
