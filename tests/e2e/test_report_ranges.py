#!/usr/bin/env python3
"""report_backlog and report_backlog_daily count ranges of an index
(src/sql/0008-backlog-ranges.sql): the same rows as the definitions they
replaced (0002's and 0006's, computed here from the source), over a mirror
with conversations of every status, ages near each bucket edge, gone ones,
and created_at values that are not a time in dexsync's form."""
import datetime
import json
import os
import re
import sqlite3
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import OutboxTest  # noqa: E402

SRCDIR = os.environ.get("DEXSYNC_SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))
EDGES = (1, 3, 7, 30)


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def day(offset):
    return (datetime.datetime.now(datetime.timezone.utc).date() + datetime.timedelta(days=offset)).isoformat()


def old_view(migration, name, temp_name):
    """The definition of view name in migration (a file of src/sql), as a
    TEMP view temp_name."""
    with open(os.path.join(SRCDIR, "src", "sql", migration), encoding="utf-8") as f:
        text = f.read()
    view = re.search(r"^CREATE VIEW %s AS\n.*?;$" % name, text, re.S | re.M).group(0)
    return view.replace("CREATE VIEW " + name, "CREATE TEMP VIEW " + temp_name, 1)


# Values a person (or an API) may leave in created_at: other forms of a
# time, offsets, fractions, dates that do not exist, no time at all.
def odd_values(now):
    t = lambda days, fmt="%Y-%m-%dT%H:%M:%SZ": time.strftime(fmt, time.gmtime(now - days * 86400))  # noqa: E731
    return [
        t(0.5, "%Y-%m-%d %H:%M:%S"), t(2, "%Y-%m-%dT%H:%M:%S"), t(5, "%Y-%m-%dT%H:%M"), t(10, "%Y-%m-%d"),
        t(40, "%Y-%m-%dT%H:%M:%S.123Z"), t(2.5, "%Y-%m-%dT%H:%M:%S+05:00"), t(6.9, "%Y-%m-%dT%H:%M:%S-08:00"),
        t(0.99, "%Y-%m-%dT%H:%M:%S-23:00"), t(29.9, "%Y-%m-%dT%H:%M:%S+02:30"),
        t(1, "%Y-%m-%dT%H:%M:%S.999Z"), t(3, "%Y-%m-%dT%H:%M:%S.000Z"),
        "2026-02-30T10:00:00Z", "2026-13-01T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T23:60:00Z",
        t(2, "%Y-%m-%dt%H:%M:%Sz"), "now", "NOW", " now", "garbage", "", "2460000.5", "12345", "-1",
        "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z", t(4) + " ", " " + t(4), t(8) + "\n",
        "２０２６-01-01T00:00:00Z", t(0.1)[:10] + "T00:00:00ZZ",
    ]


class RangesTest(OutboxTest):
    conversations = 60

    def setUp(self):
        super().setUp()
        now = time.time()
        # Through the API: ages in every bucket, and near each edge, of
        # every status; some of them then gone.
        n = 0
        ages = [0.01, 0.5, 2, 5, 10, 20, 45, 400]
        for edge in EDGES:
            ages += [edge + s / 86400.0 for s in (-600, -90, -30, -5, -1, 0, 1, 5, 30, 90, 600)]
        for age in ages:
            for status in ("open", "snoozed", "closed", None):
                n += 1
                self.srv.add({"id": "conv_r%04d" % n, "status": status, "subject": "s", "user_id": "u_1",
                              "created_at": iso(now - age * 86400),
                              "last_message": {"id": "m_r%04d" % n, "text": "t"}})
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        for cid in sorted(self.srv.convs)[::7]:
            self.srv.delete(cid)
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertGreater(self.scalar("SELECT count(*) FROM conversations WHERE gone_at IS NOT NULL"), 10)

    def add_by_hand(self, values, gone_every=5):
        """Conversations with these created_at values, open and snoozed, some
        of them gone, as a person with sqlite3 would add them."""
        with sqlite3.connect(self.db) as con:
            for i, v in enumerate(values):
                for status in ("open", "snoozed"):
                    con.execute("INSERT INTO conversations(id, status, created_at, raw, first_seen_at, changed_at, "
                                "gone_at) VALUES (?, ?, ?, '{}', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', ?)",
                                ("conv_h%03d_%s" % (i, status), status, v,
                                 "2026-01-02T00:00:00Z" if (i + len(status)) % gone_every == 0 else None))

    def both(self, view, old_sql, old_name):
        """The view's rows and the old definition's, read in one statement
        (one 'now' for both)."""
        con = sqlite3.connect(self.db, timeout=10)
        try:
            con.execute(old_sql)
            new, old = con.execute(
                "SELECT (SELECT json_group_array(json_array(%s)) FROM (SELECT * FROM %s)), "
                "(SELECT json_group_array(json_array(%s)) FROM (SELECT * FROM %s))"
                % (self.columns(con, view), view, self.columns(con, view), old_name)).fetchone()
            return json.loads(new), json.loads(old)
        finally:
            con.close()

    @staticmethod
    def columns(con, view):
        return ", ".join('"%s"' % r[1] for r in con.execute("PRAGMA table_info(%s)" % view))

    def assert_backlog_as_before(self, msg=None):
        new, old = self.both("report_backlog", old_view("0002-reports.sql", "report_backlog", "old_backlog"),
                             "old_backlog")
        self.assertEqual(new, old, msg)
        self.assertEqual(len(new), 5)
        return new

    def assert_backlog_daily_as_before(self, msg=None):
        new, old = self.both("report_backlog_daily",
                             old_view("0006-history-reports.sql", "report_backlog_daily", "old_backlog_daily"),
                             "old_backlog_daily")
        self.assertEqual(new, old, msg)
        self.assertTrue(new)
        return new

    def test_backlog_as_before(self):
        got = self.assert_backlog_as_before("from the API")
        self.assertTrue(all(r[1] > 0 and r[2] > 0 for r in got), got)
        # The command prints the same rows.
        p = self.dexsync("report", "backlog", "--format", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sum(r["open"] + r["snoozed"] for r in json.loads(p.stdout)),
                         sum(r[1] + r[2] for r in got))

    def test_backlog_as_before_with_odd_created_at(self):
        now = time.time()
        self.add_by_hand(odd_values(now))
        with sqlite3.connect(self.db) as con:
            con.execute("INSERT INTO conversations(id, status, created_at, raw, first_seen_at, changed_at) "
                        "VALUES ('conv_blob', 'open', CAST(? AS BLOB), '{}', 'x', 'x'), "
                        "('conv_null', 'snoozed', NULL, '{}', 'x', 'x'), "
                        "('conv_zzz', 'open', 'zzz', '{}', 'x', 'x')", (iso(now - 86400 * 2),))
            odd = con.execute("SELECT count(*) FROM conversations INDEXED BY conversations_odd_created "
                              "WHERE gone_at IS NULL AND status IN ('open', 'snoozed') AND created_at IS NOT NULL "
                              "AND CASE WHEN created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T"
                              "[0-9][0-9]:[0-9][0-9]:[0-9][0-9]Z' THEN created_at IS NOT "
                              "strftime('%Y-%m-%dT%H:%M:%SZ', created_at) ELSE 1 END").fetchone()[0]
        self.assertGreater(odd, 40)
        self.assert_backlog_as_before("odd created_at")
        # Every row changed to an odd one and back: the index follows.
        with sqlite3.connect(self.db) as con:
            con.execute("UPDATE conversations SET created_at = created_at || ' ' WHERE id GLOB 'conv_r*'")
        self.assert_backlog_as_before("all odd")
        with sqlite3.connect(self.db) as con:
            con.execute("UPDATE conversations SET created_at = rtrim(created_at, ' ') WHERE id GLOB 'conv_r*'")
            con.execute("UPDATE conversations SET gone_at = NULL WHERE id GLOB 'conv_h*'")
        self.assert_backlog_as_before("odd ones back from gone")

    def test_backlog_reads_ranges_not_rows(self):
        """With the indexes, the age of a few rows is computed (the windows
        and the odd ones; 0002 computed it of every live open or snoozed
        row), and every read of conversations is an index search (the one
        pass each view makes without the indexes does not run)."""
        with sqlite3.connect(self.db) as con:
            plan = [r[3] for r in con.execute("EXPLAIN QUERY PLAN SELECT * FROM report_backlog")]
            daily = [r[3] for r in con.execute("EXPLAIN QUERY PLAN SELECT * FROM report_backlog_daily")]
        reads = [p for p in plan if "conversations" in p]
        self.assertTrue(reads, plan)
        for p in reads:
            self.assertRegex(p, r"^SEARCH (c|conversations) USING (COVERING )?INDEX "
                                r"conversations_(live_status|odd_created) \(", plan)
        self.assertIn("conversations_odd_created", " ".join(reads))
        self.assertEqual([p for p in daily if p.startswith("SCAN conversations")], [], daily)
        # backlog-daily's live part: a range per day and status.
        self.assertIn("SEARCH conversations USING INDEX conversations_live_status "
                      "(status=? AND created_at>? AND created_at<?)", daily)
        self.add_by_hand(["2026-01-01", "garbage"])
        calls = []

        def julianday(*args):
            calls.append(args)
            with sqlite3.connect(":memory:") as mem:
                return mem.execute("SELECT julianday(?)", args).fetchone()[0]
        with sqlite3.connect(self.db) as con:
            rows = {r[0] for r in con.execute("SELECT created_at FROM conversations "
                                              "WHERE gone_at IS NULL AND status IN ('open', 'snoozed')")}
            con.create_function("julianday", 1, julianday)
            con.execute("SELECT * FROM report_backlog").fetchall()
            computed = {a[0] for a in calls} - {"now"}
            con.execute("DROP INDEX conversations_odd_created")
            del calls[:]
            con.execute("SELECT * FROM report_backlog").fetchall()
        self.assertGreater(len(rows), 80)
        self.assertIn("garbage", computed)
        self.assertLess(len(computed), len(rows) / 4, computed)
        self.assertEqual({a[0] for a in calls} - {"now"}, rows, "without the index, every row")

    def test_backlog_daily_as_before(self):
        x = min(cid for cid, v in self.srv.convs.items() if v["status"] == "open")
        self.srv.change(x, status="closed")
        time.sleep(1.05)
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.add_by_hand(odd_values(time.time()) + [day(-2) + "T00:00:00Z", day(-2), day(-3) + "x",
                                                    day(-9) + "T23:59:59Z", day(1) + "T00:00:00Z"])
        for since in (None, day(-12) + "T08:00:00Z", day(-3) + "T00:00:00Z", day(-400), day(-2)[:9] + "9",
                      day(0), "2026-1-5", "abc", "", "2026-02-30", day(-5)[:10] + "\u00e9x"):
            with sqlite3.connect(self.db) as con:
                if since is None:
                    con.execute("DELETE FROM sync_state WHERE key = 'history:since'")
                else:
                    con.execute("INSERT INTO sync_state(key, value) VALUES ('history:since', ?) "
                                "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (since,))
            rows = self.assert_backlog_daily_as_before("since %r" % since)
            if since and since[:10] == day(-12):
                self.assertEqual(len(rows), 13)

    def test_status_counts_live_and_gone(self):
        """dexsync status: all conversations less the gone ones, as the rows
        say, with rows gone and back by hand."""
        self.add_by_hand(odd_values(time.time()), gone_every=3)
        for _ in range(2):
            live, gone = self.sql("SELECT sum(gone_at IS NULL), sum(gone_at IS NOT NULL) FROM conversations")[0]
            self.assertGreater(gone, 20)
            p = self.dexsync("status")
            self.assertIn("conversations: %d live, %d gone\n" % (live, gone), p.stdout)
            with sqlite3.connect(self.db) as con:
                con.execute("UPDATE conversations SET gone_at = CASE WHEN gone_at IS NULL THEN 'x' END "
                            "WHERE id GLOB 'conv_h*'")

    def test_migration_from_schema_7(self):
        """A mirror of schema 7 with odd created_at values: 0008 builds the
        index of the odd ones over the rows there, and the views answer as
        0002's and 0006's did.  The odd ones come from the API here (by
        hand, the walk would find them gone)."""
        for i, v in enumerate(odd_values(time.time())):
            for status in ("open", "snoozed"):
                self.srv.add({"id": "conv_o%03d_%s" % (i, status), "status": status, "subject": "s",
                              "user_id": "u_1", "created_at": v, "last_message": {"id": "m_o%03d%s" % (i, status),
                                                                                   "text": "t"}})
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        backlog = old_view("0002-reports.sql", "report_backlog", "report_backlog")
        daily = old_view("0006-history-reports.sql", "report_backlog_daily", "report_backlog_daily")
        with sqlite3.connect(self.db) as con:
            con.executescript("""
                DROP INDEX conversations_odd_created;
                DROP VIEW report_backlog; DROP VIEW report_backlog_daily;
                %s;
                %s;
                PRAGMA user_version = 7;""" % (backlog.replace("CREATE TEMP VIEW", "CREATE VIEW"),
                                               daily.replace("CREATE TEMP VIEW", "CREATE VIEW")))
        p = self.dexsync("report", "backlog")
        self.assertIn("start dexsyncd once to migrate it", p.stderr)
        p = self.once("-l", "info")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(re.findall(r"applied migration 0008-backlog-ranges.sql in \d+\.\d+ s", p.stderr)), 1)
        self.assertEqual(self.scalar("PRAGMA user_version"), 8)
        self.assertGreater(self.scalar("SELECT count(*) FROM conversations INDEXED BY conversations_odd_created "
                                       "WHERE gone_at IS NULL AND status IN ('open', 'snoozed') "
                                       "AND created_at IS NOT NULL AND CASE WHEN created_at GLOB "
                                       "'[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:"
                                       "[0-9][0-9]Z' THEN created_at IS NOT strftime('%Y-%m-%dT%H:%M:%SZ', "
                                       "created_at) ELSE 1 END"), 40)
        self.assert_backlog_as_before("migrated")
        self.assert_backlog_daily_as_before("migrated")

    def test_views_answer_without_the_indexes(self):
        """While an initial mirror runs its report indexes are missing: the
        views answer, with the same rows."""
        self.add_by_hand(odd_values(time.time()))
        with sqlite3.connect(self.db) as con:
            for name in ("conversations_live_status", "conversations_live_day", "conversations_odd_created"):
                con.execute("DROP INDEX " + name)
        self.assert_backlog_as_before("no indexes")
        self.assert_backlog_daily_as_before("no indexes")


if __name__ == "__main__":
    tap.main()
