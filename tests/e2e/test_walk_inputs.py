#!/usr/bin/env python3
"""The walk against servers that behave oddly (SPEC 3.3, 3.7-3.9): short pages,
no total, fresh cursors over the same items, \\u0000 in strings, hostile ids,
failing details; the deferred indexes, and a walk stopped by a signal."""
import glob
import json
import os
import re
import signal
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import KEY, DexTest  # noqa: E402

MIRROR_TABLES = ("conversations", "messages", "participants")
SRCDIR = os.environ.get("DEXSYNC_SRCDIR",
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def schema_indexes():
    """The indexes src/sql/*.sql leaves on the mirror tables."""
    names = set()
    for path in sorted(glob.glob(os.path.join(SRCDIR, "src", "sql", "*.sql"))):
        with open(path) as f:
            sql = re.sub(r"--[^\n]*", "", f.read())
        for m in re.finditer(r"\b(CREATE(?:\s+UNIQUE)?\s+INDEX|DROP\s+INDEX)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?"
                             r"(\w+)(?:\s+ON\s+(\w+))?", sql, re.I):
            if m.group(1).upper().startswith("DROP"):
                names.discard(m.group(2))
            elif m.group(3) in MIRROR_TABLES:
                names.add(m.group(2))
    return names


class WalkInputsTest(DexTest):
    conversations = 250

    def walk_ok(self, *args, **kw):
        p = self.once(*args, **kw)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p

    def last_run(self):
        cols = ("outcome", "resumed", "pages", "seen", "inserted", "changed", "unchanged", "gone",
                "details", "error")
        return dict(zip(cols, self.sql("SELECT %s FROM sync_runs ORDER BY id DESC LIMIT 1"
                                       % ", ".join(cols))[0]))

    def indexes(self):
        return {r[0] for r in self.sql("SELECT name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL")}

    def count_or_zero(self):
        try:
            return self.scalar("SELECT count(*) FROM conversations")
        except Exception:
            return 0

    def detail_paths(self):
        return [r["path"] for r in self.srv.requests if r["path"].startswith("/conversations/")]

    # ---- the loop guards (SPEC 3.3) -------------------------------------
    def test_short_pages_are_not_a_loop(self):
        # limit is a maximum: 20 items a page when asked for 100, 50 pages
        # for 1000 conversations, is a good walk (it once failed "more than
        # 30 pages"), and a complete one: gone_at is set.
        for n in range(251, 1001):
            self.srv.add(n)
        self.srv.short_pages = 20
        self.walk_ok()
        run = self.last_run()
        self.assertEqual((run["outcome"], run["pages"], run["seen"], run["inserted"]), ("ok", 50, 1000, 1000))
        self.srv.delete("conv_0000500")
        self.walk_ok()
        self.assertEqual(self.last_run()["gone"], 1)
        self.assertEqual(self.scalar("SELECT id FROM conversations WHERE gone_at IS NOT NULL"), "conv_0000500")

    def test_fresh_cursors_over_the_same_items_without_total(self):
        # No total to bound the items, and never the same cursor twice: the
        # pages that list only what the walk listed end it, soon.
        self.srv.no_total = True
        self.srv.recycle = True
        t = time.time()
        p = self.once(timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("3 pages in a row listed no conversation this walk had not listed: "
                      "the server is looping", p.stderr)
        self.assertLess(time.time() - t, 20)
        # 3 pages of 250 items, 3 of repeats, and what the lister fetched ahead.
        self.assertLessEqual(len(self.srv.requests), 6 + 3)
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations"), 250)
        run = self.last_run()
        self.assertEqual((run["outcome"], run["pages"]), ("failed", 6))
        self.assertIn("the server is looping", run["error"])

    def test_same_items_under_a_status_filter_and_after_a_resume(self):
        # The guard works in every mode: a status filter, and a walk resumed
        # from a stored cursor (not an initial mirror either).
        conf = self.write_conf("open.conf", sync='status = {"open"}')
        self.walk_ok(conf=conf)
        self.srv.no_total = True
        self.srv.recycle = True
        p = self.once(conf=conf, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("3 pages in a row listed no conversation", p.stderr)
        self.srv.recycle = False
        self.walk_ok()
        self.srv.pages_served = 0
        self.srv.on_page = lambda s, n: n == 0 and s.fault("malformed", prefix="/conversations")
        self.assertEqual(self.once().returncode, 1)
        self.srv.on_page = None
        self.srv.recycle = True
        p = self.once(timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(self.last_run()["resumed"], 1)
        self.assertIn("3 pages in a row listed no conversation", p.stderr)

    def test_repeated_pages_while_rows_are_inserted_ahead(self):
        # Rows inserted ahead of the walk's position shift the next page back
        # over rows it listed: two such pages in a row are not a loop.
        def insert_ahead(s, n):
            if n in (1, 2):
                for i in range(100):
                    s.add({"id": "conv_0000000_%d_%03d" % (n, i), "status": "open", "subject": "new",
                           "created_at": "2026-01-01T00:00:00Z", "user_id": "u_1"})
        self.srv.on_page = insert_ahead
        self.walk_ok()
        run = self.last_run()
        self.assertEqual((run["pages"], run["seen"], run["unchanged"]), (5, 450, 200))
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations"), 250)
        self.srv.on_page = None
        self.walk_ok()
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations"), 450)

    def test_more_items_than_twice_the_total(self):
        for n in range(251, 1501):
            self.srv.add(n)
        self.srv.claimed_total = 100
        p = self.once(timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("1300 items listed where the server counts 100 conversations "
                      "(at most 2 x 100 + 1000): the server is looping", p.stderr)
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations"), 1200)

    def test_a_list_far_shorter_than_its_total_marks_none_gone(self):
        """One empty page answered 200 (total 250) by a server in trouble
        does not mark the mirror gone; the next full list marks the one
        really deleted."""
        self.walk_ok()
        self.srv.fault("status", code=200, prefix="/conversations", method="GET",
                       body='{"data": [], "meta": {"total": 250, "next_cursor": null}}')
        p = self.walk_ok()
        self.assertIn("the server counts 250 conversations but listed 0: "
                      "none is marked gone after this walk", p.stderr)
        self.assertEqual((self.last_run()["outcome"], self.last_run()["gone"]), ("ok", 0))
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations WHERE gone_at IS NOT NULL"), 0)
        self.assertEqual(self.scalar("SELECT count(*) FROM conversation_events"), 0)
        self.srv.delete("conv_0000100")
        self.walk_ok()
        self.assertEqual(self.sql("SELECT id FROM conversations WHERE gone_at IS NOT NULL"), [("conv_0000100",)])

    # ---- \u0000 (SPEC 3.8) ----------------------------------------------
    def test_nul_in_strings_is_stored_whole(self):
        self.srv.nul_strings = True
        odd = {"id": "conv_nul\x00tail", "status": "open\x00", "subject": "s", "created_at": "2026-01-01T00:00:00Z",
               "user_id": "u\x00x", "last_message": {"id": "msg_nul\x00", "text": "t"}}
        self.srv.add(odd)
        conf = self.write_conf("details.conf", sync="fetch-details = true\nmax-details = 1000")
        p = self.walk_ok(conf=conf)
        self.assertIn("indexes are built at its end", p.stderr)
        self.assertEqual(self.last_run()["inserted"], 251)
        rows = {r[0]: r[1:] for r in self.sql(
            "SELECT id, status, subject, user_id, last_message_id, last_message_text, raw, detail_needed,"
            " detail FROM conversations")}
        self.assertEqual(len(rows), 251)
        for cid, c in self.srv.convs.items():
            want = self.srv.listed(c)
            status, subject, user, mid, text, raw, needed, detail = rows[cid]
            # The columns hold the strings whole, the NUL included; raw is
            # the JSON with the escape.
            self.assertEqual((status, subject, user, mid, text),
                             (want["status"], want["subject"], want["user_id"], want["last_message"]["id"],
                              want["last_message"]["text"]))
            self.assertIn("\x00", subject + text)
            self.assertIn("\\u0000", raw)
            self.assertNotIn("\x00", raw)
            self.assertEqual(json.loads(raw), want)
            self.assertEqual(needed, 0)
            self.assertEqual(json.loads(detail)["id"], cid)
        self.assertIn("/conversations/conv_nul%00tail", self.detail_paths())
        self.assertEqual(self.sql("SELECT conversation_id, user_id FROM participants WHERE position = 0"
                                  " AND conversation_id = ?", "conv_nul\x00tail"), [("conv_nul\x00tail", "u\x00x")])
        self.assertEqual(self.scalar("SELECT conversation_id FROM messages WHERE id = ?", "msg_nul\x00"),
                         "conv_nul\x00tail")
        self.assertEqual(self.indexes() & schema_indexes(), schema_indexes())
        self.walk_ok(conf=conf)
        run = self.last_run()
        self.assertEqual((run["unchanged"], run["changed"], run["details"]), (251, 0, 0))

    def test_cursor_with_nul_is_refused_by_name(self):
        page = '{"data": [], "meta": {"next_cursor": "a\\u0000b"}}'
        self.srv.fault("malformed", prefix="/conversations", body=page)
        p = self.once()
        self.assertEqual(p.returncode, 1)
        self.assertIn("meta.next_cursor holds a NUL character: it cannot be sent back", p.stderr)

    # ---- the deferred indexes (SPEC 3.9) ---------------------------------
    def test_defers_only_the_schemas_indexes(self):
        mine = schema_indexes()
        self.assertGreaterEqual(len(mine), 5)
        self.srv.stop()
        self.srv = type(self.srv)(conversations=0, key=KEY).start()
        self.conf = self.write_conf()
        p = self.walk_ok()
        # The list in src/db.c is the schema's: every one deferred.
        self.assertIn("an initial mirror: %d indexes are built at its end" % len(mine), p.stderr)
        self.assertEqual(self.indexes() & mine, mine)
        self.sql("CREATE INDEX my_subject ON conversations(subject)")
        self.sql("CREATE INDEX my_text ON messages(text)")
        for n in range(1, 2501):
            self.srv.add(n)
        self.srv.on_page = lambda s, n: time.sleep(0.1)
        proc = self.spawn("-n", "-1")
        self.wait_for(lambda: self.count_or_zero() >= 500, 30, "pages stored")
        during = self.indexes()
        self.kill(proc)
        self.assertEqual(during & mine, set(), "the schema's indexes are deferred")
        self.assertLessEqual({"my_subject", "my_text"}, during, "a user's index is never dropped")
        self.assertLessEqual({"my_subject", "my_text"}, self.indexes())
        self.srv.on_page = None
        self.walk_ok()
        self.assertLessEqual(mine | {"my_subject", "my_text"}, self.indexes())
        self.assertEqual(self.scalar("PRAGMA integrity_check"), "ok")

    def test_failed_initial_mirror_builds_its_indexes_one_at_a_time(self):
        mine = schema_indexes()
        self.srv.on_page = lambda s, n: n == 1 and s.fault("malformed", prefix="/conversations")
        p = self.once()
        self.assertEqual(p.returncode, 1)
        self.assertIn("walk failed after 2 pages", p.stderr)
        self.assertEqual(self.indexes() & mine, mine)
        self.assertEqual(self.scalar("SELECT count(*) FROM sync_state WHERE key GLOB 'deferred_index:*'"), 0)
        built = re.findall(r"built the deferred index (\w+) in \d+\.\d+ s", p.stderr)
        self.assertEqual(sorted(built), sorted(mine), "one line, one transaction, per index")
        self.assertEqual(self.scalar("PRAGMA integrity_check"), "ok")

    # ---- a signal (SPEC 3, dexsyncd(8)) -----------------------------------
    def test_sigterm_is_a_notice_and_the_next_walk_resumes(self):
        self.srv.stop()
        self.srv = type(self.srv)(conversations=2500, key=KEY).start()
        self.conf = self.write_conf()
        self.srv.on_page = lambda s, n: time.sleep(0.1)
        proc = self.spawn("-n", "-1")
        self.wait_for(lambda: self.count_or_zero() >= 500, 30, "pages stored")
        proc.send_signal(signal.SIGTERM)
        out, err = self.finish(proc)
        self.assertRegex(err, r"notice: walk interrupted by a signal after \d+ pages \(\d+ seen, .*\): they are "
                              r"stored, and the next walk resumes from the page after them")
        self.assertNotIn("walk failed", err)
        self.assertIn("the deferred indexes are built at the next start", err)
        run = self.last_run()
        self.assertEqual((run["outcome"], run["error"]), ("interrupted", "stopped by a signal"))
        stored = self.scalar("SELECT count(*) FROM conversations")
        self.assertEqual(stored, run["inserted"])
        self.srv.on_page = None
        self.srv.requests.clear()
        self.walk_ok()
        self.assertIn("cursor", self.srv.requests[0]["query"], "resumed from the stored cursor")
        self.assertEqual((self.last_run()["resumed"], self.last_run()["inserted"]), (1, 2500 - stored))
        self.assertEqual(self.indexes() & schema_indexes(), schema_indexes())

    # ---- details (SPEC 3.5, 3.7) ----------------------------------------
    def test_transient_detail_failures_end_the_phase(self):
        conf = self.write_conf("details.conf", sync="fetch-details = true\nmax-details = 1000")
        self.srv.fault("status", code=503, count=100000, prefix="/conversations/")
        t = time.time()
        p = self.once(conf=conf, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertLess(time.time() - t, 15)
        self.assertIn("conversation details: 3 transient failures in a row; "
                      "250 conversations wait for the next cycle", p.stderr)
        self.assertEqual(len(self.detail_paths()), 3)
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations WHERE detail_needed = 1"), 250)
        self.srv.clear_faults()
        self.walk_ok(conf=conf)
        self.assertEqual(self.last_run()["details"], 250)

    def test_details_asked_to_wait_long_end_the_phase_and_count_what_waits(self):
        """A 429 asking for more than a minute is not waited for within the
        phase: three of them end it, and all ten conversations wait."""
        conf = self.write_conf("details.conf", sync="fetch-details = true\nmax-details = 10")
        self.srv.fault("status", code=429, count=100000, prefix="/conversations/", retry_after="120")
        p = self.once(conf=conf, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(self.detail_paths()), 3)
        self.assertIn("conversation details: 3 transient failures in a row; "
                      "10 conversations wait for the next cycle", p.stderr)

    def test_permanent_detail_failure_goes_behind_the_others(self):
        conf = self.write_conf("details.conf", sync="fetch-details = true\nmax-details = 100")
        self.srv.fault("status", code=403, count=100000, prefix="/conversations/conv_0000001")
        p = self.walk_ok(conf=conf)
        self.assertIn("HTTP 403", p.stderr)
        self.assertIn("asked for again after the others", p.stderr)
        self.assertEqual(self.detail_paths()[0], "/conversations/conv_0000001")
        self.assertEqual(self.last_run()["details"], 99)
        # The next cycle asks for the 100 that wait and not for it ...
        self.srv.requests.clear()
        self.walk_ok(conf=conf)
        self.assertNotIn("/conversations/conv_0000001", self.detail_paths())
        self.assertEqual(self.last_run()["details"], 100)
        # ... and the one after, with room to spare, for it last.
        self.srv.requests.clear()
        self.walk_ok(conf=conf)
        paths = self.detail_paths()
        self.assertEqual(len(paths), 51)
        self.assertEqual(paths[-1], "/conversations/conv_0000001")
        # Once it changes it is new again: first in line.
        self.srv.clear_faults()
        self.srv.change("conv_0000001", subject="changed")
        self.srv.requests.clear()
        self.walk_ok(conf=conf)
        self.assertEqual(self.detail_paths(), ["/conversations/conv_0000001"])
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations WHERE detail_needed"), 0)

    def test_hostile_ids_are_escaped_whole_in_the_detail_path(self):
        ids = ["conv_" + "x" * 700, "a/b", "../etc", "..", ".", "q?x=1&y", "h#f", "p%2Fc", "sp ace",
               "caf\u00e9\u65e5", "tab\tnl\n", "conv_0000001/../conv_0000002"]
        for cid in ids:
            self.srv.add({"id": cid, "status": "open", "subject": "hostile", "user_id": "u_1",
                          "created_at": "2026-01-01T00:00:00Z"})
        conf = self.write_conf("details.conf", sync="fetch-details = true\nmax-details = 1000")
        self.walk_ok(conf=conf)
        paths = set(self.detail_paths())
        for cid in ids:
            want = "/conversations/" + urllib.parse.quote(cid, safe="").replace(".", "%2E") \
                if cid in (".", "..") else "/conversations/" + urllib.parse.quote(cid, safe="")
            self.assertIn(want, paths)
        self.assertEqual(self.sql("SELECT id FROM conversations WHERE detail IS NULL"), [])
        for cid in ids:
            self.assertEqual(json.loads(self.scalar("SELECT detail FROM conversations WHERE id = ?", cid))["id"], cid)


if __name__ == "__main__":
    tap.main()
