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
	struct conv_row row;
	char err[256], buf[512];
	size_t i;
	json_t *item;

	if (page_parse((const char *)data, size, &p, err, sizeof(err)) < 0)
		return 0;
	/* A small hint: the buffer must grow. */
	if (page_dump(&p, size / 8) < 0)
		abort();
	json_array_foreach(p.data, i, item) {
		if (conv_row_map(item, &row, err, sizeof(err)) == 0) {
			json_dumpb(item, buf, sizeof(buf), JSON_COMPACT);
			if (row.last_message) {
				char *raw = json_dumps(row.last_message, JSON_COMPACT);

				free(raw);
			}
		}
		participant_user_id(item);
	}
	page_free(&p);
	return 0;
}
