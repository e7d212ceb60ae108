/* kept.c - answers the database refused until a stop, kept in a file
 *
 * The file is one JSON array, an object an answer:
 *   {"id": 17, "key": "...", "asked": true, "status": 201, "outcome": "ok",
 *    "retry_after": -1, "error": "", "body": null, "response": "{...}"}
 * Written whole to a temporary file and renamed into place, so that a
 * crash while writing leaves the old file or none, never half of one.
 *
 * A full disk is the likeliest reason why the database refuses answers,
 * and then a new file cannot be written either: DATABASE.answers-reserve,
 * KEPT_RESERVE bytes written at each start, is then renamed to the
 * temporary file and written over, which needs no new block on a file
 * system that writes in place (ext4, XFS, tmpfs; not btrfs or ZFS). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "durable.h"
#include "kept.h"
#include "log.h"

#define KEPT_SUFFIX    ".answers"
#define RESERVE_SUFFIX "-reserve"
#define KEPT_RESERVE   (1 << 20) /* about 2,000 answers of 500 bytes */

/* How outcomes are named in the file: stable across versions, unlike the
 * enum's values. */
static const struct {
	enum dx_result outcome;
	const char *name;
} outcomes[] = {
	{ DX_OK, "ok" },
	{ DX_TRANSIENT, "transient" },
	{ DX_PERMANENT, "permanent" },
	{ DX_GONE, "gone" },
};

#define N_OUTCOMES (sizeof(outcomes) / sizeof(outcomes[0]))

/* path with suffix after it (malloc'd), or NULL out of memory. */
static char *suffixed(const char *path, const char *suffix)
{
	char *p;

	return asprintf(&p, "%s%s", path, suffix) < 0 ? NULL : p;
}

char *kept_path(const char *database)
{
	return suffixed(database, KEPT_SUFFIX);
}

int kept_waiting(const char *database)
{
	char *path = kept_path(database);
	int yes = path && access(path, F_OK) == 0;

	free(path);
	return yes;
}

/* s as a JSON string, or null when it is NULL or not UTF-8 (a server's
 * answer that is not UTF-8 is not JSON either: it would be recorded as an
 * answer without an id anyway). */
static json_t *text(const char *s, size_t len)
{
	json_t *j = s ? json_stringn(s, len) : NULL;

	return j ? j : json_null();
}

static json_t *entry(const struct kept *k)
{
	const char *outcome = "permanent";

	for (size_t i = 0; i < N_OUTCOMES; i++)
		if (outcomes[i].outcome == k->outcome)
			outcome = outcomes[i].name;
	return json_pack("{s:I, s:s, s:b, s:I, s:s, s:I, s:o, s:o, s:o}", "id", (json_int_t)k->id, "key",
			 k->key, "asked", k->asked, "status", (json_int_t)k->status, "outcome", outcome,
			 "retry_after", (json_int_t)k->retry_after, "error",
			 text(k->error, k->error ? strlen(k->error) : 0), "body",
			 text(k->body, k->body ? strlen(k->body) : 0), "response",
			 text(k->response, k->response_len));
}

/* Write the len bytes of text at the start of fd; 0, or -1 with errno. */
static int write_all(int fd, const char *text, size_t len)
{
	size_t done = 0;
	ssize_t n;

	while (done < len) {
		n = pwrite(fd, text + done, len - done, (off_t)done);
		if (n == 0)
			errno = ENOSPC;
		if (n <= 0 && errno != EINTR)
			return -1;
		if (n > 0)
			done += (size_t)n;
	}
	return 0;
}

/* Close fd, keeping the first error; 0, or -1 with errno. */
static int close_keep(int fd, int rc)
{
	int e = errno;

	if (close(fd) < 0 && rc == 0)
		return -1;
	errno = e;
	return rc;
}

/* Write text to a new file tmp and sync it; 0, or -1 with errno.  Never
 * through a link someone put there: the directory may be writable by the
 * group that queues. */
static int write_file(const char *tmp, const char *text, size_t len)
{
	int fd;

	if (unlink(tmp) < 0 && errno != ENOENT)
		return -1;
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0)
		return -1;
	return close_keep(fd, write_all(fd, text, len) < 0 || fsync(fd) < 0 ? -1 : 0);
}

/* The reserve of path (malloc'd), or NULL. */
static char *reserve_path(const char *path)
{
	return suffixed(path, RESERVE_SUFFIX);
}

/* Is st a file this daemon wrote: regular, its own, for its eyes only,
 * linked once? */
static int ours(const struct stat *st)
{
	return S_ISREG(st->st_mode) && st->st_uid == geteuid() && (st->st_mode & 07777) == 0600 &&
	       st->st_nlink == 1;
}

/* Write text over the reserve, renamed to tmp first, and cut it to len;
 * 0, or -1 with errno (ENOSPC when there is no reserve, or it is too
 * small).  The reserve is used up. */
static int write_reserve(const char *path, const char *tmp, const char *text, size_t len)
{
	char *reserve = reserve_path(path);
	struct stat st;
	int fd, rc;

	if (!reserve || len > KEPT_RESERVE || rename(reserve, tmp) < 0) {
		free(reserve);
		errno = !reserve ? ENOMEM : ENOSPC;
		return -1;
	}
	free(reserve);
	if ((fd = open(tmp, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)) < 0)
		return -1;
	if (fstat(fd, &st) < 0 || !ours(&st) || st.st_size < (off_t)len) {
		errno = ENOSPC; /* not a reserve this daemon wrote, or too small */
		return close_keep(fd, -1);
	}
	rc = write_all(fd, text, len) < 0 || ftruncate(fd, (off_t)len) < 0 || fsync(fd) < 0 ? -1 : 0;
	return close_keep(fd, rc);
}

enum dx_result kept_reserve(const char *database)
{
	char *path = kept_path(database), *reserve = path ? reserve_path(path) : NULL;
	char *tmp = reserve ? suffixed(reserve, ".tmp") : NULL, *zeros = calloc(1, KEPT_RESERVE);
	struct stat st;
	enum dx_result rc = DX_OK;

	if (!tmp || !zeros) {
		log_err("outbox: out of memory");
		rc = DX_NOMEM;
		goto out;
	}
	if (lstat(reserve, &st) == 0 && ours(&st) && st.st_size == KEPT_RESERVE)
		goto out;
	/* Zeros written, not a hole nor fallocate's unwritten extents: writing
	 * over them later allocates nothing. */
	if (write_file(tmp, zeros, KEPT_RESERVE) < 0 || rename(tmp, reserve) < 0 ||
	    durable_sync_dir(reserve) < 0) {
		log_warning(
			"outbox: %s: %s: answers refused by a full disk at a stop may not fit in what is "
			"there of it (their items would be sent again)",
			reserve, strerror(errno));
		unlink(tmp);
		rc = DX_SYSTEM;
	}
out:
	free(zeros);
	free(tmp);
	free(reserve);
	free(path);
	return rc;
}

enum dx_result kept_save(const char *path, const struct kept *v, size_t n)
{
	json_t *all = json_array(), *e;
	char *tmp = suffixed(path, ".tmp"), *text = NULL;
	size_t text_len;
	enum dx_result rc = DX_NOMEM;
	int written;

	for (size_t i = 0; all && i < n; i++)
		if (!(e = entry(&v[i])) || json_array_append_new(all, e) < 0)
			goto out;
	if (!all || !tmp || !(text = json_dumps(all, JSON_COMPACT)))
		goto out;
	text_len = strlen(text);
	rc = DX_OK;
	written = write_file(tmp, text, text_len);
	if (written < 0 && (errno == ENOSPC || errno == EDQUOT)) {
		unlink(tmp); /* gives back what it took, before the reserve is used */
		if ((written = write_reserve(path, tmp, text, text_len)) == 0)
			log_notice("outbox: %s: the disk is full: written over the reserve", path);
	}
	if (written < 0 || rename(tmp, path) < 0 || durable_sync_dir(path) < 0) {
		log_err("outbox: %s: %s", path, strerror(errno));
		unlink(tmp);
		rc = DX_SYSTEM;
	}
out:
	if (rc == DX_NOMEM)
		log_err("outbox: %s: out of memory", path);
	json_decref(all);
	free(text);
	free(tmp);
	return rc;
}

/* Read entry e of the file into *k (its strings e's).  0, or -1 when it
 * is not an answer. */
static int parse(json_t *e, struct kept *k)
{
	json_int_t id, status, retry_after;
	const char *outcome;
	json_t *error, *body, *response;
	size_t i;

	memset(k, 0, sizeof(*k));
	if (json_unpack(e, "{s:I, s:s, s:b, s:I, s:s, s:I, s:o, s:o, s:o}", "id", &id, "key", &k->key,
			"asked", &k->asked, "status", &status, "outcome", &outcome, "retry_after",
			&retry_after, "error", &error, "body", &body, "response", &response) < 0 ||
	    (!json_is_string(error) && !json_is_null(error)) ||
	    (!json_is_string(body) && !json_is_null(body)) ||
	    (!json_is_string(response) && !json_is_null(response)))
		return -1;
	for (i = 0; i < N_OUTCOMES && strcmp(outcomes[i].name, outcome); i++)
		;
	if (i == N_OUTCOMES)
		return -1;
	k->id = id;
	k->status = (long)status;
	k->retry_after = (long)retry_after;
	k->outcome = outcomes[i].outcome;
	k->error = json_is_string(error) ? json_string_value(error) : "";
	k->body = json_string_value(body);
	k->response = json_is_string(response) ? json_string_value(response) : "";
	k->response_len = json_is_string(response) ? json_string_length(response) : 0;
	return 0;
}

enum dx_result kept_load(const char *path, enum dx_result (*take)(const struct kept *k, void *arg), void *arg,
			 int *entries)
{
	json_error_t err;
	json_t *all, *e;
	struct kept k;
	struct stat st;
	enum dx_result rc = DX_OK;
	size_t i;
	char *bad;
	int fd;

	/* Not through a link, and not a FIFO or a device: only the file
	 * kept_save wrote is read. */
	*entries = -1;
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)) < 0 && errno == ENOENT)
		return DX_OK;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		log_err("outbox: %s: not a regular file (%s): left as it is; the items it may hold answers for "
			"are sent again",
			path, fd < 0 ? strerror(errno) : "a link, a directory or a device");
		if (fd >= 0)
			close(fd);
		return DX_OK;
	}
	all = json_loadfd(fd, JSON_ALLOW_NUL, &err);
	close(fd);
	if (!json_is_array(all)) {
		bad = suffixed(path, ".bad");
		log_err("outbox: %s: %s; moved to %s.bad: the items it holds answers for are sent again",
			path, all ? "not a list of answers" : err.text, path);
		if (!bad || rename(path, bad) < 0)
			log_err("outbox: %s: cannot move it aside: %s", path,
				bad ? strerror(errno) : "out of memory");
		free(bad);
		json_decref(all);
		return DX_OK;
	}
	*entries = (int)json_array_size(all);
	json_array_foreach(all, i, e) {
		if (parse(e, &k) < 0)
			log_err("outbox: %s: entry %zu is not an answer; left out (its item is sent again)",
				path, i + 1);
		else if ((rc = take(&k, arg)) != DX_OK)
			break;
	}
	json_decref(all);
	return rc;
}

enum dx_result kept_remove(const char *path)
{
	char *reserve = reserve_path(path);
	int rc;

	/* The disk may still be full: the file's blocks become the reserve
	 * (kept_reserve makes it whole again when it can), so that answers
	 * taken now can be kept again at the stop. */
	rc = reserve ? rename(path, reserve) : -1;
	if (rc < 0)
		rc = unlink(path) < 0 && errno != ENOENT ? -1 : 0;
	if (rc < 0 || durable_sync_dir(path) < 0) {
		log_err("outbox: %s: %s", path, strerror(errno));
		free(reserve);
		return DX_SYSTEM;
	}
	free(reserve);
	return DX_OK;
}
