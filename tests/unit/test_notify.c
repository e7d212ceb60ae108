/* test_notify.c - the sd_notify(3) protocol, spoken without libsystemd */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "notify.h"

/* A datagram socket bound to name ('@' first: abstract), as systemd's. */
static int listen_on(const char *name)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 5 };
	size_t len = strlen(name);
	int fd = socket(AF_UNIX, SOCK_DGRAM, 0);

	assert_true(fd >= 0);
	memcpy(sa.sun_path, name, len);
	if (name[0] == '@')
		sa.sun_path[0] = '\0';
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void assert_received(int fd, const char *want)
{
	char buf[600];
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);

	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, want);
}

static void test_path_socket(void **state)
{
	char path[64];
	int fd;

	(void)state;
	snprintf(path, sizeof(path), "/tmp/dexsync-notify-%ld.sock", (long)getpid());
	unlink(path);
	fd = listen_on(path);
	setenv("NOTIFY_SOCKET", path, 1);
	notify_ready();
	assert_received(fd, "READY=1");
	notify_status("last walk ok: %d seen", 250);
	assert_received(fd, "STATUS=last walk ok: 250 seen");
	notify_stopping();
	assert_received(fd, "STOPPING=1");
	close(fd);
	unlink(path);
}

static void test_abstract_socket(void **state)
{
	char name[64];
	int fd;

	(void)state;
	snprintf(name, sizeof(name), "@dexsync-notify-%ld", (long)getpid());
	fd = listen_on(name);
	setenv("NOTIFY_SOCKET", name, 1);
	notify_reloading();
	assert_received(fd, "RELOADING=1");
	close(fd);
}

/* No socket, or one that is not there, or a relative name: nothing, quietly. */
static void test_no_socket(void **state)
{
	(void)state;
	unsetenv("NOTIFY_SOCKET");
	notify_ready();
	setenv("NOTIFY_SOCKET", "/nonexistent/dexsync.sock", 1);
	notify_ready();
	setenv("NOTIFY_SOCKET", "relative.sock", 1);
	notify_ready();
}

static void test_watchdog(void **state)
{
	char pid[32];

	(void)state;
	unsetenv("WATCHDOG_PID");
	unsetenv("WATCHDOG_USEC");
	notify_init();
	assert_int_equal(notify_watchdog_ms(), -1);
	setenv("WATCHDOG_USEC", "30000000", 1);
	notify_init();
	assert_int_equal(notify_watchdog_ms(), 15000);
	/* Meant for another process (a parent that forked us). */
	setenv("WATCHDOG_PID", "1", 1);
	notify_init();
	assert_int_equal(notify_watchdog_ms(), -1);
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	setenv("WATCHDOG_PID", pid, 1);
	notify_init();
	assert_int_equal(notify_watchdog_ms(), 15000);
	setenv("WATCHDOG_USEC", "30s", 1);
	notify_init();
	assert_int_equal(notify_watchdog_ms(), -1);
	setenv("WATCHDOG_USEC", "0", 1);
	notify_init();
	assert_int_equal(notify_watchdog_ms(), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path_socket),
		cmocka_unit_test(test_abstract_socket),
		cmocka_unit_test(test_no_socket),
		cmocka_unit_test(test_watchdog),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
