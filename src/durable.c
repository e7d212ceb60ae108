/* durable.c - making a file's creation or rename survive a power loss */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "durable.h"

int durable_sync(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC), rc;

	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

char *durable_dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

int durable_sync_dir(const char *path)
{
	char *dir = durable_dir_of(path);
	int rc;

	if (!dir) {
		errno = ENOMEM;
		return -1;
	}
	rc = durable_sync(dir, O_RDONLY | O_DIRECTORY);
	free(dir);
	return rc;
}
