#!/usr/bin/env python3
"""History: conversation_events written by walks and the outbox, dexsync
history, the history reports and the README's history recipes, against the
fake server changing chosen conversations at chosen walks."""
import csv
import datetime
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import DEXSYNC, OutboxTest  # noqa: E402

SRCDIR = os.environ.get("DEXSYNC_SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def day(offset):
    """Today (UTC) plus offset days, as YYYY-MM-DD."""
    return (datetime.datetime.now(datetime.timezone.utc).date() + datetime.timedelta(days=offset)).isoformat()


class HistoryTest(OutboxTest):
    conversations = 30

    def setUp(self):
        super().setUp()     # the initial mirror: walk 1
        self.srv.walks_started = 1

    def walk(self):
        time.sleep(1.05)    # timestamps have whole seconds: each walk its own
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        return self.scalar("SELECT max(id) FROM sync_runs")

    def open_one(self):
        """A conversation open since the initial mirror (a status change
        before the test's own would be an event too)."""
        return min(cid for cid, v in self.srv.convs.items() if v["status"] == "open" and cid > "conv_0000010")

    def events(self, run=None):
        return self.sql("SELECT conversation_id, field, old_value, new_value, after, seen_at, origin, run_id "
                        "FROM conversation_events WHERE ?1 IS NULL OR run_id = ?1 ORDER BY id", run)

    def dexsync(self, *args, code=0):
        p = super().dexsync(*args)
        self.assertEqual(p.returncode, code, p.stderr)
        return p

    def test_initial_and_unchanged_write_none(self):
        """Counted by a trigger of the test's own on the table, not by timing."""
        self.assertEqual(self.scalar("SELECT count(*) FROM conversation_events"), 0)
        con = sqlite3.connect(self.db)
        with con:
            con.execute("CREATE TABLE t_count(n INTEGER)")
            con.execute("INSERT INTO t_count VALUES (0)")
            con.execute("CREATE TRIGGER t_count_events AFTER INSERT ON conversation_events "
                        "BEGIN UPDATE t_count SET n = n + 1; END")
        con.close()
        for _ in range(2):
            self.walk()
        self.assertEqual(self.scalar("SELECT n FROM t_count"), 0)
        self.assertEqual(self.scalar("SELECT changed FROM sync_runs ORDER BY id DESC LIMIT 1"), 0)
        # A change a person makes with sqlite3 between walks is not a walk's.
        with sqlite3.connect(self.db) as con:
            con.execute("UPDATE conversations SET subject = 'by hand' WHERE id = 'conv_0000001'")
        self.assertEqual(self.scalar("SELECT n FROM t_count"), 0)
        self.assertIsNone(self.scalar("SELECT count(*) FROM sync_state WHERE key = 'history:run'") or None)

    def test_events_match_changes(self):
        c = self.srv.convs
        other = {"open": "closed", "closed": "snoozed", "snoozed": "open"}
        s1 = c["conv_0000001"]["status"]
        self.srv.walk_changes = {
            2: {"conv_0000001": {"status": other[s1]},
                "conv_0000002": {"subject": "A new subject"},
                "conv_0000003": {"last_message": {"id": "m_new_3", "text": "newer"}},
                "conv_0000004": {"user_id": "u_new"},
                "conv_0000005": {"deleted": True}},
            3: {"conv_0000005": {"deleted": False, "status": "snoozed" if c["conv_0000005"]["status"] != "snoozed"
                                 else "open"},
                "conv_0000001": {"status": s1}},
        }
        old = {k: dict(v) for k, v in c.items()}
        run2 = self.walk()
        applied = {cid: t for w, cid, _, t in self.srv.changes_applied if w == 2}
        got = self.events(run2)
        self.assertEqual([(e[0], e[1], e[2], e[3]) for e in got], [
            ("conv_0000001", "status", s1, other[s1]),
            ("conv_0000002", "subject", old["conv_0000002"]["subject"], "A new subject"),
            ("conv_0000003", "last_message", old["conv_0000003"]["last_message"]["id"], "m_new_3"),
            ("conv_0000004", "user", old["conv_0000004"]["user_id"], "u_new"),
            ("conv_0000005", "gone", old["conv_0000005"]["status"], old["conv_0000005"]["status"]),
        ])
        for e in got:
            # The interval holds the real change: after <= change <= seen_at.
            self.assertLessEqual(e[4], iso(applied[e[0]]), e)
            self.assertGreaterEqual(e[5], iso(applied[e[0]]), e)
            self.assertEqual(e[6], "walk")
        self.assertEqual(got[4][5], self.scalar("SELECT gone_at FROM conversations WHERE id = 'conv_0000005'"))
        run3 = self.walk()
        applied = {cid: t for w, cid, _, t in self.srv.changes_applied if w == 3}
        got = self.events(run3)
        st5 = c["conv_0000005"]["status"]
        self.assertEqual([(e[0], e[1], e[2], e[3]) for e in got], [
            ("conv_0000001", "status", other[s1], s1),
            ("conv_0000005", "returned", old["conv_0000005"]["status"], old["conv_0000005"]["status"]),
            ("conv_0000005", "status", old["conv_0000005"]["status"], st5),
        ])
        for e in got:
            self.assertLessEqual(e[4], iso(applied[e[0]]), e)
            self.assertGreaterEqual(e[5], iso(applied[e[0]]), e)
        # An unchanged walk after changes: nothing more.
        n = self.scalar("SELECT count(*) FROM conversation_events")
        self.walk()
        self.assertEqual(self.scalar("SELECT count(*) FROM conversation_events"), n)
        changes = json.loads(self.dexsync("report", "changes", "--format", "json").stdout)
        self.assertEqual({(r["run_id"], r["field"]): r["events"] for r in changes},
                         {(run2, "status"): 1, (run2, "subject"): 1, (run2, "last_message"): 1,
                          (run2, "user"): 1, (run2, "gone"): 1, (run3, "status"): 2, (run3, "returned"): 1})

    def test_outbox_events_and_history(self):
        self.dexsync("send", "conv_0000006", "hello from us")
        out = self.dexsync("new-conversation", "u_7", "--subject", "Made here").stdout.strip()
        self.assertRegex(out, r"^outbox:\d+$")
        self.drain_until_done()
        sent = self.srv.messages[0]["id"]
        created = self.srv.created[0]["id"]
        ev = self.sql("SELECT conversation_id, field, old_value, new_value, origin, run_id, after <= seen_at "
                      "FROM conversation_events ORDER BY id")
        self.assertIn(("conv_0000006", "last_message", "msg_0000006_1", sent, "outbox", None, 1), ev)
        self.assertIn((created, "status", None, "open", "outbox", None, 1), ev)
        self.walk()
        walk_ev = self.sql("SELECT conversation_id, field, old_value, new_value FROM conversation_events "
                           "WHERE origin = 'walk'")
        self.assertEqual(walk_ev, [("conv_0000006", "last_message", "msg_0000006_1", sent)],
                         "the walk sees what we sent; the conversation we made is not gone")
        rows = list(csv.reader(io.StringIO(self.dexsync("history", "conv_0000006", "--format", "csv").stdout,
                                           newline="")))
        self.assertEqual(rows[0], ["at", "after", "event", "old_value", "new_value", "text", "origin", "run_id"])
        events = [r[2] for r in rows[1:]]
        self.assertEqual(events[0], "first seen")
        self.assertIn("message listed", events)
        self.assertIn("message sent", events)
        self.assertEqual(sorted(r[6] for r in rows[1:] if r[2] == "last_message"), ["outbox", "walk"])
        self.assertEqual([r[0] for r in rows[1:]], sorted(r[0] for r in rows[1:]), "in time order")
        js = json.loads(self.dexsync("history", "conv_0000006", "--format", "json").stdout)
        self.assertEqual(len(js), len(rows) - 1)
        self.assertEqual([j["text"] for j in js if j["event"] == "message sent"], ["hello from us"])
        table = self.dexsync("history", "conv_0000006").stdout.splitlines()
        self.assertEqual(table[0].split()[:3], ["at", "after", "event"])
        self.assertEqual(len(table), len(rows) + 1)
        p = self.dexsync("history", "conv_nope", code=1)
        self.assertIn("conversation 'conv_nope' is not in the mirror", p.stderr)
        p = self.dexsync("history", "conv_0000006", "--format", "html", code=1)
        self.assertIn("unknown format 'html'", p.stderr)
        self.dexsync("history", code=2)

    def shift(self, run, seen_day, after_day):
        """Pretend walk run happened on seen_day, its previous on after_day."""
        with sqlite3.connect(self.db) as con:
            con.execute("UPDATE conversation_events SET seen_at = ?2 || substr(seen_at, 11), "
                        "after = ?3 || substr(after, 11) WHERE run_id = ?1", (run, seen_day, after_day))

    def test_reopened_and_backlog_daily(self):
        """Closed on day 2, reopened on day 5 (of a history that began on day 0,
        six days ago): the days in between are without it."""
        x = self.open_one()
        with sqlite3.connect(self.db) as con:
            con.execute("UPDATE sync_state SET value = ? WHERE key = 'history:since'", (day(-6) + "T08:00:00Z",))
        # The created_at the mirror has for x: ten days ago.
        self.srv.change(x, status="open", created_at=day(-10) + "T09:00:00Z")
        self.walk()
        self.srv.walk_changes = {self.srv.walks_started + 1: {x: {"status": "closed"}},
                                 self.srv.walks_started + 2: {x: {"status": "open"}}}
        run_close = self.walk()
        self.shift(run_close, day(-4), day(-5))
        run_reopen = self.walk()
        self.shift(run_reopen, day(-1), day(-2))
        others = sum(1 for cid, v in self.srv.convs.items() if v["status"] == "open" and cid != x)
        snoozed = sum(1 for v in self.srv.convs.values() if v["status"] == "snoozed")
        got = json.loads(self.dexsync("report", "backlog-daily", "--format", "json").stdout)
        self.assertEqual([g["day"] for g in got], [day(d) for d in range(-6, 1)])
        x_open = {-6: 1, -5: 1, -4: 0, -3: 0, -2: 0, -1: 1, 0: 1}
        self.assertEqual([(g["open"], g["snoozed"]) for g in got],
                         [(others + x_open[d], snoozed) for d in range(-6, 1)])
        bounded = json.loads(self.dexsync("report", "backlog-daily", "--since", day(-3), "--until", day(-2),
                                          "--format", "json").stdout)
        self.assertEqual([g["open"] for g in bounded], [others, others])
        reopened = json.loads(self.dexsync("report", "reopened", "--format", "json").stdout)
        self.assertEqual([(r["conversation_id"], r["reopened"], r["last_reopened_at"][:10])
                          for r in reopened], [(x, 1, day(-1))])
        ttc = json.loads(self.dexsync("report", "time-to-close", "--format", "json").stdout)
        created = datetime.date.fromisoformat(day(-10))
        monday = (created - datetime.timedelta(days=created.weekday())).isoformat()
        self.assertEqual(len(ttc), 1)
        self.assertEqual((ttc[0]["week"], ttc[0]["closed"]), (monday, 1))
        # The close lies between day -5 and day -4 (shifted times).
        self.assertGreaterEqual(ttc[0]["median_hours_low"], 5 * 24 - 9 - 24)
        self.assertLessEqual(ttc[0]["median_hours_low"], ttc[0]["median_hours_high"])
        self.assertLessEqual(ttc[0]["median_hours_high"], 6 * 24 + 15)
        self.assertEqual(ttc[0]["p90_hours_high"], ttc[0]["median_hours_high"])

    def test_backlog_daily_groups_events_without_sorting_them(self):
        """The events come out of conversation_events_backlog_days already
        grouped by their two days (0006): no sort of every event."""
        with sqlite3.connect(self.db) as con:
            plan = [r[3] for r in con.execute("EXPLAIN QUERY PLAN SELECT * FROM report_backlog_daily")]
        scans = [p for p in plan if "conversation_events" in p]
        self.assertEqual(len(scans), 1, plan)
        self.assertRegex(scans[0], r"^SCAN conversation_events USING (COVERING )?INDEX "
                                   r"conversation_events_backlog_days$")
        # An initial mirror drops the report indexes of conversations until
        # its end: the report answers without them.
        with sqlite3.connect(self.db) as con:
            con.execute("DROP INDEX conversations_live_day")
            con.execute("DROP INDEX conversations_live_status")
        p = self.dexsync("report", "backlog-daily", "--format", "csv")
        self.assertGreater(len(p.stdout.splitlines()), 1)

    def test_time_to_close_with_an_after_that_is_no_time(self):
        """A close whose `after` is not a time (written by hand) has no low
        bound, as in 0004's view, rather than a low bound of 0 hours."""
        with sqlite3.connect(self.db) as con:
            con.execute("INSERT INTO conversation_events(conversation_id, run_id, field, old_value, new_value, "
                        "after, seen_at, conversation_created_at) VALUES ('conv_t1', NULL, 'status', 'open', "
                        "'closed', 'garbage', '2025-03-05T00:00:00Z', '2025-03-04T00:00:00Z')")
        ttc = json.loads(self.dexsync("report", "time-to-close", "--format", "json").stdout)
        self.assertEqual(ttc, [{"week": "2025-03-03", "closed": 1, "median_hours_low": None,
                                "median_hours_high": 24.0, "p90_hours_low": None, "p90_hours_high": 24.0}])

    def test_history_days_prunes(self):
        self.srv.walk_changes = {2: {"conv_0000008": {"subject": "one"}, "conv_0000009": {"subject": "two"}}}
        self.walk()
        with sqlite3.connect(self.db) as con:
            con.execute("UPDATE conversation_events SET seen_at = ? WHERE conversation_id = 'conv_0000008'",
                        (day(-3) + "T00:00:00Z",))
        self.conf = self.write_conf(sync="history-days = 2")
        self.walk()
        self.assertEqual(self.sql("SELECT conversation_id FROM conversation_events"), [("conv_0000009",)])
        self.conf = self.write_conf(sync="history-days = -1")
        p = self.dexsyncd("-t")
        self.assertEqual(p.returncode, 1)
        self.assertIn("history-days", p.stderr)

    def recipes(self):
        with open(os.path.join(SRCDIR, "README.md"), encoding="utf-8") as f:
            text = f.read()
        return {k: v for k, v in re.findall(r"```sql\n-- recipe: (.*?)\n(.*?)```", text, re.S)
                if k.startswith("history:")}

    def run_recipe(self, sql):
        p = subprocess.run(["sqlite3", self.db], input="-- recipe\n" + sql, capture_output=True,
                           text=True, timeout=30, cwd=self.dir)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")
        return [tuple(l.split("|")) for l in p.stdout.splitlines()]

    def test_readme_recipes(self):
        r = self.recipes()
        self.assertEqual(sorted(r), ["history: a conversation's timeline",
                                     "history: open conversations on a date",
                                     "history: time to close, per week"])
        x = self.open_one()
        self.srv.change(x, status="open", created_at=day(-3) + "T00:00:00Z")
        self.walk()
        self.srv.walk_changes = {self.srv.walks_started + 1: {x: {"status": "closed", "subject": "Done"}}}
        run = self.walk()
        timeline = self.run_recipe(r["history: a conversation's timeline"].replace("conv_0000001", x))
        self.assertEqual([t[1] for t in timeline], ["first seen", "status", "subject"])
        self.assertEqual(timeline[1][2:4], ("open", "closed"))
        ttc = self.run_recipe(r["history: time to close, per week"])
        self.assertEqual(len(ttc), 1)
        self.assertEqual(ttc[0][1], "1")
        self.assertTrue(float(ttc[0][2]) <= float(ttc[0][3]), ttc)
        on_date = self.run_recipe(r["history: open conversations on a date"].replace("2026-01-15", day(0)))
        open_now = self.scalar("SELECT count(*) FROM conversations WHERE status = 'open' AND gone_at IS NULL")
        self.assertEqual(on_date, [(str(open_now),)])
        self.assertEqual(self.run_recipe(r["history: open conversations on a date"]), [], "before history began")
        self.assertIsNotNone(run)


if __name__ == "__main__":
    tap.main()
