/* fuzz_retry_after.c - arbitrary bytes as a Retry-After header value */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	long v;

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	v = api_parse_retry_after(s, 1700000000);
	if (v < -1)
		abort();        /* -1 or a delay, never anything else */
	free(s);
	return 0;
}
