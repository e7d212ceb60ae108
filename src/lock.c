/* lock.c - one dexsyncd per database: flock() on DATABASE.lock */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lock.h"
#include "log.h"

/* The lock file of database, malloc'd: the real path of the database
 * (links and ".." resolved, so that every name of one file finds one lock;
 * a file that does not exist yet: its directory's real path) and ".lock".
 * NULL after logging why. */
static char *lock_path(const char *database)
{
	char *real = realpath(database, NULL), *dir, *slash, *path = NULL;
	const char *base;

	if (!real && errno == ENOENT) {
		slash = strrchr(database, '/');
		dir = slash ? strndup(database, (size_t)(slash - database) + (slash == database)) :
			      strdup(".");
		base = slash ? slash + 1 : database;
		if (dir && (real = realpath(dir, NULL)) &&
		    asprintf(&path, "%s/%s.lock", strcmp(real, "/") ? real : "", base) < 0)
			path = NULL;
		free(dir);
		free(real);
		real = NULL;
	} else if (real && asprintf(&path, "%s.lock", real) < 0) {
		path = NULL;
	}
	free(real);
	if (!path)
		log_err("database %s: cannot find its directory: %s", database, strerror(errno));
	return path;
}

/* The pid written in the lock file, 0 when there is none. */
static long read_pid(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	char *end;
	long pid;

	if (n <= 0)
		return 0;
	buf[n] = '\0';
	pid = strtol(buf, &end, 10);
	return end != buf && pid > 0 ? pid : 0;
}

/* What a file of mode is, when not a regular file. */
static const char *file_kind(mode_t mode)
{
	if (S_ISLNK(mode))
		return "a symbolic link";
	if (S_ISDIR(mode))
		return "a directory";
	if (S_ISFIFO(mode))
		return "a FIFO";
	if (S_ISSOCK(mode))
		return "a socket";
	return "a device";
}

/* Open database's lock file (creating it with create) and try flock(how);
 * returns the descriptor, or -1 with *pid: the holder's pid (0 unknown)
 * when it is held, -1 after logging an error, -2 when the file does not
 * exist and create is 0. */
static int lock_open(const char *database, int create, int how, long *pid)
{
	char *path = lock_path(database);
	struct stat st;
	int fd;

	*pid = -1;
	if (!path)
		return -1;
	/* O_NONBLOCK: a FIFO put in its place must not hang the open; nor a
	 * terminal become ours (O_NOCTTY).  Either is then refused. */
	fd = create ? open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, 0644) :
		      open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
	if (fd < 0 && create && (errno == EACCES || errno == EROFS))
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		int err = errno;

		/* A link (O_NOFOLLOW's ELOOP), a directory or a socket (ENXIO):
		 * named as such. */
		if (err == ENOENT && !create)
			*pid = -2;
		else if ((err == ELOOP || err == EISDIR || err == ENXIO) && lstat(path, &st) == 0 &&
			 !S_ISREG(st.st_mode))
			log_err("%s: %s, not a regular file", path, file_kind(st.st_mode));
		else
			log_err("%s: %s", path, strerror(err));
		free(path);
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		log_err("%s: %s", path, strerror(errno));
		st.st_mode = 0;
	} else if (!S_ISREG(st.st_mode)) {
		log_err("%s: %s, not a regular file", path, file_kind(st.st_mode));
	} else if (st.st_nlink != 1) {
		/* Another name of a file (the database itself, any file the
		 * daemon may write) whose content the pid would replace. */
		log_err("%s: has %ju names (a hard link), not a lock file of its own", path,
			(uintmax_t)st.st_nlink);
		st.st_mode = 0;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		free(path);
		return -1;
	}
	free(path);
	if (flock(fd, how | LOCK_NB) == 0)
		return fd;
	if (errno == EWOULDBLOCK)
		*pid = read_pid(fd);
	else
		log_err("database %s: cannot lock: %s", database, strerror(errno));
	close(fd);
	return -1;
}

int lock_daemon(const char *database)
{
	long pid;
	int fd;

	/* `dexsync status` holds a shared lock for a moment to look: try a
	 * few times over 100 ms before naming a holder. */
	for (int i = 0; (fd = lock_open(database, 1, LOCK_EX, &pid)) < 0 && pid >= 0 && i < 10; i++)
		usleep(10000);

	if (fd < 0 && pid > 0)
		log_err("%s is served by dexsyncd (pid %ld)", database, pid);
	else if (fd < 0 && pid == 0)
		log_err("%s is served by dexsyncd (pid unknown)", database);
	return fd;
}

void lock_write_pid(int fd)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());

	/* Only a courtesy for the messages: the lock is the flock itself. */
	if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n)
		log_debug("cannot write the pid into the lock file: %s", strerror(errno));
}

int lock_try(const char *database, long *pid)
{
	return lock_open(database, 1, LOCK_EX, pid);
}

long lock_holder(const char *database)
{
	long pid;
	int fd = lock_open(database, 0, LOCK_SH, &pid);

	if (fd >= 0) {
		close(fd);
		return -1;
	}
	return pid == -2 ? -1 : pid == -1 ? -2 : pid;
}

int lock_check(int *fd, const char *database)
{
	char *path = lock_path(database);
	struct stat held, named;
	long pid;
	int fresh;

	if (!path)
		return 0; /* cannot tell: keep what we hold */
	if (fstat(*fd, &held) == 0 && stat(path, &named) == 0 && held.st_dev == named.st_dev &&
	    held.st_ino == named.st_ino) {
		free(path);
		return 0;
	}
	free(path);
	log_warning("%s.lock was removed or replaced while dexsyncd held it; locking it again", database);
	if ((fresh = lock_open(database, 1, LOCK_EX, &pid)) < 0) {
		if (pid >= 0)
			log_err("%s is now served by another dexsyncd (pid %ld): stopping", database, pid);
		return pid >= 0 ? -1 : 0;
	}
	close(*fd);
	*fd = fresh;
	lock_write_pid(fresh);
	return 0;
}

void lock_release(int fd)
{
	if (fd >= 0)
		close(fd);
}
