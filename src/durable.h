/* durable.h - making a file's creation or rename survive a power loss */
#ifndef DEXSYNC_DURABLE_H
#define DEXSYNC_DURABLE_H

/* fsync the file or directory at path, opened with flags (O_RDONLY, with
 * O_DIRECTORY for a directory); 0, or -1 with errno. */
int durable_sync(const char *path, int flags);

/* The directory part of path, for its fsync; malloc'd, NULL when out of
 * memory. */
char *durable_dir_of(const char *path);

/* fsync the directory holding path, after a file in it was created,
 * renamed or removed; 0, or -1 with errno. */
int durable_sync_dir(const char *path);

#endif
