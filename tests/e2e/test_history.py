#!/usr/bin/env python3
"""History: conversation_events written by walks and the outbox, dexsync
history, the history reports and the README's history recipes, against the
fake server changing chosen conversations at chosen walks."""
import csv
import datetime
import io
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import DEXSYNC, DexTest, OutboxTest  # noqa: E402

SRCDIR = os.environ.get("DEXSYNC_SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))


SENT = object()     # walks_list_before_the_answer: the id Dexra gave our message


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def day(offset):
    """Today (UTC) plus offset days, as YYYY-MM-DD."""
    return (datetime.datetime.now(datetime.timezone.utc).date() + datetime.timedelta(days=offset)).isoformat()


def old_time_to_close_sql():
    """0006's report_time_to_close, the definition the rows must not leave,
    as a TEMP view old_time_to_close."""
    with open(os.path.join(SRCDIR, "src", "sql", "0006-history-reports.sql"), encoding="utf-8") as f:
        text = f.read()
    view = re.search(r"^CREATE VIEW report_time_to_close AS\n.*?;$", text, re.S | re.M).group(0)
    return view.replace("CREATE VIEW report_time_to_close", "CREATE TEMP VIEW old_time_to_close", 1)


class TimeToCloseMixin:
    """report_time_to_close against 0006's definition over the same events."""

    def ttc_both(self):
        con = sqlite3.connect(self.db, timeout=10)
        try:
            con.execute(old_time_to_close_sql())
            new = con.execute("SELECT * FROM report_time_to_close").fetchall()
            old = con.execute("SELECT * FROM old_time_to_close").fetchall()
            return new, old
        finally:
            con.close()

    def assert_ttc_as_before(self, msg=None, rows=True):
        new, old = self.ttc_both()
        self.assertEqual(new, old, msg)
        if rows:
            self.assertTrue(new, "some closes to compare")
        return new

    def mark(self):
        """The last event folded; None before the first fold."""
        rows = self.sql("SELECT CAST(value AS INTEGER) FROM sync_state WHERE key = 'history:closes_folded'")
        return rows[0][0] if rows else None

    def assert_folded(self):
        """Everything is folded: the mark is the last event, and the table
        holds each conversation's first close."""
        self.assertEqual(self.mark(), self.scalar("SELECT max(id) FROM conversation_events"))
        self.assertEqual(self.sql("SELECT conversation_id, event_id FROM conversation_first_closes "
                                  "ORDER BY conversation_id"),
                         self.sql("SELECT conversation_id, min(id) FROM conversation_events "
                                  "WHERE field = 'status' AND new_value = 'closed' "
                                  "GROUP BY conversation_id ORDER BY conversation_id"))

    def insert_event(self, cid, new_value="closed", after=None, seen_at="2025-03-06T00:00:00Z",
                     created="2025-03-05T00:00:00Z", field="status", id=None):
        with sqlite3.connect(self.db) as con:
            con.execute("INSERT INTO conversation_events(id, conversation_id, field, old_value, new_value, "
                        "after, seen_at, conversation_created_at) VALUES (?, ?, ?, 'open', ?, ?, ?, ?)",
                        (id, cid, field, new_value, after, seen_at, created))


class HistoryTest(TimeToCloseMixin, OutboxTest):
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
        listed = self.srv.pages_served

        def after_the_first_page(server, headers):
            # The walk of the drain's -1 lists conv_0000006 before our
            # message is applied: the change is the outbox's to tell (the
            # other order is the test below).
            deadline = time.time() + 20
            while server.pages_served == listed and time.time() < deadline:
                time.sleep(0.01)
        self.srv.on_write = after_the_first_page
        self.drain_until_done()
        self.srv.on_write = None
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

    # ---- report_time_to_close: folded first closes, same rows as 0006 ----
    def test_time_to_close_as_before_over_walks_and_the_outbox(self):
        """First closes seen by walks, conversations reopened and closed
        again, a conversation the outbox made closed and one it made open
        that a walk closes: after each step, 0006's rows."""
        c = self.srv.convs
        ids = sorted(c)
        a, b, d, e = [cid for cid in ids if c[cid]["status"] == "open"][:4]
        was = [cid for cid in ids if c[cid]["status"] == "closed"][0]
        w = self.srv.walks_started
        self.srv.walk_changes = {
            w + 1: {a: {"status": "closed"}, b: {"status": "closed"}, was: {"status": "open"}},
            w + 2: {a: {"status": "open"}, d: {"status": "closed"}, was: {"status": "closed"}},
            w + 3: {a: {"status": "closed"}, e: {"status": "snoozed"}, b: {"status": "snoozed"}},
            w + 4: {e: {"status": "closed"}, b: {"status": "closed"}},
        }
        for _ in range(4):
            self.walk()
            self.assert_ttc_as_before()
            self.assert_folded()
        first = dict(self.sql("SELECT conversation_id, event_id FROM conversation_first_closes"))
        self.assertEqual(first[a], self.scalar("SELECT min(id) FROM conversation_events WHERE conversation_id = ? "
                                               "AND new_value = 'closed'", a), "a's first close, not its last")
        self.assertEqual(sorted(first), sorted([a, b, d, e, was]))
        # The outbox: a conversation made closed (its own status event), and
        # one made open, then closed by a walk.
        self.srv.create_status = "closed"
        self.dexsync("new-conversation", "u_7", "--subject", "Made closed")
        self.drain_until_done()
        self.assert_ttc_as_before()
        self.srv.create_status = "open"
        self.dexsync("new-conversation", "u_8", "--subject", "Made open")
        self.drain_until_done()
        made_closed, made_open = self.srv.created[0]["id"], self.srv.created[1]["id"]
        self.assertEqual(self.sql("SELECT origin, old_value, new_value FROM conversation_events "
                                  "WHERE conversation_id = ?", made_closed), [("outbox", None, "closed")])
        self.srv.walk_changes = {self.srv.walks_started + 1: {made_open: {"status": "closed"}}}
        self.walk()
        self.assert_ttc_as_before()
        self.assert_folded()
        first = dict(self.sql("SELECT conversation_id, event_id FROM conversation_first_closes"))
        self.assertIn(made_closed, first)
        self.assertIn(made_open, first)
        # An unchanged walk: nothing to fold, nothing written.
        mark = self.mark()
        self.walk()
        self.assertEqual(self.mark(), mark)

    def test_time_to_close_after_hand_inserted_events(self):
        """Events a person inserts after the last fold are the view's until
        the next walk folds them: an after that is NULL or no time, a
        created_at that is no time (that conversation is not counted, and
        neither is its later close), a second close, a close below the
        first one's id."""
        self.srv.walk_changes = {self.srv.walks_started + 1: {self.open_one(): {"status": "closed"}}}
        self.walk()
        self.assert_folded()
        mark = self.mark()
        self.insert_event("conv_h1", after=None)
        self.insert_event("conv_h2", after="garbage")
        self.insert_event("conv_h3", after="2025-03-05T06:00:00Z", seen_at="2025-03-05T20:00:00Z")
        self.insert_event("conv_h3", after="2025-03-07T00:00:00Z", seen_at="2025-03-08T00:00:00Z")
        self.insert_event("conv_h4", created="no time")
        self.insert_event("conv_h4")
        self.insert_event("conv_h5", new_value="open", created="2025-02-11T00:00:00Z")
        self.insert_event("conv_h5", created="2025-02-11T00:00:00Z", seen_at="2025-02-13T00:00:00Z")
        self.insert_event("conv_h6", field="subject")
        self.assertEqual(self.mark(), mark, "not folded yet")
        rows = self.assert_ttc_as_before()
        # Lows NULL (h2), 0 (h1), 6 (h3); highs 20 (h3), 24, 24; h4 left out.
        self.assertIn(("2025-03-03", 3, 0.0, 24.0, 6.0, 24.0), rows)
        self.assertIn(("2025-02-10", 1, 0.0, 48.0, 0.0, 48.0), rows)
        self.walk()
        self.assert_folded()
        self.assertEqual(self.ttc_both()[0], rows)
        self.assertIsNone(self.scalar("SELECT week FROM conversation_first_closes WHERE conversation_id = 'conv_h4'"))
        # The last events deleted, the mark's among them: the ids of the
        # next ones are above the mark still.
        top = self.scalar("SELECT max(id) FROM conversation_events")
        with sqlite3.connect(self.db) as con:
            con.execute("DELETE FROM conversation_events WHERE id >= ?", (top - 1,))
        self.assertEqual(self.mark(), top - 2)
        self.insert_event("conv_h7")
        self.assertEqual(self.scalar("SELECT max(id) FROM conversation_events"), top - 1)
        self.assert_ttc_as_before()
        # What the README says is not seen, and how to see it again.
        with sqlite3.connect(self.db) as con:
            con.execute("DELETE FROM conversation_events WHERE id = 1")
        self.insert_event("conv_h3", id=1, after="2025-03-05T01:00:00Z", seen_at="2025-03-05T02:00:00Z")
        new, old = self.ttc_both()
        self.assertNotEqual(new, old)
        with sqlite3.connect(self.db) as con:
            con.execute("DELETE FROM conversation_first_closes")
            con.execute("DELETE FROM sync_state WHERE key = 'history:closes_folded'")
        self.assert_ttc_as_before()
        self.walk()
        self.assert_folded()
        self.assert_ttc_as_before()

    def test_time_to_close_as_before_over_random_edits(self):
        """Events inserted (some with ids of their own), changed (moved to
        free ids below the mark too) and deleted (the last ones too) by
        hand, and folded by walks at random: after each step, 0006's rows,
        and after each fold the first closes."""
        rng = random.Random(20261126)
        cids = ["conv_r%02d" % i for i in range(10)]
        times = ["2026-03-%02dT%02d:%02d:00Z" % (d, h, m) for d in (2, 3, 4, 9, 10) for h in (0, 7, 23)
                 for m in (0, 30)]

        def some_time(garbage=True):
            r = rng.random()
            return None if garbage and r < 0.1 else "garbage" if garbage and r < 0.15 else rng.choice(times)

        for step in range(30):
            with sqlite3.connect(self.db) as con:
                for _ in range(rng.randint(1, 12)):
                    ids = [r[0] for r in con.execute("SELECT id FROM conversation_events ORDER BY id")]
                    op = rng.random()
                    top = ids[-1] if ids else 0
                    if op < 0.55 or not ids:
                        # An id of its own only above the last event (README).
                        con.execute("INSERT INTO conversation_events(id, conversation_id, field, old_value, "
                                    "new_value, after, seen_at, conversation_created_at) "
                                    "VALUES (?, ?, ?, 'open', ?, ?, ?, ?)",
                                    (top + rng.randint(1, 3) if rng.random() < 0.2 else None, rng.choice(cids),
                                     "status" if rng.random() < 0.9 else "subject",
                                     "closed" if rng.random() < 0.7 else "open", some_time(),
                                     some_time(garbage=False) if rng.random() < 0.95 else "garbage",
                                     some_time()))
                    elif op < 0.75:
                        con.execute("DELETE FROM conversation_events WHERE id = ?",
                                    (ids[-1] if rng.random() < 0.3 else rng.choice(ids),))
                    else:
                        col, value = rng.choice([("new_value", rng.choice(["open", "closed"])),
                                                 ("field", rng.choice(["status", "user"])),
                                                 ("conversation_id", rng.choice(cids)),
                                                 ("after", some_time()), ("seen_at", some_time(False)),
                                                 ("conversation_created_at", some_time()),
                                                 ("id", rng.choice([i for i in range(1, top + 4)
                                                                    if i not in ids]))])
                        con.execute("UPDATE conversation_events SET %s = ? WHERE id = ?" % col,
                                    (value, rng.choice(ids)))
            con.close()
            self.assert_ttc_as_before("step %d" % step, rows=False)
            if rng.random() < 0.3:
                p = self.once()
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assert_folded()
                self.assert_ttc_as_before("step %d, folded" % step, rows=False)
        self.assertTrue(self.ttc_both()[0], "some closes to compare")

    def test_time_to_close_as_before_after_pruning(self):
        """history-days deletes a conversation's first close: its next close
        is its first; one with no other close leaves the report."""
        c = self.srv.convs
        x, y = [cid for cid in sorted(c) if c[cid]["status"] == "open"][:2]
        w = self.srv.walks_started
        self.srv.walk_changes = {w + 1: {x: {"status": "closed"}, y: {"status": "closed"}},
                                 w + 2: {x: {"status": "open"}},
                                 w + 3: {x: {"status": "closed"}}}
        old_run = self.walk()
        self.walk()
        self.walk()
        self.shift(old_run, day(-5), day(-6))
        self.assert_ttc_as_before()
        self.conf = self.write_conf(sync="history-days = 2")
        self.walk()
        self.assertEqual(self.scalar("SELECT count(*) FROM conversation_events WHERE run_id = ?", old_run), 0)
        self.assertEqual(self.sql("SELECT conversation_id, event_id FROM conversation_first_closes"),
                         self.sql("SELECT conversation_id, id FROM conversation_events "
                                  "WHERE new_value = 'closed'"))
        self.assertEqual(self.sql("SELECT conversation_id FROM conversation_first_closes"), [(x,)])
        self.assert_ttc_as_before()
        self.assert_folded()

    def test_a_conversation_a_walk_lists_before_its_answer_is_recorded_is_still_ours(self):
        """The walk beside the outbox can list a conversation we created
        before the outbox records the answer that created it: its status
        event from nothing is still the outbox's (once), as when the
        outbox records first."""
        self.srv.create_status = "closed"

        def listed_first(server, headers):
            # As a walk would store it, between our request and its answer.
            cid = "conv_new_%d" % server.next_id
            con = sqlite3.connect(self.db, timeout=10)
            with con:
                con.execute("INSERT INTO conversations(id, status, subject, user_id, raw, first_seen_at,"
                            " changed_at) VALUES (?, 'closed', 'Listed first', 'u_7', '{}', ?, ?)",
                            (cid, "2026-11-01T00:00:00Z", "2026-11-01T00:00:00Z"))
            con.close()
        self.srv.on_write = listed_first
        self.dexsync("new-conversation", "u_7", "--subject", "Listed first")
        self.drain_until_done()
        self.srv.on_write = None
        cid = self.srv.created[0]["id"]
        # (The walk of that -1 may list the new conversation too, and its
        # other fields then: only the status event is in question here.)
        self.assertEqual(self.sql("SELECT origin, old_value, new_value, seen_at FROM conversation_events "
                                  "WHERE conversation_id = ? AND field = 'status'", cid),
                         [("outbox", None, "closed", "2026-11-01T00:00:00Z")])
        self.assertEqual(self.scalar("SELECT after <= seen_at FROM conversation_events WHERE conversation_id = ? "
                                     "AND field = 'status'", cid), 1, "never after it was seen")

    def test_a_message_a_walk_lists_before_its_answer_is_recorded_is_one_change(self):
        """The walk beside the outbox can list our message as the last one
        after Dexra applied it and before the outbox records the answer:
        the walk's event tells the change, and the outbox adds none (it
        used to add one from the message to itself)."""
        def listed_first(server, code, answer):
            # As a walk would store it, between the message applied and
            # its answer recorded.
            con = sqlite3.connect(self.db, timeout=10)
            with con:
                con.execute("UPDATE conversations SET last_message_id = ?, last_message_text = 'hi', "
                            "changed_at = ? WHERE id = 'conv_0000006'", (answer["id"], iso(time.time())))
            con.close()
        self.srv.on_written = listed_first
        self.dexsync("send", "conv_0000006", "hi")
        self.drain_until_done()
        self.srv.on_written = None
        self.assertEqual(len(self.srv.messages), 1)
        # (The drain's own walk may list the message before our stand-in
        # stores it, and tell the change itself: the outbox's is in question.)
        self.assertEqual(self.sql("SELECT old_value, new_value FROM conversation_events "
                                  "WHERE conversation_id = 'conv_0000006' AND origin = 'outbox'"), [])
        self.assertEqual(self.scalar("SELECT count(*) FROM conversation_events WHERE old_value IS new_value"), 0)

    def walks_list_before_the_answer(self, *changes):
        """Send a message to conv_0000006; after Dexra applies it and before
        the outbox records the answer, walks list changes of its last
        message (old, new; SENT is ours), stored as a walk stores them.
        The outbox's events of conv_0000006."""
        def listed(server, code, answer):
            con = sqlite3.connect(self.db, timeout=10)
            with con:
                for change in changes:
                    old, new = (answer["id"] if v is SENT else v for v in change)
                    con.execute("UPDATE conversations SET last_message_id = ?, changed_at = ? "
                                "WHERE id = 'conv_0000006'", (new, iso(time.time())))
                    con.execute("INSERT INTO conversation_events(conversation_id, field, old_value, new_value, "
                                "after, seen_at, origin, run_id) VALUES ('conv_0000006', 'last_message', ?, ?, "
                                "?, ?, 'walk', 1)", (old, new, iso(time.time() - 1), iso(time.time())))
            con.close()
        self.srv.on_written = listed
        self.dexsync("send", "conv_0000006", "hi")
        self.drain_until_done()
        self.srv.on_written = None
        return self.sql("SELECT old_value, new_value FROM conversation_events "
                        "WHERE conversation_id = 'conv_0000006' AND origin = 'outbox'")

    def test_a_message_walks_listed_and_passed_before_its_answer_is_recorded_is_no_outbox_change(self):
        """Two walks list our message as the last one, then a reply after
        it, before the outbox records Dexra's answer (a late answer, or one
        to a second request with the same key): the walks told both
        changes, and the outbox adds none (it used to add the reply
        becoming our message, which never happened)."""
        self.assertEqual(self.walks_list_before_the_answer(("msg_0000006_1", SENT), (SENT, "msg_reply")), [])

    def test_a_reply_a_walk_lists_before_our_answer_is_recorded_is_the_walks_to_order(self):
        """A reply comes after our message, and a walk lists it before the
        outbox records Dexra's answer: the outbox adds no event (it used to
        add the reply becoming our message, in the wrong order)."""
        self.assertEqual(self.walks_list_before_the_answer(("msg_0000006_1", "msg_reply")), [])

    def test_an_outbox_change_is_after_its_item_was_queued(self):
        """after is when the item was queued (an earlier request may be the
        one Dexra applied), not when its last attempt started."""
        self.dexsync("send", "conv_0000006", "queued a while ago")
        with sqlite3.connect(self.db) as con:
            con.execute("UPDATE outbox SET created_at = ?", (iso(time.time() - 120),))
        self.srv.fault("status", code=503, prefix="/messages")
        self.drain_until_done()
        queued, sending = self.sql("SELECT created_at, sending_at FROM outbox")[0]
        self.assertLess(queued, sending, "the second attempt started later")
        self.assertEqual(self.sql("SELECT after, after <= seen_at FROM conversation_events "
                                  "WHERE origin = 'outbox'"), [(queued, 1)])

    def hand_edit(self, cid, subject):
        con = sqlite3.connect(self.db, timeout=20)
        with con:
            con.execute("UPDATE conversations SET subject = ? WHERE id = ?", (subject, cid))
        con.close()

    def test_hand_edits_are_no_events_during_a_walk_or_after_a_killed_one(self):
        """An UPDATE a person makes with sqlite3 is no walk's event: made
        while a walk runs (between its transactions), or after a walk a
        SIGKILL cut short (its key used to stay in sync_state)."""
        self.conf = self.write_conf(sync="page-size = 5")
        editor = threading.Thread(target=self.hand_edit, args=("conv_0000001", "Edited during a walk"))

        def edit_at_the_fourth_page(server, n):
            time.sleep(0.05)
            if n == 3:          # conv_0000001 was on the first
                editor.start()
        self.srv.on_page = edit_at_the_fourth_page
        self.walk()
        editor.join()
        self.assertEqual(self.scalar("SELECT subject FROM conversations WHERE id = 'conv_0000001'"),
                         "Edited during a walk")
        self.srv.on_page = lambda server, n: time.sleep(0.2)
        proc = self.spawn("-n", "-1")
        self.wait_for(lambda: self.scalar("SELECT pages FROM sync_runs ORDER BY id DESC LIMIT 1") >= 1, 30,
                      "a page of the walk stored")
        self.kill(proc)
        self.srv.on_page = None
        self.hand_edit("conv_0000002", "Edited after a killed walk")
        self.assertEqual(self.sql("SELECT conversation_id, new_value FROM conversation_events "
                                  "WHERE new_value GLOB 'Edited*'"), [])

    def test_time_to_close_migration_folds_the_events_there(self):
        """A mirror of schema 6 with closes: 0007 folds them once."""
        c = self.srv.convs
        opened = [cid for cid in sorted(c) if c[cid]["status"] == "open"][:3]
        self.srv.walk_changes = {self.srv.walks_started + 1: {cid: {"status": "closed"} for cid in opened}}
        self.walk()
        expected = self.assert_ttc_as_before()
        with open(os.path.join(SRCDIR, "src", "sql", "0006-history-reports.sql"), encoding="utf-8") as f:
            view6 = re.search(r"^CREATE VIEW report_time_to_close AS\n.*?;$", f.read(), re.S | re.M).group(0)
        with sqlite3.connect(self.db) as con:
            con.executescript("""
                DROP TRIGGER conversation_first_closes_delete; DROP TRIGGER conversation_first_closes_update;
                DROP VIEW report_time_to_close;
                DROP VIEW conversation_closes; DROP TABLE conversation_first_closes;
                DELETE FROM sync_state WHERE key = 'history:closes_folded';
                %s
                PRAGMA user_version = 6;""" % view6)
        p = self.dexsync("report", "time-to-close", code=1)
        self.assertIn("start dexsyncd once to migrate it", p.stderr)
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(re.findall(r"applied migration 0007-first-closes.sql in \d+\.\d+ s", p.stderr)), 1)
        self.assert_folded()
        self.assertEqual(self.assert_ttc_as_before(), expected)
        self.assertEqual(self.scalar("SELECT count(*) FROM conversation_first_closes"), 3)

    def test_time_to_close_ranks_through_the_indexes(self):
        """The folded closes come out of their two indexes in order and are
        numbered without a sort: the only sorts are of the events above the
        mark and of the few rows at the ranks."""
        with sqlite3.connect(self.db) as con:
            plan = con.execute("EXPLAIN QUERY PLAN SELECT * FROM report_time_to_close").fetchall()
        children = {}
        for node, parent, _, text in plan:
            children.setdefault(parent, []).append((node, text))

        def subtree(node):
            for child, text in children.get(node, []):
                yield text
                yield from subtree(child)
        numbered = {text: list(subtree(node)) for node, _, _, text in plan if text in ("CO-ROUTINE lows",
                                                                                       "CO-ROUTINE highs")}
        self.assertEqual(sorted(numbered), ["CO-ROUTINE highs", "CO-ROUTINE lows"], plan)
        for name, index in (("lows", "low"), ("highs", "high")):
            steps = numbered["CO-ROUTINE " + name]
            self.assertIn("SEARCH conversation_first_closes USING COVERING INDEX conversation_first_closes_%s "
                          "(week>?)" % index, steps)
            self.assertEqual([t for t in steps if "TEMP B-TREE" in t], [], steps)
        self.assertNotIn("conversation_events_closed", str(plan), "the tail is read by id")
        # No row trigger on a walk's new events: it would make SQLite store
        # the result of each INSERT ... SELECT of 0004's trigger in a
        # temporary table first.
        self.assertEqual(self.sql("SELECT name FROM sqlite_schema WHERE type = 'trigger' "
                                  "AND tbl_name = 'conversation_events' AND sql LIKE '%INSERT ON%'"), [])
        self.assertEqual(sorted(r[0] for r in self.sql("SELECT name FROM sqlite_schema WHERE type = 'trigger' "
                                                       "AND tbl_name = 'conversation_events'")),
                         ["conversation_first_closes_delete", "conversation_first_closes_update"])

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


class TimeToCloseKilledWalkTest(TimeToCloseMixin, DexTest):
    conversations = 1500

    def test_closes_of_a_killed_walk_are_read_then_folded(self):
        """A walk killed after storing some closes never reached its end:
        the view reads them above the mark; the next walk folds them."""
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        c = self.srv.convs
        self.srv.walk_changes = {self.srv.walks_started + 1: {cid: {"status": "closed"} for cid in c
                                                              if c[cid]["status"] != "closed"}}
        self.srv.on_page = lambda s, n: time.sleep(0.2)
        proc = self.spawn("-n", "-1")
        self.wait_for(lambda: self.scalar("SELECT count(*) FROM conversation_events") >= 100, 30, "closes stored")
        self.kill(proc)
        events = self.scalar("SELECT count(*) FROM conversation_events")
        self.assertLess(events, sum(1 for v in self.srv.convs.values() if v["status"] == "closed"))
        self.assertIsNone(self.mark(), "nothing folded yet")
        self.assertEqual(self.scalar("SELECT count(*) FROM conversation_first_closes"), 0)
        rows = self.assert_ttc_as_before()
        self.assertEqual(sum(r[1] for r in rows), events)
        self.srv.on_page = None
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("first closes of", p.stderr)
        self.assert_folded()
        self.assert_ttc_as_before()


if __name__ == "__main__":
    tap.main()
