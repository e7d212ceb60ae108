/* backup.c - dexsync backup: an online, consistent copy of the mirror
 *
 * SQLite's backup API copies a database page by page.  Left to itself it
 * starts over whenever another process commits to the source between two
 * steps, so with a daemon committing every second a large copy might never
 * end.  Holding a read transaction on the source across all the steps pins
 * one snapshot instead: in WAL mode that never blocks the daemon's writes
 * (it only keeps checkpoints from passing the snapshot until the copy is
 * done, so the WAL may grow meanwhile).  The steps are small and paced
 * all the same, so the copy's reads and writes never hog the disk. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backup.h"
#include "db.h"
#include "durable.h"
#include "log.h"

static void pause_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

enum dx_result backup_copy(sqlite3 *src, sqlite3 *dst, volatile sig_atomic_t *stop, long *pages)
{
	sqlite3_backup *b;
	char *msg = NULL;
	int rc;

	*pages = 0;
	/* The snapshot: a read transaction, started by a read. */
	if (sqlite3_exec(src, "BEGIN; SELECT count(*) FROM sqlite_schema", NULL, NULL, &msg) != SQLITE_OK) {
		db_error_at(NULL, src, NULL, msg);
		sqlite3_free(msg);
		db_rollback(src);
		return DX_DB;
	}
	if (!(b = sqlite3_backup_init(dst, "main", src, "main"))) {
		log_err("backup: %s", sqlite3_errmsg(dst));
		db_rollback(src);
		return DX_DB;
	}
	do {
		rc = sqlite3_backup_step(b, BACKUP_STEP_PAGES);
		if (rc == SQLITE_OK)
			pause_ms(BACKUP_PAUSE_MS);
		else if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
			pause_ms(50); /* the destination, taken by someone else */
		*pages = sqlite3_backup_pagecount(b);
	} while ((rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED) && !(stop && *stop));
	sqlite3_backup_finish(b);
	db_rollback(src);
	if (rc != SQLITE_DONE && stop && *stop) {
		log_err("backup: stopped by a signal");
		return DX_STOPPED;
	}
	if (rc != SQLITE_DONE) {
		log_err("backup: %s", sqlite3_errstr(rc));
		return DX_DB;
	}
	/* The source's header says WAL; the copy is one file. */
	if (sqlite3_exec(dst, "PRAGMA journal_mode = DELETE", NULL, NULL, &msg) != SQLITE_OK) {
		log_err("backup: %s", msg ? msg : sqlite3_errmsg(dst));
		sqlite3_free(msg);
		return DX_DB;
	}
	return DX_OK;
}

int backup_integrity(sqlite3 *db, void (*report)(void *arg, const char *line), void *arg)
{
	sqlite3_stmt *st = NULL;
	int rc, n = 0;

	if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK) {
		db_error_in(db, "integrity_check");
		return -1;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *text = (const char *)sqlite3_column_text(st, 0);
		char *copy, *line, *save = NULL;

		if (!text || !strcmp(text, "ok"))
			continue;
		/* A row may hold several lines, after a "*** in database main ***". */
		if (!(copy = strdup(text))) {
			n++;
			report(arg, "out of memory");
			continue;
		}
		for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			if (!strncmp(line, "*** in database ", 16))
				continue;
			n++;
			report(arg, line);
		}
		free(copy);
	}
	if (rc != SQLITE_DONE) {
		/* A file damaged enough stops the check itself: one more problem. */
		n++;
		report(arg, sqlite3_errmsg(db));
	}
	sqlite3_finalize(st);
	return n;
}

/* The backup's own signal handling: the temporary file goes away. */
static volatile sig_atomic_t backup_stop;

static void on_signal(int sig)
{
	(void)sig;
	backup_stop = 1;
}

/* Each problem the copy's integrity_check finds, logged. */
static void log_problem(void *arg, const char *line)
{
	log_err("backup %s: integrity_check: %s", (const char *)arg, line); /* escaped there */
}

/* Remove an unfinished copy and the journal SQLite may have left by it. */
static void remove_copy(const char *tmp)
{
	char *journal;

	unlink(tmp);
	if (asprintf(&journal, "%s-journal", tmp) >= 0) {
		unlink(journal);
		free(journal);
	}
}

/* Put tmp in place as path, never over an existing file: renameat2 with
 * RENAME_NOREPLACE, or where the file system cannot, link and unlink.
 * 0, or -1 with errno (EEXIST: path exists). */
static int place(const char *tmp, const char *path)
{
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	if (link(tmp, path) < 0)
		return -1;
	unlink(tmp);
	return 0;
}

int backup_run(sqlite3 *src, const char *path, FILE *out)
{
	struct sigaction sa, old[3];
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
	struct timespec t0, t1;
	sqlite3 *dst = NULL;
	struct stat st;
	char *tmp = NULL, *dir = NULL, *name = NULL;
	long pages = 0;
	int fd, rc = 1, problems;

	if (!*path) {
		log_err("backup: the file name is empty");
		return 1;
	}
	if (lstat(path, &st) == 0) {
		log_err("backup: %s exists; a backup never overwrites a file", path);
		return 1;
	}
	if (errno != ENOENT) {
		log_err("backup: %s: %s", path, strerror(errno));
		return 1;
	}
	if (asprintf(&tmp, "%s.tmp-XXXXXX", path) < 0)
		tmp = NULL;
	if (!tmp || !(dir = durable_dir_of(path))) {
		log_err("backup: out of memory");
		free(tmp);
		return 1;
	}
	if ((fd = mkstemp(tmp)) < 0) {
		log_err("backup: cannot create a file next to %s: %s", path, strerror(errno));
		free(tmp);
		free(dir);
		return 1;
	}
	close(fd);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	for (int i = 0; i < 3; i++)
		sigaction(sigs[i], &sa, &old[i]);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!(name = db_file_name(tmp)) ||
	    sqlite3_open_v2(name, &dst, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
		log_err("backup: %s: %s", tmp, dst ? sqlite3_errmsg(dst) : "out of memory");
		goto done;
	}
	if (backup_copy(src, dst, &backup_stop, &pages) != DX_OK)
		goto done;
	problems = backup_integrity(dst, log_problem, (void *)path);
	if (problems != 0) {
		if (problems > 0)
			log_err("backup: the copy failed its integrity check; %s not written", path);
		goto done;
	}
	if (sqlite3_close(dst) != SQLITE_OK) {
		log_err("backup: %s: %s", tmp, sqlite3_errmsg(dst));
		goto done;
	}
	dst = NULL;
	if (backup_stop) {
		log_err("backup: stopped by a signal");
		goto done;
	}
	if (durable_sync(tmp, O_RDONLY) < 0 || place(tmp, path) < 0) {
		log_err("backup: %s: %s%s", path, strerror(errno),
			errno == EEXIST ? " (it appeared during the backup; not overwritten)" : "");
		goto done;
	}
	durable_sync(dir, O_RDONLY | O_DIRECTORY);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	fprintf(out, "backup: %s, %ld pages, %.1f MB, integrity ok, in %.1f s\n", path, pages,
		stat(path, &st) == 0 ? (double)st.st_size / 1e6 : 0.0,
		(double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	rc = 0;
done:
	if (dst)
		sqlite3_close(dst);
	if (rc != 0)
		remove_copy(tmp);
	for (int i = 0; i < 3; i++)
		sigaction(sigs[i], &old[i], NULL);
	free(name);
	free(tmp);
	free(dir);
	return rc;
}
