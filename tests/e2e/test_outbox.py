#!/usr/bin/env python3
"""Outbox delivery (SPEC 3, "The outbox"): the real dexsyncd against the fake Dexra."""
import collections
import email.utils
import os
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import OutboxTest  # noqa: E402


class DeliveryTest(OutboxTest):
    def queue_messages(self, n, conversations=20):
        con = sqlite3.connect(self.db)
        with con:
            for i in range(n):
                conv = "conv_%07d" % (i % conversations + 1)
                con.execute("INSERT INTO outbox(kind, payload) VALUES ('message', json_object("
                            "'conversation_id', ?, 'content', ?))", (conv, "message %d" % i))
        con.close()

    def assert_all_delivered_in_order(self, n, conversations=20):
        self.assertEqual(self.scalar("SELECT count(*) FROM outbox WHERE state = 'sent'"), n)
        seen = collections.defaultdict(list)
        for m in self.srv.messages:
            seen[m["doc"]["conversation_id"]].append(int(m["doc"]["content"].split()[1]))
        for conv, got in seen.items():
            firsts = list(dict.fromkeys(got))  # a repeat after a lost ack is allowed, a reordering not
            self.assertEqual(firsts, sorted(firsts), conv)
        self.assertEqual(sorted(set(i for v in seen.values() for i in v)), list(range(n)))

    def assert_one_key_per_item(self):
        keys = collections.defaultdict(set)
        for r in self.posts():
            keys[r["body"]].add(r["headers"].get("Idempotency-Key"))
        for body, k in keys.items():
            self.assertEqual(len(k), 1, body)
            self.assertNotIn(None, k)
        self.assertEqual(len(set().union(*keys.values())), len(keys), "one key per item")

    def test_500_messages_through_5xx_and_429(self):
        self.queue_messages(500)
        self.srv.random_faults = {"status500": 0.2, "status429": 0.1}
        self.drain_until_done(timeout=120)
        self.assert_all_delivered_in_order(500)
        self.assert_one_key_per_item()
        self.assertEqual(len(self.srv.messages), 500, "no duplicates without lost acknowledgements")
        retried = self.scalar("SELECT count(*) FROM outbox WHERE attempts > 1")
        self.assertGreater(retried, 50)
        self.assertEqual(self.scalar("SELECT count(*) FROM messages WHERE origin = 'outbox'"), 500)

    def test_lost_acknowledgements(self):
        self.queue_messages(60, conversations=3)
        # The lost acknowledgements first, then the 503s (faults are met
        # in the order they are added).
        for i in range(6):
            self.srv.fault("ack_lost", prefix="/messages", drop=(i % 2 == 0))
        for i in range(6):
            self.srv.fault("status", code=503, prefix="/messages")
        self.drain_until_done(timeout=90)
        self.assertEqual(self.scalar("SELECT count(*) FROM outbox WHERE state = 'sent'"), 60)
        by_content = collections.defaultdict(list)
        for m in self.srv.messages:
            by_content[m["doc"]["content"]].append(m["key"])
        self.assertEqual(len(by_content), 60, "no item lost")
        dups = {c: k for c, k in by_content.items() if len(k) > 1}
        self.assertGreaterEqual(len(dups), 1, "the faults did cause repeats")
        for content, keys in dups.items():
            self.assertEqual(len(set(keys)), 1, "a repeat carries the same Idempotency-Key")

    def test_sigkill_during_drain_of_1000(self):
        self.queue_messages(1000)
        self.srv.write_delay = 0.002
        proc = self.spawn("-n", "-1")
        self.wait_for(lambda: self.scalar("SELECT count(*) FROM outbox WHERE state = 'sent'") >= 300,
                      60, "300 items sent")
        self.kill(proc)
        self.assertEqual(self.scalar("PRAGMA integrity_check"), "ok")
        self.assertLess(self.scalar("SELECT count(*) FROM outbox WHERE state = 'sent'"), 1000)
        self.srv.write_delay = 0
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.scalar("SELECT count(*) FROM outbox WHERE state = 'sending'"), 0)
        self.assertEqual(self.scalar("PRAGMA integrity_check"), "ok")
        self.assert_all_delivered_in_order(1000)
        self.assert_one_key_per_item()

    def test_retry_after_is_respected(self):
        self.dexsync("send", "conv_0000001", "hello")
        self.srv.fault("status", code=429, retry_after="2", prefix="/messages")
        self.drain_until_done(timeout=30)
        first, second = [r["time"] for r in self.posts()]
        self.assertGreaterEqual(second - first, 2.0)
        date = email.utils.formatdate(time.time() + 3, usegmt=True)
        self.dexsync("send", "conv_0000001", "again")
        self.srv.fault("status", code=503, retry_after=date, prefix="/messages")
        self.drain_until_done(timeout=30)
        first, second = [r["time"] for r in self.posts()[2:]]
        self.assertGreaterEqual(second - first, 2.0)

    def test_permanent_failure_then_retry(self):
        self.dexsync("send", "conv_0000001", "first")
        self.dexsync("send", "conv_0000001", "second")
        self.srv.fault("status", code=422, prefix="/messages", body='{"error": "content too long"}')
        p = self.once()
        self.assertIn("item 1 (message to conv_0000001) failed permanently: POST /messages: HTTP 422", p.stderr)
        self.assertEqual(self.sql("SELECT state, last_status FROM outbox ORDER BY id"),
                         [("failed", 422), ("sent", 201)], "a failed item does not hold its target")
        self.assertIn("content too long", self.scalar("SELECT last_error FROM outbox WHERE id = 1"))
        self.assertEqual(self.dexsync("retry", "1").returncode, 0)
        self.drain_until_done()
        self.assertEqual(self.scalar("SELECT state FROM outbox WHERE id = 1"), "sent")

    def test_max_attempts(self):
        conf = self.write_conf("two.conf", outbox="max-attempts = 2\nmin-backoff = 1s\nmax-backoff = 1s")
        self.dexsync("send", "conv_0000001", "hello")
        self.srv.fault("status", code=503, count=5, prefix="/messages")
        p = self.once(conf=conf)
        self.assertIn("item 1 (message to conv_0000001): POST /messages: HTTP 503", p.stderr)
        self.assertIn("attempt 1 of 2, retrying in", p.stderr)
        self.wait_for(lambda: self.scalar(
            "SELECT count(*) FROM outbox WHERE state = 'pending'"
            " AND next_attempt_at > strftime('%Y-%m-%dT%H:%M:%SZ', 'now')") == 0, 10, "the retry to fall due")
        p = self.once(conf=conf)
        self.assertIn("failed permanently", p.stderr)
        self.assertEqual(self.sql("SELECT state, attempts, last_status FROM outbox"), [("failed", 2, 503)])
        self.assertIn("after 2 attempts", self.scalar("SELECT last_error FROM outbox"))
        self.srv.clear_faults()
        self.dexsync("retry", "--failed")
        self.drain_until_done(conf=conf)
        self.assertEqual(self.scalar("SELECT state FROM outbox"), "sent")

    def test_max_age(self):
        self.dexsync("send", "conv_0000001", "stale")
        con = sqlite3.connect(self.db)
        with con:
            con.execute("UPDATE outbox SET created_at = '2020-01-01T00:00:00Z'")
        con.close()
        p = self.once()
        self.assertIn("failed permanently: older than max-age", p.stderr)
        self.assertEqual(self.posts(), [])
        self.assertEqual(self.dexsync("retry", "1").returncode, 0)
        self.drain_until_done()
        self.assertEqual(self.scalar("SELECT state FROM outbox"), "sent", "max-age counts from the retry")

    def test_conversation_created_offline_with_two_messages(self):
        self.assertEqual(self.dexsync("new-conversation", "u_42", "--subject", "Hi").stdout, "outbox:1\n")
        self.dexsync("send", "outbox:1", "first")
        self.dexsync("send", "outbox:1", "second")
        self.srv.fault("status", code=503, prefix="/conversations", method="POST")
        self.once()
        self.assertEqual(self.posts("/messages"), [], "messages wait for their conversation")
        self.drain_until_done()
        new_id = self.scalar("SELECT remote_id FROM outbox WHERE id = 1")
        self.assertEqual(new_id, "conv_new_1")
        self.assertEqual([(m["doc"]["conversation_id"], m["doc"]["content"]) for m in self.srv.messages],
                         [(new_id, "first"), (new_id, "second")])
        self.assertEqual(self.sql("SELECT user_id, subject FROM conversations WHERE id = ?", new_id), [("u_42", "Hi")])
        self.assertEqual(self.scalar("SELECT count(*) FROM messages WHERE conversation_id = ? AND origin = 'outbox'",
                                     new_id), 2)

    def test_message_to_failed_conversation_fails(self):
        self.dexsync("new-conversation", "u_42")
        self.dexsync("send", "outbox:1", "orphan")
        self.srv.fault("status", code=400, prefix="/conversations", method="POST")
        self.once()
        self.assertEqual(self.sql("SELECT state FROM outbox ORDER BY id"), [("failed",), ("failed",)])
        self.assertIn("outbox:1 was not created", self.scalar("SELECT last_error FROM outbox WHERE id = 2"))

    def test_user_update_reaches_users_table(self):
        self.dexsync("update-user", "u_9921", "--email", "jane@example.com", "plan=enterprise", "ltv=1200")
        self.drain_until_done()
        r = self.posts("/users/u_9921")[0]
        self.assertEqual(r["method"], "PATCH")
        self.assertEqual(self.sql("SELECT email, custom_attributes FROM users WHERE id = 'u_9921'"),
                         [("jane@example.com", '{"plan":"enterprise","ltv":1200}')])

    def test_a_writer_holding_the_lock_for_3_s(self):
        self.queue_messages(40)
        holder = subprocess.Popen([sys.executable, "-c",
                                   "import sqlite3, sys, time\n"
                                   "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                                   "c.execute('BEGIN IMMEDIATE')\n"
                                   "print('locked', flush=True)\n"
                                   "time.sleep(3)\n"
                                   "c.execute('COMMIT')\n", self.db], stdout=subprocess.PIPE, text=True)
        self.assertEqual(holder.stdout.readline().strip(), "locked")
        t = time.time()
        p = self.once()
        holder.wait(10)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertGreaterEqual(time.time() - t, 2.5, "it waited for the lock")
        self.assertEqual(self.scalar("SELECT count(*) FROM outbox WHERE state = 'sent'"), 40)

    def test_logs_name_the_item_but_never_the_content(self):
        self.dexsync("send", "conv_0000001", "TOP SECRET CONTENT")
        self.srv.fault("status", code=503, prefix="/messages")
        p = self.once("-l", "debug")
        self.assertIn("item 1 (message to conv_0000001): attempt 1", p.stderr)
        self.assertIn("HTTP 503", p.stderr)
        self.assertRegex(p.stderr, r"retrying in \d+ s \(at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)")
        self.drain_until_done()
        self.assertNotIn("TOP SECRET", "".join(self.outputs))

    def test_one_connection_for_a_drain(self):
        self.queue_messages(200)
        self.srv.connections.clear()
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        # The outbox has a client of its own, beside the walk's.
        self.assertEqual(len({r["conn"] for r in self.srv.requests if r["method"] == "POST"}), 1)
        self.assertIn("outbox: 200 sent", p.stderr)


if __name__ == "__main__":
    tap.main()
