/* fuzz_attribute.c - arbitrary bytes as dexsync's KEY=VALUE, email and id */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1), err[256], *key;
	json_t *value, *msg;

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	if (queue_parse_attribute(s, &key, &value, err, sizeof(err)) == 0) {
		if (!key || !*key || !value || strchr(key, '='))
			abort();
		free(key);
		json_decref(value);
	}
	queue_valid_email(s);
	queue_valid_id(s);
	msg = queue_message("conv_1", (const char *)data, size, size & 1, err, sizeof(err));
	json_decref(msg);
	free(s);
	return 0;
}
