/* fuzz_page.c - arbitrary bytes as a GET /conversations answer */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "page.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct page p;
	char err[256];
	size_t i, len;
	json_t *item;

	if (page_parse((const char *)data, size, &p, err, sizeof(err)) != DX_OK)
		return 0;
	json_array_foreach(p.data, i, item)
		participant_user_id(item, &len);
	/* A small page size: the rows' memory must grow.  Both kinds of rows,
	 * by the first byte. */
	p.body_len = size / 8;
	if (page_rows(&p, data[0] & 1) != DX_OK)
		abort();
	for (i = 0; i < p.nrows; i++) {
		const struct conv_row *r = &p.rows[i];

		if (!r->id != !!r->skip || !r->json != !r->id ||
		    (r->last_message_id && !r->message_json && !r->last_message))
			abort();
		/* Strings are kept whole, a \u0000 in them included, and end in a NUL. */
		if (r->id && (r->id_len == 0 || r->id[r->id_len] || strlen(r->id) > r->id_len))
			abort();
		if (r->subject && (r->subject[r->subject_len] || strlen(r->subject) > r->subject_len))
			abort();
		if (r->last_message_text && r->last_message_text[r->last_message_text_len])
			abort();
		/* The stored JSON never holds a raw NUL: \u0000 stays escaped. */
		if (r->json && memchr(r->json, '\0', r->json_len))
			abort();
	}
	page_free(&p);
	return 0;
}
