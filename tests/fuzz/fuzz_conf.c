/* fuzz_conf.c - arbitrary bytes as dexsyncd.conf, and as an API key file */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "confurl.h"
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
	if (conf_load(path, conf_url_checks, &c) == 0)
		conf_free(&c);
	/* The same bytes as an API key file: a key comes back only when it
	 * can go into an HTTP header. */
	if (conf_defaults(&c) == 0) {
		char *key;

		free(c.api_key_file);
		c.api_key_file = strdup(path);
		c.api_key_file_set = 1;
		unsetenv("CREDENTIALS_DIRECTORY");
		unsetenv("DEXRA_API_KEY");
		if (c.api_key_file && (key = conf_api_key(&c))) {
			for (const char *p = key; *p; p++)
				if (*p <= ' ' || *p == 0x7f)
					abort();
			conf_key_free(key);
		}
		conf_free(&c);
	}
	return 0;
}
