/* page.h - a Dexra list page and the conversation rows in it (pure, no I/O) */
#ifndef DEXSYNC_PAGE_H
#define DEXSYNC_PAGE_H

#include <jansson.h>
#include <stddef.h>

/* Where page_dump put an item's compact JSON and its last message's. */
struct item_json {
	size_t off, len;
	size_t msg_off, msg_len;    /* msg_len 0: no last_message object */
};

struct page {
	json_t *root;               /* owns everything below */
	json_t *data;               /* the items array */
	const char *next_cursor;    /* NULL when this is the last page */
	long total;                 /* meta.total, -1 when absent */
	char *json;                 /* after page_dump: the rendered JSON ... */
	struct item_json *at;       /* ... and where each item's is */
};

/* Parse a GET /conversations answer.  Returns 0, or -1 with the reason in
 * err (bad JSON with its position, no data array, a cursor of the wrong type). */
int page_parse(const char *body, size_t len, struct page *p, char *err, size_t errlen);
/* Render every item, and its last_message object, as compact JSON (the form
 * the mirror stores and compares) into one buffer of about size_hint bytes
 * to start with.  0, or -1 when out of memory. */
int page_dump(struct page *p, size_t size_hint);
void page_free(struct page *p);

/* Append the compact JSON of v to *buf at *used, growing *buf (of *size
 * bytes) as needed.  Its length, or 0 when out of memory. */
size_t json_append(json_t *v, char **buf, size_t *size, size_t *used);

/* The columns of one conversation; pointers into the JSON item. */
struct conv_row {
	const char *id;
	const char *status;
	const char *subject;
	const char *created_at;
	const char *user_id;
	const char *last_message_id;
	const char *last_message_text;
	json_t *last_message;       /* the object, or NULL */
	const char *json;           /* the item's compact JSON, */
	size_t json_len;
	const char *message_json;   /* and last_message's, when rendered */
	size_t message_json_len;
};

/* Map one list item to a row.  Fields of the wrong type become NULL (the raw
 * JSON keeps them); an item that is not an object or has no string id
 * cannot be stored: -1 with the reason in err.  The JSON fields are left
 * NULL for the caller. */
int conv_row_map(json_t *item, struct conv_row *row, char *err, size_t errlen);

/* The user id of a participant object ("id", else "user_id"), or NULL. */
const char *participant_user_id(json_t *participant);

#endif
