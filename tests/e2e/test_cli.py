#!/usr/bin/env python3
"""dexsync(1): queuing from the command line and from SQL, and every refusal."""
import json
import os
import re
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import DEXSYNC, OutboxTest  # noqa: E402

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class CliTest(OutboxTest):
    def item(self, n):
        kind, target, payload, state = self.sql("SELECT kind, target, payload, state FROM outbox WHERE id = ?", n)[0]
        return kind, target, json.loads(payload), state

    def refused(self, *args, stdin=None, code=1, says=""):
        p = self.dexsync(*args, stdin=stdin)
        self.assertEqual(p.returncode, code, p.stdout + p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, "one line: " + p.stderr)
        self.assertIn(says, p.stderr)
        self.assertEqual(self.scalar("SELECT count(*) FROM outbox"), self.before)

    def setUp(self):
        super().setUp()
        self.before = 0

    def test_send_from_argument_stdin_and_as_note(self):
        p = self.dexsync("send", "conv_0000001", "Hello there")
        self.assertEqual((p.returncode, p.stdout), (0, "outbox:1\n"), p.stderr)
        self.assertEqual(self.item(1), ("message", "conv_0000001",
                                        {"conversation_id": "conv_0000001", "content": "Hello there", "type": "text"},
                                        "pending"))
        self.assertEqual(self.dexsync("send", "conv_0000002", "-", stdin="from stdin\nline 2\n").returncode, 0)
        self.assertEqual(self.item(2)[2]["content"], "from stdin\nline 2\n")
        self.assertEqual(self.dexsync("send", "conv_0000002", stdin="no dash").returncode, 0)
        self.assertEqual(self.item(3)[2]["content"], "no dash")
        self.assertEqual(self.dexsync("send", "--note", "conv_0000003", "internal").returncode, 0)
        self.assertEqual(self.item(4)[2]["type"], "private_note")
        self.assertTrue(UUID4.match(self.scalar("SELECT idempotency_key FROM outbox WHERE id = 1")))
        self.assertEqual(self.scalar("SELECT count(DISTINCT idempotency_key) FROM outbox"), 4)

    def test_update_user_with_json_values(self):
        p = self.dexsync("update-user", "u_9921", "--email", "jane@example.com", "plan=enterprise",
                         "ltv=1200", "vip=true", "note=null", 'nick="007"')
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.item(1), ("user_update", "u_9921", {
            "email": "jane@example.com",
            "custom_attributes": {"plan": "enterprise", "ltv": 1200, "vip": True, "note": None, "nick": "007"}},
            "pending"))

    def test_new_conversation_prints_reference_for_send(self):
        p = self.dexsync("new-conversation", "u_7", "--subject", "Welcome", "--tag", "vip", "--tag", "new")
        self.assertEqual((p.returncode, p.stdout), (0, "outbox:1\n"), p.stderr)
        self.assertEqual(self.item(1), ("conversation", "user:u_7",
                                        {"subject": "Welcome", "tags": ["vip", "new"], "user_id": "u_7"}, "pending"))
        p = self.dexsync("send", "outbox:1", "First message")
        self.assertEqual((p.returncode, p.stdout), (0, "outbox:2\n"), p.stderr)
        self.assertEqual(self.item(2)[1], "outbox:1")

    def test_outbox_listing_and_state_filter(self):
        self.dexsync("send", "conv_0000001", "one")
        self.dexsync("send", "conv_0000001", "two")
        self.dexsync("cancel", "2")
        p = self.dexsync("outbox")
        self.assertEqual(p.returncode, 0)
        lines = p.stdout.splitlines()
        self.assertTrue(lines[0].startswith("ID"))
        self.assertEqual(len(lines), 3)
        self.assertNotIn("one", p.stdout, "message contents are not listed")
        p = self.dexsync("outbox", "--state", "cancelled")
        self.assertEqual([l.split()[0] for l in p.stdout.splitlines()[1:]], ["2"])

    def test_retry_and_cancel(self):
        self.dexsync("send", "conv_0000001", "one")
        self.dexsync("send", "conv_0000001", "two")
        self.sql_exec("UPDATE outbox SET state = 'failed', attempts = 12 WHERE id = 1")
        self.before = 2
        self.refused("cancel", "1", says="item 1 is failed; only pending items can be cancelled")
        self.refused("retry", "2", says="item 2 is pending; only failed items can be retried")
        self.refused("retry", "1", "99", says="no outbox item 99")
        self.assertEqual(self.item(1)[3], "failed", "all or nothing")
        p = self.dexsync("retry", "outbox:1")
        self.assertEqual((p.returncode, p.stdout), (0, "1 item back to pending\n"))
        self.assertEqual(self.sql("SELECT state, attempts FROM outbox WHERE id = 1"), [("pending", 0)])
        self.sql_exec("UPDATE outbox SET state = 'failed'")
        p = self.dexsync("retry", "--failed")
        self.assertEqual(p.stdout, "2 items back to pending\n")
        p = self.dexsync("cancel", "1", "2")
        self.assertEqual(p.stdout, "2 items cancelled\n")
        self.sql_exec("UPDATE outbox SET state = 'sent' WHERE id = 1")
        self.refused("retry", "1", says="item 1 is sent")

    def sql_exec(self, q):
        con = sqlite3.connect(self.db)
        with con:
            con.execute(q)
        con.close()

    def test_refusals(self):
        self.refused("send", "conv_1", "", says="the message text is empty")
        self.refused("send", "conv_1", "-", stdin=" \n\t", says="the message text is empty")
        self.refused("send", "conv 1", "hi", says="is not a conversation id")
        self.refused("send", "outbox:42", "hi", says="outbox:42 is not a queued new-conversation item")
        self.refused("update-user", "u_1", "plan", says="'plan' is not KEY=VALUE")
        self.refused("update-user", "u_1", "=x", says="is not KEY=VALUE")
        self.refused("update-user", "u_1", "--email", "jane.example.com", says="is not an email address")
        self.refused("update-user", "u_1", says="nothing to update")
        self.refused("cancel", "abc", says="'abc' is not an outbox id")
        self.refused("cancel", "7", says="no outbox item 7")
        self.refused("outbox", "--state", "lost", says="unknown state 'lost'")
        self.refused("frobnicate", code=2, says="unknown command 'frobnicate'")
        self.refused("send", code=2, says="send takes CONVERSATION")
        self.refused("new-conversation", "u 1", says="is not a user id")
        p = subprocess.run([DEXSYNC, "-d", os.path.join(self.dir, "nope.db"), "outbox"],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 1)
        self.assertIn("nope.db: does not exist", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "nope.db")))
        p = subprocess.run([DEXSYNC, "-f", self.conf, "outbox"], capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 0, "the config names the database")
        p = subprocess.run([DEXSYNC], capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 2)

    def test_queue_from_sql(self):
        n = self.queue("message", None, {"conversation_id": "conv_0000001", "content": "from SQL"})
        row = self.sql("SELECT kind, target, state, attempts, next_attempt_at, created_at, idempotency_key"
                       " FROM outbox WHERE id = ?", n)[0]
        self.assertEqual(row[:5], ("message", "conv_0000001", "pending", 0, None))
        self.assertRegex(row[5], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertTrue(UUID4.match(row[6]))
        self.queue("user_update", "u_1", {"email": "a@b.example"})
        self.queue("conversation", None, {"user_id": "u_1"})
        self.assertEqual(self.scalar("SELECT target FROM outbox WHERE kind = 'conversation'"), "user:u_1")
        bad = [
            (("note", "x", "{}"), "outbox_kind"),
            (("message", None, "{not json"), "outbox_payload_object"),
            (("message", None, '"a string"'), "outbox_payload_object"),
            (("message", None, '{"conversation_id": "c"}'), "outbox_message_content"),
            (("message", None, '{"conversation_id": "c", "content": "  "}'), "outbox_message_content"),
            (("message", "c2", '{"conversation_id": "c", "content": "x"}'), "outbox_message_conversation"),
            (("message", None, '{"content": "x"}'), "outbox_message_conversation"),
            (("message", None, '{"conversation_id": "c", "content": "x", "type": "shout"}'), "outbox_message_type"),
            (("user_update", None, '{"email": "a@b.c"}'), "outbox_user_target"),
            (("conversation", None, '{"subject": "x"}'), "outbox_conversation_user"),
        ]
        con = sqlite3.connect(self.db)
        for row, constraint in bad:
            with self.assertRaises(sqlite3.IntegrityError) as e:
                con.execute("INSERT INTO outbox(kind, target, payload) VALUES (?, ?, ?)", row)
            self.assertIn(constraint, str(e.exception), row)
        con.close()
        self.assertEqual(self.scalar("SELECT count(*) FROM outbox"), 3)


if __name__ == "__main__":
    tap.main()
