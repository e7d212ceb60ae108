#!/usr/bin/env python3
"""dexsync report and status, and the README's sqlite3 recipes, on a known dataset."""
import collections
import csv
import datetime
import html.parser
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import unicodedata

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import DEXSYNC, OutboxTest  # noqa: E402

SRCDIR = os.environ.get("DEXSYNC_SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))
NOW = time.time()
GONE = ["conv_0000002", "conv_0000050", "conv_0000299"]
PLANS = {"u_1": "enterprise", "u_2": "pro", "u_3": "enterprise", "u_4": "free", "u_5": "ünïcødé 日本"}


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def width(s):
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


class Html(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = collections.Counter()
        self.h2 = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        self.tags[tag] += 1
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)


class ReportTest(OutboxTest):
    """One dataset for the whole class: built once, read by every test."""
    conversations = 300

    @classmethod
    def setUpClass(cls):
        cls.inst = cls("test_by_status")
        OutboxTest.setUp(cls.inst)
        t = cls.inst
        t.conf = t.write_conf(sync="fetch-details = true", outbox="min-backoff = 1s\nmax-backoff = 1s")
        for i, days in enumerate((0.5, 2, 5, 10, 40)):
            for status in ("open", "snoozed"):
                t.srv.add({"id": "conv_recent_%d_%s" % (i, status), "status": status,
                           "subject": "Recent %s, asks for a REFUND" % days, "user_id": "u_1",
                           "created_at": iso(NOW - days * 86400),
                           "last_message": {"id": "m_recent_%d_%s" % (i, status), "text": "recent"}})
        assert t.once().returncode == 0
        for cid in GONE:
            t.srv.delete(cid)
        time.sleep(1.1)
        t.srv.change("conv_0000010", subject="Changed subject")
        assert t.once().returncode == 0
        for user, plan in PLANS.items():
            t.dexsync("update-user", user, "plan=" + plan)
        t.dexsync("send", "conv_0000001", "rejected")   # targets drain in order: this one meets the 422
        t.dexsync("send", "conv_0000003", "hello")
        t.srv.fault("status", code=422, prefix="/messages", body='{"error": "no"}')
        t.dexsync("send", "conv_0000004", "later")
        t.drain_until_done()
        t.dexsync("send", "conv_0000005", "still pending")
        cls.live = {c["id"]: c for c in t.srv.convs.values()}

    @classmethod
    def tearDownClass(cls):
        OutboxTest.tearDown(cls.inst)

    def setUp(self):
        self.__dict__.update({k: v for k, v in self.inst.__dict__.items() if k not in ("_testMethodName",)})

    def tearDown(self):
        pass

    def report(self, *args, code=0):
        p = subprocess.run([DEXSYNC, "-d", self.db, "report"] + list(args), capture_output=True,
                           timeout=30, env=self.env())
        self.assertEqual(p.returncode, code, p.stderr.decode())
        return p.stdout.decode()

    def csv_rows(self, *args):
        text = self.report(*args, "--format", "csv")
        self.assertTrue(text.endswith("\r\n"))
        return list(csv.reader(io.StringIO(text, newline="")))

    # ---- expected values, computed from the server's data ----
    def by_status(self, days=None):
        c = collections.Counter(v["status"] for v in self.live.values()
                                if days is None or v["created_at"][:10] in days)
        return sorted(c.items())

    def daily(self):
        c = collections.Counter((v["created_at"][:10], v["status"]) for v in self.live.values())
        return sorted((d, s, n) for (d, s), n in c.items())

    def backlog(self):
        edges = [(0, 1, "<1 d"), (1, 3, "1-3 d"), (3, 7, "3-7 d"), (7, 30, "7-30 d"), (30, 1e9, ">30 d")]
        out = []
        for lo, hi, label in edges:
            row = [label]
            for status in ("open", "snoozed"):
                row.append(sum(1 for v in self.live.values() if v["status"] == status and lo <= (
                    NOW - datetime.datetime.strptime(v["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
                        tzinfo=datetime.timezone.utc).timestamp()) / 86400 < hi))
            out.append(row)
        return out

    # ---- reports -----------------------------------------------------
    def test_by_status(self):
        expected = self.by_status()
        self.assertEqual(self.csv_rows("by-status"), [["status", "conversations"]] +
                         [[s, str(n)] for s, n in expected])
        self.assertEqual(json.loads(self.report("by-status", "--format", "json")),
                         [{"status": s, "conversations": n} for s, n in expected])
        lines = self.report("by-status").splitlines()
        self.assertEqual(lines[0].split(), ["status", "conversations"])
        self.assertEqual([l.split() for l in lines[2:]], [[s, str(n)] for s, n in expected])

    def test_daily_and_bounds(self):
        expected = self.daily()
        self.assertEqual(self.csv_rows("daily")[1:], [[d, s, str(n)] for d, s, n in expected])
        got = json.loads(self.report("daily", "--format", "json"))
        self.assertEqual([(r["day"], r["status"], r["conversations"]) for r in got], expected)
        self.assertTrue(all(isinstance(r["conversations"], int) for r in got))
        days = sorted({d for d, _, _ in expected})
        since, until = days[10], days[20]
        self.assertEqual(self.csv_rows("daily", "--since", since, "--until", until)[1:],
                         [[d, s, str(n)] for d, s, n in expected if since <= d <= until])
        inside = {d for d in days if since <= d <= until}
        self.assertEqual(self.csv_rows("by-status", "--since", since, "--until", until)[1:],
                         [[s, str(n)] for s, n in self.by_status(inside)])
        self.assertEqual(self.csv_rows("daily", "--since", "2099-01-01"), [["day", "status", "conversations"]])

    def test_backlog(self):
        expected = self.backlog()
        self.assertEqual([r[0] for r in expected], ["<1 d", "1-3 d", "3-7 d", "7-30 d", ">30 d"])
        self.assertEqual(json.loads(self.report("backlog", "--format", "json")),
                         [{"age": a, "open": o, "snoozed": s} for a, o, s in expected])
        self.assertEqual(expected[0][1:], [1, 1], "the dataset has one of each in the first bucket")

    def test_outbox(self):
        got = {(r["kind"], r["state"]): r for r in json.loads(self.report("outbox", "--format", "json"))}
        self.assertEqual(got[("message", "sent")]["items"], 2)
        self.assertEqual(got[("message", "failed")]["items"], 1)
        self.assertEqual(got[("message", "failed")]["failed_last_24h"], 1)
        self.assertEqual(got[("message", "pending")]["items"], 1)
        self.assertIsInstance(got[("message", "pending")]["oldest_pending_seconds"], int)
        self.assertEqual(got[("user_update", "sent")]["items"], 5)

    def test_sync_history_and_user_attribute(self):
        rows = self.csv_rows("sync-history")
        self.assertEqual(rows[0][:4], ["id", "started_at", "seconds", "outcome"])
        self.assertGreaterEqual(len(rows) - 1, 3)
        self.assertEqual({r[3] for r in rows[1:]}, {"ok"})
        self.assertEqual(self.csv_rows("sync-history", "--since", "2099-01-01")[1:], [])
        plans = collections.Counter(PLANS.values())
        got = json.loads(self.report("user-attribute", "--attribute", "plan", "--format", "json"))
        self.assertEqual({r["value"]: r["users"] for r in got}, dict(plans))
        self.assertEqual({r["attribute"] for r in got}, {"plan"})

    def test_table_aligns_wide_characters(self):
        lines = self.report("user-attribute").splitlines()
        self.assertIn("ünïcødé 日本", "".join(lines))
        self.assertEqual(len({width(l) for l in lines}), 1, "\n".join(lines))

    def test_html_page(self):
        page = self.report("--format", "html")
        p = Html()
        p.feed(page)
        for title in ("Conversations by status", "Conversations created per day (UTC)",
                      "Open and snoozed conversations by age", "Outbox items by kind and state",
                      "Last walks", "Users by custom attribute",
                      "Open and snoozed conversations at the end of each day (UTC)",
                      "Hours from creation to the first close, per week of creation",
                      "Conversations closed and opened again", "Changes seen per walk and field"):
            self.assertIn(title, p.h2)
        # A chart per dated report, each with its <title>, axes and a legend.
        self.assertEqual(p.tags["svg"], 6)
        self.assertEqual(p.tags["figcaption"], 6)
        self.assertEqual(page.count('class="at"'), 12, "an x and a y axis title per chart")
        self.assertGreater(p.tags["rect"], 10)
        for m in re.finditer(r"<(rect|circle)\b[^>]*>(.*?)</\1>", page, re.S):
            self.assertRegex(m.group(2), r"^<title>[^<]+: [^<]+ [0-9.]+</title>$", "a bar or point without its title")
        self.assertEqual(p.tags["rect"] + p.tags["circle"], len(re.findall(r"<(?:rect|circle)\b", page)))
        # The numbers looked at first.
        tiles = re.findall(r'<div class="tile"><div class="v">([^<]*)</div><div class="k">([^<]*)</div>', page)
        got = {k: v for v, k in tiles}
        self.assertEqual(set(got), {"open now", "created, last 7 days", "closed, last 7 days",
                                    "median time to close, last 4 weeks", "oldest open", "outbox pending",
                                    "last walk"})
        self.assertEqual(got["open now"], str(dict(self.by_status())["open"]))
        self.assertEqual(got["outbox pending"], "1")
        self.assertRegex(got["last walk"], r"^\d{4}-\d\d-\d\d \d\d:\d\d$")
        self.assertRegex(page, r'<div class="s">1 failed</div>')
        # Long tables are folded and cut, with a note; short ones open.
        self.assertEqual(p.tags["table"], 10)
        self.assertEqual(p.tags["details"], 10)
        daily_rows = len(self.daily())
        self.assertGreater(daily_rows, 30)
        self.assertIn("The latest 30 of %d rows" % daily_rows, page)
        self.assertIn("The chart shows the latest 90 of", page)
        self.assertIn('<meta name="viewport"', page)
        self.assertEqual(p.tags["script"], 0)
        self.assertNotRegex(page, r"(src|href)=\"?https?:")
        self.assertNotRegex(page, r"@import|url\(")
        one = self.report("daily", "--format", "html")
        self.assertEqual(one.count("<svg"), 1)
        self.assertNotIn('class="tile"', one)

    def test_refusals(self):
        self.assertIn("daily", self.report())
        for args, says in ((["nope"], "unknown report 'nope'"),
                           (["daily", "--since", "2026-02-30"], "is not a date"),
                           (["daily", "--until", "yesterday"], "is not a date"),
                           (["backlog", "--since", "2026-01-01"], "do not apply to backlog"),
                           (["daily", "--format", "xml"], "unknown format 'xml'"),
                           (["daily", "--attribute", "plan"], "--attribute applies to user-attribute only")):
            p = subprocess.run([DEXSYNC, "-d", self.db, "report"] + args, capture_output=True, text=True, timeout=10)
            self.assertEqual(p.returncode, 1, args)
            self.assertIn(says, p.stderr)

    def test_hostile_rows(self):
        """A row anyone can write: escaped in a table and in HTML, exact and
        correctly quoted in CSV and JSON."""
        copy = os.path.join(self.dir, "hostile.db")
        con = sqlite3.connect(self.db)
        con.execute("VACUUM INTO ?", (copy,))
        con.close()
        con = sqlite3.connect(copy)
        evil = 'open\n\x1b[2J"a,b\r\x9b\u202e'
        broken = b"snoozed\x00\xff\x1b]0;t\x07"
        with con:
            con.execute("UPDATE conversations SET status = ? WHERE id = 'conv_0000001'", (evil,))
            con.execute("UPDATE conversations SET status = CAST(? AS TEXT) WHERE id = 'conv_0000003'", (broken,))
        con.close()

        def run(*args):
            p = subprocess.run([DEXSYNC, "-d", copy, "report", "by-status"] + list(args), capture_output=True,
                               timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)
            return p.stdout

        table = run().decode("utf-8")
        for ch in table:
            self.assertFalse((ord(ch) < 0x20 and ch != "\n") or 0x7f <= ord(ch) <= 0x9f or ch == "\u202e",
                             repr(table))
        self.assertIn('open\\n\\x1b[2J"a,b\\r\\u009b\\u202e', table)
        self.assertIn("snoozed\\x00\\xff\\x1b]0;t\\x07", table)
        lines = table.splitlines()
        self.assertEqual(len(lines), 2 + len(self.by_status()) + 2)
        self.assertEqual(len({width(l) for l in lines}), 1, table)

        rows = list(csv.reader(io.StringIO(run("--format", "csv").decode("utf-8", "surrogateescape"), newline="")))
        self.assertIn([evil, "1"], rows)
        self.assertIn([broken.decode("utf-8", "surrogateescape"), "1"], rows)

        got = {r["status"]: r["conversations"] for r in json.loads(run("--format", "json"))}
        self.assertEqual(got[evil], 1)
        self.assertEqual(got["snoozed\x00\ufffd\x1b]0;t\x07"], 1)

        page = run("--format", "html").decode("utf-8")
        self.assertNotIn("\x1b", page)
        self.assertNotIn("\x00", page)
        self.assertIn("open\\n\\x1b[2J&quot;a,b\\r\\u009b\\u202e", page)
        os.remove(copy)

    # ---- status --------------------------------------------------------
    def status(self, db=None):
        return subprocess.run([DEXSYNC, "-d", db or self.db, "status"], capture_output=True, text=True, timeout=10)

    def test_status_exit_codes(self):
        import shutil
        copy = os.path.join(self.dir, "status.db")
        con = sqlite3.connect(self.db)
        con.execute("VACUUM INTO ?", (copy,))
        con.close()
        p = self.status(copy)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("health:        ok", p.stdout)
        self.assertIn("conversations: %d live, 3 gone" % len(self.live), p.stdout)
        self.assertIn("1 pending, 0 sending, 7 sent, 1 failed, 0 cancelled", p.stdout)

        def with_sql(q):
            c = sqlite3.connect(copy)
            with c:
                c.execute(q)
            c.close()
            return self.status(copy)
        with_sql("INSERT INTO outbox(kind, payload, created_at, next_attempt_at) VALUES ('message', "
                 "'{\"conversation_id\": \"c\", \"content\": \"x\"}', '2020-01-01T00:00:00Z', "
                 "'2020-01-01T00:00:00Z')")
        p = self.status(copy)
        self.assertEqual(p.returncode, 2)
        self.assertIn("past its time", p.stdout)
        with_sql("UPDATE outbox SET state = 'cancelled' WHERE created_at = '2020-01-01T00:00:00Z'")
        p = with_sql("INSERT INTO sync_runs(started_at, finished_at, outcome) VALUES "
                     "('2020-01-01T00:00:00Z', '2020-01-01T00:00:05Z', 'ok')")
        self.assertEqual(p.returncode, 2)
        self.assertIn("over 3 intervals", p.stdout)
        p = with_sql("INSERT INTO sync_runs(started_at, finished_at, outcome, error) VALUES "
                     "(strftime('%Y-%m-%dT%H:%M:%SZ', 'now'), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'), 'failed', 'HTTP 500')")
        self.assertEqual(p.returncode, 2)
        self.assertIn("the last walk failed", p.stdout)
        bogus = os.path.join(self.dir, "bogus.db")
        with open(bogus, "w") as f:
            f.write("this is not a database" * 100)
        p = self.status(bogus)
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"not an? (SQLite )?database")
        self.assertEqual(self.status(os.path.join(self.dir, "missing.db")).returncode, 1)
        shutil.os.remove(copy)

    # ---- the README's recipes -------------------------------------------
    def recipes(self):
        with open(os.path.join(SRCDIR, "README.md"), encoding="utf-8") as f:
            text = f.read()
        # The history recipes are checked by test_history.py, on changes it makes.
        found = {k: v for k, v in re.findall(r"```sql\n-- recipe: (.*?)\n(.*?)```", text, re.S)
                 if not k.startswith("history:")}
        self.assertGreaterEqual(len(found), 10)
        return found

    def run_recipe(self, sql):
        p = subprocess.run(["sqlite3", self.db], input="-- recipe\n" + sql, capture_output=True,
                           text=True, timeout=30, cwd=self.dir)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")
        return [tuple(l.split("|")) for l in p.stdout.splitlines()]

    def test_readme_recipes(self):
        r = self.recipes()
        live = self.live.values()
        week_ago = iso(NOW - 7 * 86400)
        expect = {
            "open conversations older than a week, oldest first":
                sorted(((v["id"], v["subject"], v["created_at"]) for v in live
                        if v["status"] == "open" and v["created_at"] < week_ago),
                       key=lambda x: (x[2], x[0]))[:10],
            "conversations created per day, the last 30 days":
                sorted(collections.Counter(v["created_at"][:10] for v in live
                                           if v["created_at"][:10] >= iso(NOW - 30 * 86400)[:10]).items()),
            "search subjects and last messages":
                sorted((v["id"], v["status"], v["subject"]) for v in live
                       if "refund" in v["subject"].lower() or "refund" in v["last_message"]["text"].lower()),
            "users by plan":
                sorted(collections.Counter(PLANS.values()).items(), key=lambda x: (-x[1], x[0])),
            "busiest users, from the raw JSON":
                sorted(collections.Counter(v["user_id"] for v in live).items(), key=lambda x: (-x[1], x[0]))[:5],
            "participants of a conversation, from the detail JSON":
                [("user", self.live["conv_0000001"]["user_id"]), ("admin", "admin_1")],
            "conversations deleted upstream": None,
            "walks per day and how they went": None,
        }
        for name, rows in expect.items():
            if rows is None:
                continue
            got = self.run_recipe(r[name])
            self.assertEqual(got, [tuple(str(x) for x in row) for row in rows], name)
        self.assertGreater(len(self.run_recipe(r["search subjects and last messages"])), 10)
        self.assertEqual([g[0] for g in self.run_recipe(r["conversations deleted upstream"])], sorted(GONE))
        failed = self.run_recipe(r["failed outbox items and why"])
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0][1:5], ("message", "conv_0000001", "1", "422"))
        changed = [c[0] for c in self.run_recipe(r["conversations that changed in the last 24 hours"])]
        # conv_0000010 changed upstream; conv_0000003 and conv_0000004 got
        # our "hello" and "later", which a walk beside the drain may have
        # listed as their last messages already.
        self.assertIn("conv_0000010", changed)
        self.assertLessEqual(set(changed) - {"conv_0000010"}, {"conv_0000003", "conv_0000004"})
        sent = self.run_recipe(r["messages we sent, with Dexra's ids and times"])
        self.assertEqual([s[1] for s in sent], [m["id"] for m in self.srv.messages])
        self.assertTrue(all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", s[4]) for s in sent))
        walks = self.run_recipe(r["walks per day and how they went"])
        self.assertEqual([(w[1]) for w in walks], ["ok"])
        self.assertGreaterEqual(int(walks[0][2]), 3)
        out = os.path.join(self.dir, "open-backlog.csv")
        self.assertEqual(self.run_recipe(r["export the open backlog to CSV for a spreadsheet"]), [])
        with open(out, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        self.assertEqual(rows[0], ["id", "status", "subject", "created_at", "last_message_text"])
        backlog = sorted((v for v in live if v["status"] in ("open", "snoozed")), key=lambda v: v["created_at"])
        self.assertEqual([row[0] for row in rows[1:]], [v["id"] for v in backlog])
        self.assertEqual(rows[1][4], backlog[0]["last_message"]["text"])
        self.assertEqual(len(r), 12, "every recipe is checked above")


if __name__ == "__main__":
    tap.main()
