/* lock.h - one dexsyncd per database (SPEC 3, "One daemon per database")
 *
 * The daemon holds flock(LOCK_EX) on DATABASE.lock (DATABASE's real path:
 * every symbolic link to one file finds one lock), which holds its pid,
 * for as long as it runs; the kernel drops the lock when the process ends,
 * however it ends.  flock() locks do not interact with the POSIX locks
 * SQLite takes on the database itself, and a separate file means closing it
 * never drops one of SQLite's locks. */
#ifndef DEXSYNC_LOCK_H
#define DEXSYNC_LOCK_H

/* Take the daemon's lock on database's lock file.  Returns the lock's file
 * descriptor (keep it open; it survives fork() and daemon()), or -1 after
 * logging why: "DATABASE is served by dexsyncd (pid N)" when another holds
 * it.  lock_write_pid records the caller's pid once it is final (after
 * daemon()). */
int lock_daemon(const char *database);
void lock_write_pid(int fd);

/* For the CLI: take the same lock for a repair that only a database nobody
 * serves allows (retry or cancel an item stranded in 'sending').  Returns
 * the descriptor (release with lock_release), or -1 with *pid the serving
 * daemon's pid (0 when unknown) when a daemon serves the database, or -1
 * with *pid = -1 after logging an error. */
int lock_try(const char *database, long *pid);

/* Is a daemon serving database?  Its pid (0 when it did not write one yet),
 * -1 when none is, -2 on error (logged).  Never creates the lock file. */
long lock_holder(const char *database);

/* Is the daemon's lock *fd still the file database's lock is looked for
 * in?  Someone removed or replaced it: lock the file there again (*fd
 * becomes the new one).  0, or -1 (logged) when another daemon holds it
 * now: the caller must stop. */
int lock_check(int *fd, const char *database);

void lock_release(int fd);

#endif
