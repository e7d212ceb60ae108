/* test_outbox.c - the outbox's due lookups use their indexes, never a sort
 *
 * Includes outbox.c itself, to run EXPLAIN QUERY PLAN on the very
 * statements the daemon prepares, over a migrated database holding
 * 100,000 items that wait for a retry. */
#include "../../src/outbox.c"

#include <setjmp.h>
#include <stddef.h>
#include <unistd.h>

#include <cmocka.h>

static char path[] = "/tmp/test_outbox_XXXXXX";
static sqlite3 *db;

static int setup(void **state)
{
	int fd = mkstemp(path);

	(void)state;
	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	assert_non_null(db = db_open(path, DB_DAEMON));
	assert_int_equal(db_exec(db,
		"BEGIN;\n"
		"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)\n"
		"INSERT INTO outbox(kind, target, payload) SELECT 'user_update', 'u' || i, '{}' FROM n;\n"
		"UPDATE outbox SET next_attempt_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '+1 hour');\n"
		"INSERT INTO outbox(kind, payload) VALUES ('message', '{\"conversation_id\": \"c\", \"content\": \"x\"}');\n"
		"COMMIT"), 0);
	return 0;
}

static int teardown(void **state)
{
	char wal[sizeof(path) + 8];

	(void)state;
	db_close(db);
	unlink(path);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	unlink(wal);
	snprintf(wal, sizeof(wal), "%s-shm", path);
	unlink(wal);
	return 0;
}

/* The plan of statement which, one line a step, into buf. */
static void plan(int which, char *buf, size_t size)
{
	char *sqltext = sqlite3_mprintf("EXPLAIN QUERY PLAN %s", sql[which]);
	sqlite3_stmt *st;
	size_t len = 0;

	assert_int_equal(sqlite3_prepare_v2(db, sqltext, -1, &st, NULL), SQLITE_OK);
	buf[0] = '\0';
	while (sqlite3_step(st) == SQLITE_ROW) {
		int n = snprintf(buf + len, size - len, "%s\n", sqlite3_column_text(st, 3));

		assert_true(n > 0 && (size_t)n < size - len);
		len += (size_t)n;
	}
	sqlite3_finalize(st);
	sqlite3_free(sqltext);
	print_message("# %s", buf);
}

static void test_due_lookup_uses_the_index(void **state)
{
	char buf[1024];

	(void)state;
	plan(S_DUE, buf, sizeof(buf));
	assert_non_null(strstr(buf, "USING INDEX outbox_due (next_attempt_at<?)"));
	assert_null(strstr(buf, "TEMP B-TREE"));
	plan(S_NEXT_DUE, buf, sizeof(buf));
	assert_non_null(strstr(buf, "USING INDEX outbox_due"));
	assert_null(strstr(buf, "TEMP B-TREE"));
	assert_null(strstr(buf, "SCAN"));
	plan(S_EARLIER, buf, sizeof(buf));
	assert_non_null(strstr(buf, "USING INDEX outbox_queue (target=? AND id<?)"));
}

static void test_due_lookup_finds_the_one_due_item(void **state)
{
	struct outbox ob = { .db = db };
	struct answer *due;
	int found;

	(void)state;
	ob.st[S_DUE] = db_prepare(db, sql[S_DUE]);
	ob.st[S_NEXT_DUE] = db_prepare(db, sql[S_NEXT_DUE]);
	assert_int_equal(due_load(&ob, 32, &due, &found), DX_OK);
	assert_int_equal(found, 1);
	assert_non_null(due);
	assert_null(due->next);
	assert_int_equal(due->it.id, 100001);
	assert_string_equal(due->it.target, "c");
	assert_string_equal(due->it.label, "item 100001 (message to c)");
	answer_free(due);
	/* The rest wait an hour. */
	assert_true(next_due(&ob) <= 0);
	assert_int_equal(db_exec(db, "UPDATE outbox SET state = 'cancelled' WHERE id = 100001"), DX_OK);
	assert_int_equal(due_load(&ob, 32, &due, &found), DX_OK);
	assert_int_equal(found, 0);
	assert_null(due);
	assert_in_range(next_due(&ob), 3590, 3600);
	sqlite3_finalize(ob.st[S_DUE]);
	sqlite3_finalize(ob.st[S_NEXT_DUE]);
}

/* A batch takes the longest due first, up to its size, and no more. */
static void test_due_lookup_loads_a_batch_in_due_order(void **state)
{
	struct outbox ob = { .db = db };
	struct answer *due, *a;
	long long want = 100;
	int found, n = 0;

	(void)state;
	ob.st[S_DUE] = db_prepare(db, sql[S_DUE]);
	assert_int_equal(db_exec(db, "UPDATE outbox SET next_attempt_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', "
				     "'-' || (1000 - id) || ' seconds') WHERE id BETWEEN 100 AND 199"),
			 DX_OK);
	assert_int_equal(due_load(&ob, BATCH_MAX, &due, &found), DX_OK);
	assert_int_equal(found, BATCH_MAX);
	while ((a = due)) {
		assert_int_equal(a->it.id, want++);
		due = a->next;
		answer_free(a);
		n++;
	}
	assert_int_equal(n, BATCH_MAX);
	sqlite3_finalize(ob.st[S_DUE]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_due_lookup_uses_the_index),
		cmocka_unit_test(test_due_lookup_finds_the_one_due_item),
		cmocka_unit_test(test_due_lookup_loads_a_batch_in_due_order),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
