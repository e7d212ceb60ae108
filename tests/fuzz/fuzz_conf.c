/* fuzz_conf.c - arbitrary bytes as dexsyncd.conf */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64];
	struct conf c;
	FILE *f;

	if (!*path) {
		snprintf(path, sizeof(path), "/tmp/fuzz-conf-%d.conf", (int)getpid());
		log_open("fuzz", LOG_USER, 0, 0);
	}
	f = fopen(path, "w");
	if (!f)
		return 0;
	fwrite(data, 1, size, f);
	fclose(f);
	if (conf_load(path, &c) == 0)
		conf_free(&c);
	return 0;
}
