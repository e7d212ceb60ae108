/* page.h - a Dexra list page and the conversation rows in it (pure, no I/O) */
#ifndef DEXSYNC_PAGE_H
#define DEXSYNC_PAGE_H

#include <jansson.h>
#include <stddef.h>

#include "result.h"

struct conv_row;
struct chunk;

struct page {
	json_t *root;		 /* owns everything below, until page_rows */
	json_t *data;		 /* the items array */
	const char *next_cursor; /* NULL when this is the last page */
	long total;		 /* meta.total, -1 when absent */
	size_t body_len;	 /* the size of the answer it was parsed from */
	struct conv_row *rows;	 /* after page_rows: a row per item, */
	size_t nrows;
	struct chunk *mem; /* and the memory their strings are in */
};

/* Parse a GET /conversations answer (\u0000 in strings accepted).  Returns
 * DX_OK, or DX_BAD_ANSWER with the reason in err (bad JSON with its
 * position, no data array, a cursor of the wrong type or one holding a
 * NUL, which could not be sent back whole). */
enum dx_result page_parse(const char *body, size_t len, struct page *p, char *err, size_t errlen);
/* Turn every item into a row (page.rows), with its compact JSON (the form
 * the mirror stores and compares) and its strings, in memory the page owns.
 * Self-contained, the rows get their last_message's JSON too and the tree
 * is freed (root, data and next_cursor become NULL); else last_message
 * points into the tree, for the store to render when it writes one (a
 * re-walk writes few).  DX_OK, or DX_NOMEM. */
enum dx_result page_rows(struct page *p, int self_contained);
void page_free(struct page *p);

/* The columns of one conversation.  An item that is not an object or has
 * no string id cannot be stored: id is NULL and skip says why.  Fields of
 * the wrong type are NULL (the JSON keeps them).  Each string is
 * NUL-terminated and has its length beside it: a string that held \u0000
 * goes on past its first NUL, and is stored whole. */
struct conv_row {
	const char *id;
	const char *skip;
	const char *status;
	const char *subject;
	const char *created_at;
	const char *user_id;
	const char *last_message_id;
	const char *last_message_text;
	size_t id_len, status_len, subject_len, created_at_len, user_id_len;
	size_t last_message_id_len, last_message_text_len;
	const char *json; /* the item's compact JSON, */
	size_t json_len;
	const char *message_json; /* and last_message's (self-contained rows) */
	size_t message_json_len;
	json_t *last_message; /* the object, NULL if none or not kept */
};

/* The user id of a participant object ("id", else "user_id"), or NULL;
 * *len gets its length (it may hold a NUL). */
const char *participant_user_id(json_t *participant, size_t *len);

#endif
