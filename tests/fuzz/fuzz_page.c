/* fuzz_page.c - arbitrary bytes as a GET /conversations answer */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "page.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct page p;
	char err[256];
	size_t i;
	json_t *item;

	if (page_parse((const char *)data, size, &p, err, sizeof(err)) < 0)
		return 0;
	json_array_foreach(p.data, i, item)
		participant_user_id(item);
	/* A small page size: the rows' memory must grow.  Both kinds of rows,
	 * by the first byte. */
	p.body_len = size / 8;
	if (page_rows(&p, data[0] & 1) < 0)
		abort();
	for (i = 0; i < p.nrows; i++)
		if (!p.rows[i].id != !!p.rows[i].skip || !p.rows[i].json != !p.rows[i].id ||
		    (p.rows[i].last_message_id && !p.rows[i].message_json && !p.rows[i].last_message))
			abort();
	page_free(&p);
	return 0;
}
