#!/usr/bin/env python3
"""The fault matrix: what a server we do not control can do to a walk.

Each test mirrors the workspace, changes it upstream, injects one fault and
runs dexsyncd -1; it must end in bounded time with an error line naming the
cause (or cope), leave the rows mirrored before intact, and after the fault
is gone produce a complete mirror."""
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import SANITIZED, DexTest  # noqa: E402

COLUMNS = "id, status, subject, created_at, last_message_id, last_message_text, user_id"


class FaultTest(DexTest):
    conversations = 250

    def setUp(self):
        super().setUp()
        self.conf = self.write_conf(api="timeout = 3s")
        self.assertEqual(self.once().returncode, 0)
        self.before = self.sql("SELECT %s FROM conversations ORDER BY id" % COLUMNS)
        self.srv.change("conv_0000001", subject="changed upstream")
        self.srv.add(5000)

    def expected(self):
        return sorted((c["id"], c["status"], c["subject"], c["created_at"], c["last_message"]["id"],
                       c["last_message"]["text"], c["user_id"]) for c in self.srv.convs.values())

    def faulty_walk(self, cause, code=1, limit=40, changed_upstream=()):
        t = time.time()
        p = self.once(timeout=limit + 30)
        took = time.time() - t
        self.assertEqual(p.returncode, code, p.stderr)
        self.assertLess(took, limit, "bounded in time")
        if cause:
            self.assertIn(cause, p.stderr)
        self.assertEqual(self.scalar("PRAGMA integrity_check"), "ok")
        rows = {r[0]: r for r in self.sql("SELECT %s FROM conversations" % COLUMNS)}
        for r in self.before:
            if r[0] != "conv_0000001" and r[0] not in changed_upstream:
                self.assertEqual(rows.get(r[0]), r, "an earlier row changed")
        return p

    def recovers(self):
        self.srv.clear_faults()
        self.srv.on_page = None
        self.srv.loop_cursor = False
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.sql("SELECT %s FROM conversations WHERE gone_at IS NULL ORDER BY id" % COLUMNS),
                         self.expected())

    def fault_on_page(self, n, kind, **opts):
        """Inject a fault on the list request after page n of the next walk."""
        self.srv.pages_served = 0
        self.srv.on_page = lambda s, i: i == n and s.fault(kind, prefix="/conversations", **opts)

    def test_5xx_burst(self):
        self.srv.fault("status", code=503, count=4, prefix="/conversations")
        self.faulty_walk("HTTP 503")
        self.recovers()

    def test_429_storm_seconds(self):
        self.srv.fault("status", code=429, count=4, retry_after="1", prefix="/conversations")
        p = self.faulty_walk("HTTP 429")
        self.assertIn("retrying in 1 s", p.stderr)
        self.recovers()

    def test_429_storm_http_date(self):
        import email.utils
        self.srv.fault("status", code=429, count=4, prefix="/conversations",
                       retry_after=email.utils.formatdate(time.time() + 2, usegmt=True))
        self.faulty_walk("HTTP 429")
        self.recovers()

    def test_429_too_long_is_left_to_the_next_cycle(self):
        self.srv.fault("status", code=429, retry_after="3600", prefix="/conversations")
        self.faulty_walk("the server asks to wait 3600 s", limit=5)
        self.recovers()

    def test_the_next_walk_waits_for_a_long_retry_after(self):
        # Walking every second, a 429 asking for 90 s: the service says so
        # and leaves the server alone, instead of asking again each second.
        self.srv.fault("status", code=429, retry_after="90", prefix="/conversations")
        self.conf = self.write_conf(api="timeout = 3s", sync="interval = 1s")
        proc = self.spawn("-n")
        lists = lambda: sum(1 for r in self.srv.requests if r["path"] == "/conversations")  # noqa: E731
        start = lists()
        deadline = time.time() + 20
        while time.time() < deadline and lists() == start:
            time.sleep(0.1)
        time.sleep(4)
        proc.terminate()
        out, err = self.finish(proc)
        # 90 s, less the second or so since the answer
        self.assertRegex(err, r"next walk in (89|90) s: the server asked to wait that long")
        self.assertEqual(lists() - start, 1, "asked again before the server's wait")

    @unittest.skipIf(SANITIZED, "20 s of a trickling server: once, in the plain run, is enough")
    def test_slow_loris_past_timeout(self):
        self.srv.fault("trickle", count=4, delay=1, prefix="/conversations")
        self.faulty_walk("Operation timed out", limit=3 * 4 + 7 + 5)
        self.recovers()

    def test_connection_reset_mid_body(self):
        # Three resets are absorbed by the walk's three retries; the fourth fails it.
        self.srv.fault("reset", count=4, prefix="/conversations")
        self.faulty_walk("transfer closed")
        self.fault_on_page(0, "reset")
        p = self.faulty_walk("transfer closed", code=0)
        self.assertIn("retrying in 1 s", p.stderr)
        self.recovers()

    def test_truncated_json(self):
        self.fault_on_page(0, "malformed", body='{"data": [{"id": "conv_9", "status": "op')
        self.faulty_walk("invalid JSON at line 1")
        self.recovers()

    def test_invalid_json(self):
        self.srv.fault("malformed", body="<html>Bad gateway</html>", prefix="/conversations")
        self.faulty_walk("invalid JSON")
        self.recovers()

    def test_invalid_utf8(self):
        self.srv.fault("malformed", prefix="/conversations",
                       body=b'{"data": [{"id": "conv_x", "subject": "\xff\xfe"}], "meta": {}}')
        self.faulty_walk("unable to decode byte")
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations WHERE id = 'conv_x'"), 0)
        self.recovers()

    def test_items_missing_id_or_with_wrong_types(self):
        page = {"data": [{"status": "open"}, {"id": 42}, {"id": ""}, "text", None,
                         {"id": "conv_typed", "status": 7, "subject": ["x"], "created_at": False,
                          "last_message": "no"}],
                "meta": {"total": 6, "next_cursor": None}}
        self.srv.fault("malformed", body=json.dumps(page), prefix="/conversations")
        p = self.faulty_walk('item has no string "id"', code=0)
        self.assertIn("item is not an object", p.stderr)
        self.assertEqual(self.sql("SELECT status, subject, created_at, last_message_id FROM conversations "
                                  "WHERE id = 'conv_typed'"), [(None, None, None, None)])
        self.assertEqual(json.loads(self.scalar("SELECT raw FROM conversations WHERE id = 'conv_typed'"))["status"], 7)
        self.recovers()

    def test_json_nested_10000_deep(self):
        body = '{"data": [' + "[" * 10000 + "]" * 10000 + "]}"
        self.srv.fault("malformed", body=body, prefix="/conversations")
        self.faulty_walk("maximum parsing depth")
        self.recovers()

    def test_one_megabyte_strings(self):
        big = "x" * (1 << 20)
        self.srv.add({"id": "conv_big", "status": "open", "subject": big, "created_at": "2026-01-01T00:00:00Z",
                      "user_id": "u_1", "last_message": {"id": "m_big", "text": big + "y"}})
        p = self.faulty_walk(None, code=0)
        self.assertEqual(self.scalar("SELECT length(subject) FROM conversations WHERE id = 'conv_big'"), 1 << 20)
        self.assertEqual(self.scalar("SELECT length(text) FROM messages WHERE id = 'm_big'"), (1 << 20) + 1)
        self.recovers()
        del p

    def test_ten_kilobyte_cursor(self):
        self.srv.huge_cursor = 10000
        self.fault_on_page(1, "malformed")
        self.faulty_walk("invalid JSON")
        self.assertGreater(self.scalar("SELECT length(value) FROM sync_state WHERE key GLOB 'walk_cursor:*'"), 10000)
        self.recovers()

    def test_cursor_expires_mid_walk(self):
        self.srv.pages_served = 0
        # The request for page 1 carries page 0's cursor, now expired.
        self.srv.on_page = lambda s, i: i == 1 and s.expire_cursors()
        p = self.faulty_walk("starting the walk over", code=0)
        self.assertIn("invalid or expired cursor", p.stderr)
        self.recovers()

    def test_cursor_repeated_forever(self):
        self.srv.loop_cursor = True
        self.faulty_walk("repeated a cursor")
        self.recovers()

    def test_data_changing_between_pages(self):
        def churn(s, i):
            s.add(6000 + i)
            s.delete("conv_%07d" % (100 + i))
            s.change("conv_%07d" % (200 + i), subject="churn %d" % i)
        self.srv.pages_served = 0
        self.srv.on_page = churn
        self.faulty_walk(None, code=0, changed_upstream={"conv_%07d" % (200 + i) for i in range(10)} |
                         {"conv_%07d" % (100 + i) for i in range(10)})
        self.recovers()
        self.recovers()   # a second walk marks what the churning one could not see as gone


if __name__ == "__main__":
    tap.main()
