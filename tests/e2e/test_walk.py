#!/usr/bin/env python3
"""The walk (SPEC 3): the real dexsyncd -1 against the fake Dexra."""
import email.utils
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import DEXSYNC, KEY, DexTest  # noqa: E402

COLUMNS = "id, status, subject, created_at, last_message_id, last_message_text, user_id"
# The secondary indexes an initial mirror builds at its end.
MIRROR_INDEXES = {"conversations_detail_needed", "conversations_live_status", "conversations_live_day",
                  "conversations_gone", "conversations_odd_created",
                  "messages_conversation_id", "participants_user_id"}


def expected_rows(srv):
    return sorted((c["id"], c["status"], c["subject"], c["created_at"], c["last_message"]["id"],
                   c["last_message"]["text"], c["user_id"]) for c in srv.convs.values())


class WalkTest(DexTest):
    conversations = 250

    def walk_ok(self, *args, **kw):
        p = self.once(*args, **kw)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p

    def last_run(self):
        con_cols = ("outcome", "resumed", "pages", "seen", "inserted", "changed", "unchanged",
                    "gone", "details", "requests", "retries", "error")
        row = self.sql("SELECT %s FROM sync_runs ORDER BY id DESC LIMIT 1" % ", ".join(con_cols))[0]
        return dict(zip(con_cols, row))

    def indexes(self):
        return {r[0] for r in self.sql("SELECT name FROM sqlite_schema WHERE type = 'index'")}

    def test_mirror_row_for_row(self):
        p = self.walk_ok()
        self.assertEqual(self.sql("SELECT %s FROM conversations ORDER BY id" % COLUMNS),
                         expected_rows(self.srv))
        self.assertEqual(self.scalar("SELECT count(*) FROM messages WHERE origin = 'listed'"), 250)
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations WHERE json_valid(raw)"), 250)
        self.assertIn("indexes are built at its end", p.stderr)
        self.assertEqual(self.indexes() & MIRROR_INDEXES, MIRROR_INDEXES)
        self.assertEqual(self.scalar("SELECT count(*) FROM sync_state WHERE key NOT GLOB 'history:*'"), 0)
        self.assertEqual(self.scalar("PRAGMA integrity_check"), "ok")
        run = self.last_run()
        self.assertEqual((run["outcome"], run["pages"], run["seen"], run["inserted"]), ("ok", 3, 250, 250))
        self.assertIn("walk completed: 3 pages, 250 seen, 250 inserted, 0 changed, 0 unchanged, 0 gone", p.stderr)
        self.assertEqual(self.scalar("PRAGMA journal_mode"), "wal")
        self.assertGreater(self.scalar("PRAGMA user_version"), 0)
        self.assertNotIn("indexes are built", self.walk_ok().stderr, "a walk over rows keeps its indexes")

    def test_requests_carry_auth_agent_and_reuse_one_connection(self):
        self.walk_ok()
        reqs = self.srv.requests
        self.assertEqual(len(reqs), 3)
        for r in reqs:
            self.assertEqual(r["headers"]["Authorization"], "Bearer " + KEY)
            self.assertTrue(r["headers"]["User-Agent"].startswith("dexsyncd/"))
            self.assertEqual(r["query"]["limit"], "100")
        self.assertNotIn("cursor", reqs[0]["query"])
        self.assertIn("cursor", reqs[1]["query"])
        self.assertEqual(len(self.srv.connections), 1, "keep-alive: one TCP connection")

    def test_unchanged_rewalk_writes_no_row(self):
        self.walk_ok()
        self.sql_script("""
            CREATE TABLE audit(what TEXT);
            CREATE TRIGGER a1 AFTER UPDATE ON conversations BEGIN INSERT INTO audit VALUES ('c'); END;
            CREATE TRIGGER a2 AFTER INSERT ON conversations BEGIN INSERT INTO audit VALUES ('c+'); END;
            CREATE TRIGGER a3 AFTER UPDATE ON messages BEGIN INSERT INTO audit VALUES ('m'); END;
            CREATE TRIGGER a4 AFTER INSERT ON messages BEGIN INSERT INTO audit VALUES ('m+'); END;
        """)
        before = self.sql("SELECT id, changed_at FROM conversations ORDER BY id")
        time.sleep(1.1)  # so that a rewritten changed_at would differ
        self.walk_ok()
        self.assertEqual(self.scalar("SELECT count(*) FROM audit"), 0)
        self.assertEqual(self.sql("SELECT id, changed_at FROM conversations ORDER BY id"), before)
        run = self.last_run()
        self.assertEqual((run["unchanged"], run["inserted"], run["changed"]), (250, 0, 0))

    def test_item_listed_twice_in_an_initial_mirror(self):
        # An initial mirror inserts before it looks: the second listing of
        # an id must find the first and update it, not fail or duplicate it.
        page = {"data": [{"id": "conv_dup", "subject": "first", "last_message": {"id": "m_1", "text": "a"}},
                         {"id": "conv_other", "subject": "other"},
                         {"id": "conv_dup", "subject": "second", "last_message": {"id": "m_2", "text": "b"}}],
                "meta": {"next_cursor": None}}
        self.srv.fault("malformed", prefix="/conversations", body=json.dumps(page))
        p = self.walk_ok()
        self.assertIn("indexes are built at its end", p.stderr)
        self.assertEqual(self.sql("SELECT id, subject, last_message_id FROM conversations ORDER BY id"),
                         [("conv_dup", "second", "m_2"), ("conv_other", "other", None)])
        self.assertEqual(self.sql("SELECT id, conversation_id, text FROM messages ORDER BY id"),
                         [("m_1", "conv_dup", "a"), ("m_2", "conv_dup", "b")])
        run = self.last_run()
        self.assertEqual((run["seen"], run["inserted"], run["changed"], run["unchanged"]), (3, 2, 1, 0))

    def sql_script(self, script):
        import sqlite3
        con = sqlite3.connect(self.db)
        con.executescript(script)
        con.close()

    def test_changes_and_new_rows(self):
        self.walk_ok()
        self.srv.change("conv_0000007", status="closed",
                        last_message={"id": "msg_new", "text": "bye"})
        self.srv.add(900)
        self.walk_ok()
        run = self.last_run()
        self.assertEqual((run["inserted"], run["changed"], run["unchanged"]), (1, 1, 250 - 1))
        self.assertEqual(self.sql("SELECT status, last_message_text FROM conversations WHERE id = 'conv_0000007'"),
                         [("closed", "bye")])
        self.assertEqual(self.scalar("SELECT conversation_id FROM messages WHERE id = 'msg_new'"), "conv_0000007")
        self.assertEqual(self.sql("SELECT %s FROM conversations ORDER BY id" % COLUMNS), expected_rows(self.srv))

    def test_deleted_conversations_get_gone_at_and_come_back(self):
        self.walk_ok()
        for cid in ("conv_0000001", "conv_0000100", "conv_0000250"):
            self.srv.delete(cid)
        saved = self.srv.convs.copy()
        self.walk_ok()
        self.assertEqual(self.last_run()["gone"], 3)
        self.assertEqual(self.sql("SELECT id FROM conversations WHERE gone_at IS NOT NULL ORDER BY id"),
                         [("conv_0000001",), ("conv_0000100",), ("conv_0000250",)])
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations"), 250, "rows are never deleted")
        self.srv.add({"id": "conv_0000100", "status": "open", "subject": "back", "created_at": "2026-01-01T00:00:00Z",
                      "user_id": "u_1", "last_message": {"id": "m", "text": "t"}})
        self.walk_ok()
        self.assertEqual(self.sql("SELECT gone_at, subject FROM conversations WHERE id = 'conv_0000100'"), [(None, "back")])
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations WHERE gone_at IS NOT NULL"), 2)
        del saved

    def test_status_filter_walks_only_those_and_sets_no_gone(self):
        conf = self.write_conf("open.conf", sync='status = {"open"}')
        self.walk_ok(conf=conf)
        opened = sum(1 for c in self.srv.convs.values() if c["status"] == "open")
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations"), opened)
        self.assertTrue(all(r["query"].get("status") == "open" for r in self.srv.requests))
        self.srv.delete(next(c for c, v in sorted(self.srv.convs.items()) if v["status"] == "open"))
        self.walk_ok(conf=conf)
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations WHERE gone_at IS NOT NULL"), 0)

    def test_all_three_statuses_count_as_complete(self):
        conf = self.write_conf("all.conf", sync='status = {"open", "closed", "snoozed"}')
        self.walk_ok(conf=conf)
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations"), 250)
        self.srv.delete("conv_0000002")
        self.walk_ok(conf=conf)
        self.assertEqual(self.scalar("SELECT id FROM conversations WHERE gone_at IS NOT NULL"), "conv_0000002")

    def test_bad_json_keeps_rows_and_logs(self):
        self.walk_ok()
        self.srv.change("conv_0000001", subject="changed")
        self.srv.on_page = lambda s, n: n == 4 and s.fault("malformed", prefix="/conversations")
        p = self.once()
        self.assertEqual(p.returncode, 1)
        self.assertIn("invalid JSON at line 1", p.stderr)
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations"), 250)
        self.assertEqual(self.scalar("SELECT subject FROM conversations WHERE id = 'conv_0000001'"), "changed")
        run = self.last_run()
        self.assertEqual(run["outcome"], "failed")
        self.assertIn("invalid JSON", run["error"])

    def test_transient_errors_are_retried_inside_the_walk(self):
        date = email.utils.formatdate(time.time() + 1, usegmt=True)
        # The drop comes first, on a fresh connection: libcurl itself retries
        # a request whose reused connection turns out dead.
        self.srv.fault("drop")
        self.srv.fault("status", code=503, retry_after="1")
        self.srv.fault("status", code=429, retry_after=date)
        p = self.walk_ok()
        self.assertIn("HTTP 503", p.stderr)
        self.assertIn("retrying in", p.stderr)
        run = self.last_run()
        self.assertEqual((run["retries"], run["seen"], run["requests"]), (3, 250, 6))

    def test_permanent_error_fails_without_retry(self):
        self.srv.fault("status", code=403, body='{"error": "forbidden"}')
        p = self.once()
        self.assertEqual(p.returncode, 1)
        self.assertIn("HTTP 403", p.stderr)
        self.assertIn("forbidden", p.stderr)
        self.assertEqual(len(self.srv.requests), 1)

    def test_repeated_cursor_ends_the_walk(self):
        self.srv.loop_cursor = True
        t = time.time()
        p = self.once(timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("repeated a cursor", p.stderr)
        self.assertLess(time.time() - t, 20)

    def test_page_guard_ends_an_endless_walk(self):
        # Empty pages with fresh cursors after the last item: three of them
        # in a row list nothing new.
        self.srv.endless = True
        p = self.once(timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("3 pages in a row listed no conversation this walk had not listed", p.stderr)
        # The lister fetches ahead: at most its queue of 2 and one in hand more.
        self.assertGreaterEqual(len(self.srv.requests), 6)
        self.assertLessEqual(len(self.srv.requests), 6 + 3)

    def test_resume_after_failure_and_expired_cursor(self):
        # on_page runs while page n is served, so its fault hits page n + 1.
        self.srv.on_page = lambda s, n: n == 0 and s.fault("malformed", prefix="/conversations")
        self.assertEqual(self.once().returncode, 1)
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations"), 100)
        self.assertEqual(self.scalar("SELECT count(*) FROM sync_state WHERE key GLOB 'walk_cursor:*'"), 1)
        # An initial mirror that fails builds its deferred indexes at once.
        self.assertEqual(self.indexes() & MIRROR_INDEXES, MIRROR_INDEXES)
        self.assertEqual(self.scalar("SELECT count(*) FROM sync_state WHERE key GLOB 'deferred_index:*'"), 0)
        self.srv.on_page = None
        self.srv.requests.clear()
        self.srv.delete("conv_0000003")
        self.walk_ok()
        first = self.srv.requests[0]
        self.assertIn("cursor", first["query"], "resumed from the stored cursor")
        run = self.last_run()
        self.assertEqual((run["resumed"], run["pages"], run["gone"]), (1, 2, 0))
        self.assertEqual(self.scalar("SELECT count(*) FROM sync_state WHERE key NOT GLOB 'history:*'"), 0)
        self.assertEqual(self.indexes() & MIRROR_INDEXES, MIRROR_INDEXES)
        # A stored cursor the server no longer accepts starts the walk over.
        self.srv.pages_served = 0
        self.srv.on_page = lambda s, n: n == 0 and s.fault("malformed", prefix="/conversations")
        self.assertEqual(self.once().returncode, 1)
        self.srv.on_page = None
        self.srv.expire_cursors()
        p = self.walk_ok()
        self.assertIn("starting the walk over", p.stderr)
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations"), 250)

    def test_sigkill_mid_walk_resumes_and_completes(self):
        self.srv.stop()
        self.srv = type(self.srv)(conversations=2500, key=KEY).start()
        self.conf = self.write_conf()
        self.srv.on_page = lambda s, n: time.sleep(0.1)
        proc = self.spawn("-n", "-1")
        self.wait_for(lambda: os.path.exists(self.db) and self.count_or_zero() >= 500, 30, "pages stored")
        self.kill(proc)
        stored = self.count_or_zero()
        self.assertLess(stored, 2500)
        self.assertEqual(self.scalar("PRAGMA integrity_check"), "ok")
        # Its row still says 'running': status says it did not end.
        st = subprocess.run([DEXSYNC, "-f", self.conf, "status"], capture_output=True, text=True, timeout=30)
        self.assertEqual(st.returncode, 2, st.stdout + st.stderr)
        self.assertIn("not ended (recorded as running, but no dexsyncd runs)", st.stdout)
        self.assertIn("health:        the last walk did not end", st.stdout)
        # Its row counts what its committed pages stored, as status shows.
        pages, seen, inserted = self.sql("SELECT pages, seen, inserted FROM sync_runs")[0]
        self.assertEqual((seen, inserted), (stored, stored))
        self.assertEqual(pages * 100, stored, "100 a page: sync.page-size's default")
        self.assertIn("%d pages, %d seen, %d inserted" % (pages, stored, stored), st.stdout)
        self.srv.on_page = None
        self.srv.requests.clear()
        self.walk_ok()
        self.assertIn("cursor", self.srv.requests[0]["query"])
        self.assertEqual(self.sql("SELECT %s FROM conversations ORDER BY id" % COLUMNS), expected_rows(self.srv))
        run = self.last_run()
        self.assertEqual(run["resumed"], 1)
        self.assertEqual(run["inserted"], 2500 - stored)
        # The killed walk's row is not left 'running' for ever.
        self.assertEqual(self.sql("SELECT outcome, error FROM sync_runs ORDER BY id"),
                         [("interrupted", "the walk's end was not recorded: its daemon was killed or crashed, "
                                          "or the database refused the write"),
                          ("ok", None)])

    def count_or_zero(self, where=""):
        try:
            return self.scalar("SELECT count(*) FROM conversations " + where)
        except Exception:
            return 0

    def test_details_fetched_for_new_and_changed_oldest_first(self):
        conf = self.write_conf("details.conf", sync="fetch-details = true\nmax-details = 100")
        self.walk_ok(conf=conf)
        self.assertEqual(self.last_run()["details"], 100)
        gets = [r["path"] for r in self.srv.requests if r["path"].startswith("/conversations/")]
        self.assertEqual(len(gets), 100)
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations WHERE detail IS NOT NULL"), 100)
        self.assertEqual(self.scalar("SELECT count(DISTINCT conversation_id) FROM participants"), 100)
        self.assertEqual(self.scalar("SELECT user_id FROM participants WHERE position = 1 LIMIT 1"), "admin_1")
        # Pages are stored before any detail is asked for.
        kinds = ["list" if r["path"] == "/conversations" else "detail" for r in self.srv.requests]
        self.assertEqual(kinds, ["list"] * 3 + ["detail"] * 100)
        self.walk_ok(conf=conf)
        self.walk_ok(conf=conf)
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations WHERE detail IS NULL"), 0)
        self.srv.requests.clear()
        self.walk_ok(conf=conf)
        self.assertEqual(self.last_run()["details"], 0)
        self.srv.change("conv_0000042", subject="a new subject")
        self.srv.requests.clear()
        self.walk_ok(conf=conf)
        self.assertEqual([r["path"] for r in self.srv.requests if r["path"] != "/conversations"],
                         ["/conversations/conv_0000042"])

    def test_a_killed_walks_row_counts_the_details_it_stored(self):
        """Each detail's transaction commits the run's counts too: a walk
        killed half-way through its details says how many it stored."""
        conf = self.write_conf("details.conf", sync="fetch-details = true\nmax-details = 100")
        self.srv.fault("slow", count=100, prefix="/conversations/", delay=0.1)
        proc = self.spawn("-n", "-1", conf=conf)
        self.wait_for(lambda: self.count_or_zero("WHERE detail IS NOT NULL") >= 5, 30, "some details stored")
        self.kill(proc)
        stored = self.scalar("SELECT count(*) FROM conversations WHERE detail IS NOT NULL")
        self.assertLess(stored, 100)
        self.assertEqual(self.sql("SELECT pages, inserted, details FROM sync_runs"), [(3, 250, stored)])

    def test_unreachable_server_fails_with_curl_error(self):
        conf = self.write_conf("dead.conf", base_url="http://127.0.0.1:9/v1")
        p = self.once(conf=conf, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("Failed to connect", p.stderr)
        self.assertIn("retrying in 1 s", p.stderr)

    def test_debug_log_names_requests_but_no_header(self):
        conf = self.write_conf("details.conf", sync="fetch-details = true\nmax-details = 5")
        p = self.walk_ok("-l", "debug", conf=conf)
        self.assertIn("debug: GET /conversations?limit=100: HTTP 200", p.stderr)
        self.assertIn("debug: GET /conversations/conv_0000001: HTTP 200", p.stderr)
        for word in ("Authorization", "Bearer", KEY):
            self.assertNotIn(word, p.stderr)

    def test_wrong_key_is_refused_and_not_logged(self):
        with open(self.keyfile, "w") as f:
            f.write("not-the-key\n")
        p = self.once()
        self.assertEqual(p.returncode, 1)
        self.assertIn("HTTP 401", p.stderr)
        self.assertNotIn("not-the-key", p.stderr)


if __name__ == "__main__":
    tap.main()
