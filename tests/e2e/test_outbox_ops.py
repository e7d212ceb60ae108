#!/usr/bin/env python3
"""The outbox under real operations: a second daemon on the same database,
the write lock held by another process while items are delivered, a large
deferred backlog, a walk whose details all fail, a Retry-After past
max-age, and keys and ids that must go out exactly as stored."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import DEXSYNC, OutboxTest, SANITIZED, hold_write_lock  # noqa: E402



def diag(text):
    print("# " + text, flush=True)


def cpu_seconds(pid):
    """User plus system CPU time of a process, from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OutboxOpsTest(OutboxTest):
    conversations = 20

    def service(self, extra_outbox="", sync="interval = 1h"):
        self.conf = self.write_conf(outbox="min-backoff = 1s\nmax-backoff = 1s\npoll-interval = 1s\n"
                                    + extra_outbox, sync=sync)
        return self.spawn("-n")

    def stop(self, proc):
        proc.send_signal(signal.SIGTERM)
        out, err = self.finish(proc, timeout=60)
        self.assertEqual(proc.returncode, 0, err)
        return err

    def sent_count(self):
        return self.scalar("SELECT count(*) FROM outbox WHERE state = 'sent'")

    def test_second_daemon_refused_no_message_twice(self):
        # The fake server does not honour Idempotency-Key: a resend would
        # reach the customer twice.
        for i in range(30):
            self.queue("message", None, {"conversation_id": "conv_0000001", "content": "m%d" % i})
        self.srv.write_delay = 0.1
        first = self.service()
        self.wait_for(lambda: self.sent_count() >= 2, 20, "the first daemon to send")
        time.sleep(1)
        t = time.time()
        second = self.spawn("-n")
        out, err = self.finish(second, timeout=10)
        self.assertLess(time.time() - t, 5)
        self.assertEqual(second.returncode, 1, err)
        self.assertIn("%s is served by dexsyncd (pid %d)" % (self.db, first.pid), err)
        once = self.once()
        self.assertEqual(once.returncode, 1)
        self.assertIn("is served by dexsyncd (pid %d)" % first.pid, once.stderr)
        self.wait_for(lambda: self.sent_count() == 30, 30, "all 30 sent")
        self.stop(first)
        contents = [m["doc"]["content"] for m in self.srv.messages]
        self.assertEqual(sorted(contents), sorted("m%d" % i for i in range(30)))
        self.assertEqual(contents, ["m%d" % i for i in range(30)], "per-target order")
        # The lock goes with its holder: a new daemon starts.
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)

    @unittest.skipIf(SANITIZED, "twice 13 s of a held lock: once, in the plain run, is enough")
    def test_lock_held_13s_twice_while_delivering(self):
        for i in range(20):
            self.queue("message", None, {"conversation_id": "conv_0000002", "content": "x%d" % i})
        self.srv.write_delay = 0.3
        proc = self.service()
        for round_ in range(2):
            self.wait_for(lambda: self.sent_count() >= 3 + round_ * 6, 60, "some sent")
            holder = hold_write_lock(self.db, 13)
            time.sleep(0.5)
            t = time.time()
            st = subprocess.run([DEXSYNC, "-d", self.db, "status"], capture_output=True, text=True,
                                timeout=30)
            self.outputs += [st.stdout, st.stderr]
            self.assertLess(time.time() - t, 3, "status waited for the write lock")
            self.assertIn("outbox", st.stdout + st.stderr)
            holder.wait(30)
        self.wait_for(lambda: self.sent_count() == 20, 90, "all 20 sent")
        err = self.stop(proc)
        self.assertEqual(self.scalar("SELECT count(*) FROM outbox WHERE state <> 'sent'"), 0)
        contents = [m["doc"]["content"] for m in self.srv.messages]
        self.assertEqual(contents, ["x%d" % i for i in range(20)], "each once, in order")
        self.assertNotIn("sends it again", err)

    @unittest.skipIf(SANITIZED, "CPU time means nothing under a sanitizer or valgrind")
    def test_deferred_backlog_costs_nothing_and_holds_nothing_back(self):
        con = sqlite3.connect(self.db, timeout=30)
        with con:
            con.executemany("INSERT INTO outbox(kind, target, payload) VALUES ('user_update', ?, ?)",
                            (("u_bulk_%d" % i, json.dumps({"custom_attributes": {"n": i}}))
                             for i in range(30000)))
            con.execute("UPDATE outbox SET attempts = 1,"
                        " next_attempt_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '+1 hour')"
                        " WHERE state = 'pending'")
        con.close()
        runs = self.scalar("SELECT count(*) FROM sync_runs")
        proc = self.service()
        self.wait_for(lambda: self.scalar("SELECT count(*) FROM sync_runs WHERE outcome = 'ok'") > runs,
                      60, "the walk at start")
        time.sleep(1)
        c0, t0 = cpu_seconds(proc.pid), time.time()
        time.sleep(30)
        used = cpu_seconds(proc.pid) - c0
        per_minute = used * 60 / (time.time() - t0)
        diag("idle with 30,000 deferred: %.0f ms of CPU a minute" % (per_minute * 1000))
        self.assertLessEqual(per_minute, 0.050)
        t = time.time()
        self.assertEqual(self.dexsync("send", "conv_0000003", "not held back").returncode, 0)
        self.wait_for(lambda: len(self.srv.messages) == 1, 10, "the new message")
        diag("a new message went out in %.2f s" % (time.time() - t))
        self.stop(proc)
        self.assertEqual(self.srv.patches, [])

    def test_messages_go_while_every_detail_fails(self):
        self.srv.fault("status", count=1000000, prefix="/conversations/", code=503)
        self.srv.on_page = lambda s, n: time.sleep(0.2)
        self.sql("UPDATE conversations SET detail = NULL")
        proc = self.service(sync="interval = 1h\nfetch-details = true\nmax-details = 1000")
        self.wait_for(lambda: any(r["path"].startswith("/conversations/") for r in self.srv.requests),
                      30, "the detail phase")
        t = time.time()
        self.assertEqual(self.dexsync("send", "conv_0000004", "during details").returncode, 0)
        self.wait_for(lambda: len(self.srv.messages) == 1, 15, "the message during the detail phase")
        diag("delivered %.2f s after queuing, every detail failing" % (time.time() - t))
        self.stop(proc)

    def test_retry_after_past_max_age_fails_at_once(self):
        self.conf = self.write_conf(outbox="max-age = 1h")
        self.srv.fault("status", prefix="/messages", code=429, retry_after="7200")
        self.dexsync("send", "conv_0000001", "too late")
        p = self.once()
        self.assertEqual(self.scalar("SELECT state FROM outbox"), "failed")
        err = self.scalar("SELECT last_error FROM outbox")
        self.assertIn("7200 s", err)
        self.assertIn("max-age", err)
        self.assertIn("0 sent, 0 to retry, 1 failed", p.stderr)

    def test_keys_sent_exactly_or_refused(self):
        con = sqlite3.connect(self.db, timeout=10)
        payload = json.dumps({"conversation_id": "conv_0000001", "content": "k"})
        bad = ["", "a\r\nX-Injected: 1", "k" * 256, " lead", "trail ", "ü" * 10, "tab\there"]
        for key in bad:
            with self.assertRaises(sqlite3.IntegrityError, msg=repr(key)):
                with con:
                    con.execute("INSERT INTO outbox(kind, payload, idempotency_key) VALUES ('message', ?, ?)",
                                (payload, key))
        long_a, long_b = "A" * 63 + "-first", "A" * 63 + "-second"
        full = "".join(chr(c) for c in range(0x21, 0x7f)) * 2 + "x" * 67
        self.assertEqual(len(full), 255)
        with con:
            for key in (long_a, long_b, full):
                con.execute("INSERT INTO outbox(kind, payload, idempotency_key) VALUES ('message', ?, ?)",
                            (payload, key))
        con.close()
        self.drain_until_done()
        self.assertEqual([m["key"] for m in self.srv.messages], [long_a, long_b, full])
        self.assertNotIn("X-Injected", json.dumps([r["headers"] for r in self.srv.requests]))

    def test_long_user_ids_are_sent_whole(self):
        a, b, c = "u" * 199 + "a", "u" * 199 + "b", "u" * 600 + "/a?b#c %"
        for uid in (a, b):
            self.assertEqual(self.dexsync("update-user", uid, "plan=pro").returncode, 0)
        self.queue("user_update", c, {"custom_attributes": {"plan": "pro"}})
        self.drain_until_done()
        self.assertEqual([p["id"] for p in self.srv.patches], [a, b, c])
        self.assertEqual(self.scalar("SELECT count(*) FROM users WHERE id IN (?, ?, ?)", a, b, c), 3)

    def test_retried_item_goes_before_newer_ones(self):
        # A failed item retried behind newer ones of its queue heads the queue again.
        self.srv.fault("status", prefix="/messages", code=400)
        self.dexsync("send", "conv_0000001", "first")
        self.once()
        self.assertEqual(self.scalar("SELECT state FROM outbox WHERE id = 1"), "failed")
        self.srv.write_delay = 0
        con = sqlite3.connect(self.db, timeout=10)
        with con:
            con.execute("INSERT INTO outbox(kind, target, payload) VALUES ('message', NULL, ?)",
                        (json.dumps({"conversation_id": "conv_0000001", "content": "second"}),))
            # Queued by hand with a time, as an old script might.
            con.execute("UPDATE outbox SET state = 'pending' WHERE id = 1")
        con.close()
        self.drain_until_done()
        self.assertEqual([m["doc"]["content"] for m in self.srv.messages], ["first", "second"])

    def test_batches_are_claimed_before_and_recorded_after_their_requests(self):
        # One transaction claims the heads of several queues, one records
        # their answers; still each item is committed 'sending' before its
        # request, never two of one target at once, each sent once, in order.
        for i in range(120):
            self.queue("message", None, {"conversation_id": "conv_%07d" % (i % 20 + 1), "content": "m%d" % i})
        seen = []

        def on_write(srv, headers):
            con = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True, timeout=10)
            try:
                seen.append(con.execute(
                    "SELECT (SELECT state FROM outbox WHERE idempotency_key = ?),"
                    "       count(*), count(DISTINCT target) FROM outbox WHERE state = 'sending'",
                    (headers.get("Idempotency-Key"),)).fetchone())
            finally:
                con.close()

        self.srv.on_write = on_write
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(seen), 120)
        self.assertEqual({state for state, _, _ in seen}, {"sending"}, "committed before its request")
        self.assertTrue(all(n == targets for _, n, targets in seen), "one item of a target at a time")
        self.assertGreater(max(n for _, n, _ in seen), 1, "heads claimed together")
        self.assertEqual(self.scalar("SELECT count(*) FROM outbox WHERE state = 'sent'"), 120)
        for c in range(20):
            got = [m["doc"]["content"] for m in self.srv.messages if m["doc"]["conversation_id"] == "conv_%07d" % (c + 1)]
            self.assertEqual(got, ["m%d" % i for i in range(c, 120, 20)])

    def test_a_stop_mid_batch_puts_the_unasked_back(self):
        # Slow answers: a batch's time runs out, or a stop comes, before all
        # its items are asked; those go back to pending, none stays
        # 'sending', and each message reaches the server once.
        for i in range(40):
            self.queue("message", None, {"conversation_id": "conv_%07d" % (i % 20 + 1), "content": "m%d" % i})
        self.srv.write_delay = 0.3
        proc = self.service()
        self.wait_for(lambda: self.sent_count() >= 8, 60, "some sent")
        err = self.stop(proc)
        self.assertEqual(self.scalar("SELECT count(*) FROM outbox WHERE state = 'sending'"), 0, err)
        self.assertEqual(self.sent_count(), len(self.srv.messages), err)
        self.assertLess(self.sent_count(), 40)
        self.srv.write_delay = 0
        self.drain_until_done()
        self.assertEqual(sorted(m["doc"]["content"] for m in self.srv.messages),
                         sorted("m%d" % i for i in range(40)), "each once")

    def test_sigterm_lets_the_request_in_flight_finish(self):
        self.srv.write_delay = 3
        self.dexsync("send", "conv_0000001", "in flight at SIGTERM")
        proc = self.service()
        self.wait_for(lambda: self.scalar("SELECT state FROM outbox") == "sending", 10, "the request")
        t = time.time()
        self.stop(proc)
        self.assertLess(time.time() - t, 10)
        self.assertEqual(self.scalar("SELECT state FROM outbox"), "sent")
        self.assertEqual(self.once().returncode, 0)
        self.assertEqual(len(self.srv.messages), 1)

    @unittest.skipIf(SANITIZED, "a 10 s grace: once, in the plain run, is enough")
    def test_a_request_in_flight_past_the_grace_is_abandoned(self):
        # The server answers after the stop's 10 s of grace: the request is
        # abandoned, the line says so (not the database), and the item
        # goes again, with its key, at the next start.
        proc = self.answered_after_the_grace("slow answer")
        t = time.time()
        err = self.stop(proc)
        self.assertLess(time.time() - t, 20)
        self.assertIn("a request still in flight 10 s after the stop is abandoned", err)
        self.assertNotIn("the database refuses", err)
        self.assertEqual(self.scalar("SELECT state FROM outbox"), "pending")
        self.assert_sent_with_its_key()

    def answered_after_the_grace(self, text):
        """A daemon whose one message is on its way to a server that
        answers in 25 s."""
        self.srv.write_delay = 25
        self.dexsync("send", "conv_0000001", text)
        proc = self.service()
        self.wait_for(lambda: self.scalar("SELECT state FROM outbox") == "sending", 10, "the request")
        return proc

    def assert_sent_with_its_key(self):
        """Drained at last: sent, each request with the item's one key."""
        self.srv.write_delay = 0
        self.drain_until_done()
        self.assertEqual({m["key"] for m in self.srv.messages}, {self.scalar("SELECT idempotency_key FROM outbox")})
        self.assertEqual(self.scalar("SELECT state FROM outbox"), "sent")

    @unittest.skipIf(SANITIZED, "a 10 s grace and a lock held 40 s: once, in the plain run, is enough")
    def test_an_abandoned_request_is_not_called_delivered(self):
        # The request gets no answer before the stop's grace ends, and the
        # database is locked: the line says it got no answer (not
        # "delivered"), the outcome is kept, and the next start sends the
        # item again with its key.
        proc = self.answered_after_the_grace("no answer")
        holder = hold_write_lock(self.db, 40)
        err = self.stop(proc)
        holder.kill()
        holder.wait(10)
        self.assertIn("asked, with no answer (", err)
        self.assertNotIn("delivered (HTTP 0)", err)
        self.assertIn("1 answer the database refused is kept in %s.answers" % self.db, err)
        self.assert_sent_with_its_key()

    def test_sigterm_records_a_kept_answer_once_the_lock_goes(self):
        self.srv.write_delay = 2
        self.dexsync("send", "conv_0000001", "answered while locked")
        proc = self.service()
        self.wait_for(lambda: self.scalar("SELECT state FROM outbox") == "sending", 10, "the request")
        holder = hold_write_lock(self.db, 18)
        # The answer comes at 2 s; recording it waits busy_timeout (10 s), fails, and is kept.
        deadline = time.time() + 20
        while time.time() < deadline and "refused to record" not in self.log_of(proc):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        os.set_blocking(proc.stderr.fileno(), True)
        out, err = self.finish(proc, timeout=60)
        err = self._log.decode(errors="replace") + err
        holder.wait(30)
        self.assertIn("refused to record", err)
        # The outbox's own error line names itself and the statement refused.
        self.assertIn("outbox: database %s: database is locked (in " % self.db, err)
        self.assertIn("its answer is recorded now", err)
        self.assertEqual(proc.returncode, 0, err)
        self.assertEqual(self.scalar("SELECT state FROM outbox"), "sent")
        self.assertEqual(self.once().returncode, 0)
        self.assertEqual(len(self.srv.messages), 1, "sent once")

    def execute(self, statement):
        con = sqlite3.connect(self.db, timeout=10)
        with con:
            con.execute(statement)
        con.close()

    @unittest.skipIf(SANITIZED, "a stop's 30 s bound: once, in the plain run, is enough")
    def test_a_stop_is_bounded_when_the_lock_stays(self):
        # The answer cannot be recorded before the stop ends: the stop still
        # ends within the unit's TimeoutStopSec=30s, the answer goes to
        # DATABASE.answers, and the next daemon records it before anything
        # is sent: the item is not sent again.
        self.srv.write_delay = 1
        self.dexsync("send", "conv_0000001", "kept past the stop")
        proc = self.service()
        self.wait_for(lambda: self.scalar("SELECT state FROM outbox") == "sending", 10, "the request")
        holder = hold_write_lock(self.db, 45)
        deadline = time.time() + 20
        while time.time() < deadline and "refused to record" not in self.log_of(proc):
            time.sleep(0.2)
        t = time.time()
        proc.send_signal(signal.SIGTERM)
        os.set_blocking(proc.stderr.fileno(), True)
        out, err = self.finish(proc, timeout=60)
        took = time.time() - t
        holder.kill()
        holder.wait(10)
        self.assertLess(took, 25, "stop took %.1f s" % took)
        self.assertIn("still busy 10 s after the stop: the database refuses the answers", err)
        self.assertNotIn("in flight", err)
        self.assertIn("kept in %s.answers" % self.db, err)
        self.assertNotIn("sends it again", err)
        self.assertEqual(self.scalar("SELECT state FROM outbox"), "sending")
        self.assertEqual(os.stat(self.db + ".answers").st_mode & 0o777, 0o600)
        st = subprocess.run([DEXSYNC, "-f", self.conf, "status"], capture_output=True, text=True, timeout=30)
        self.assertIn("start dexsyncd to record them", st.stdout)
        ck = subprocess.run([DEXSYNC, "-d", self.db, "check"], capture_output=True, text=True, timeout=60)
        self.assertIn("records the answers kept in %s.answers first" % self.db, ck.stdout + ck.stderr)
        for verb in ("retry", "cancel"):
            r = self.dexsync(verb, "1")
            self.assertEqual(r.returncode, 1, r.stdout)
            self.assertIn("start dexsyncd to record them", r.stderr)
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("1 answer kept at a stop taken from %s.answers" % self.db, p.stderr)
        self.assertIn("its answer is recorded now", p.stderr)
        self.assertEqual(self.scalar("SELECT state FROM outbox"), "sent")
        self.assertIsNotNone(self.scalar("SELECT remote_id FROM outbox"))
        self.assertEqual(len(self.srv.messages), 1, "sent once")
        self.assertFalse(os.path.exists(self.db + ".answers"))

    @unittest.skipIf(SANITIZED, "a minute of waits for the stop: once, in the plain run, is enough")
    def test_a_reload_keeps_the_answers_the_database_refuses(self):
        # A refusal that is not the lock (a trigger stands in for a full
        # disk), then SIGHUP: the reload's new outbox takes the answers the
        # old one kept, and records them once the database lets it; nothing
        # is sent twice, no file is left.
        self.execute("CREATE TRIGGER block_sent BEFORE UPDATE OF state ON outbox "
                     "WHEN NEW.state = 'sent' AND EXISTS (SELECT 1 FROM users WHERE id = 'BLOCK') "
                     "BEGIN SELECT RAISE(ABORT, 'emulated refusal'); END")
        self.execute("INSERT INTO users(id, raw, updated_at) VALUES ('BLOCK', '{}', '2026-01-01T00:00:00Z')")
        for i in range(5):
            self.dexsync("send", "conv_%07d" % (i + 1), "refused %d" % i)
        proc = self.service()
        deadline = time.time() + 20
        while time.time() < deadline and "refused to record" not in self.log_of(proc):
            time.sleep(0.2)
        proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 40
        while time.time() < deadline and "configuration reloaded" not in self.log_of(proc):
            time.sleep(0.2)
        self.assertIn("are kept in", self._log.decode(errors="replace"))
        self.dexsync("send", "conv_0000009", "after the reload")
        self.execute("DELETE FROM users WHERE id = 'BLOCK'")
        self.wait_for(lambda: self.sent_count() == 6, 60, "all recorded")
        err = self.stop(proc)
        self.assertFalse(os.path.exists(self.db + ".answers"), err)
        keys = [m["key"] for m in self.srv.messages]
        self.assertEqual(len(keys), 6, err)
        self.assertEqual(len(set(keys)), 6, "each sent once")
        self.assertNotIn("sends it again", err)

    def test_a_file_of_kept_answers_that_is_not_one(self):
        # A damaged file is moved aside and said so; its items go again
        # (at least once, with their key), and the daemon starts.
        self.dexsync("send", "conv_0000001", "in sending at a crash")
        self.execute("UPDATE outbox SET state = 'sending'")
        with open(self.db + ".answers", "w") as f:
            f.write('[{"id": 1, "key": "truncat')
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("moved to %s.answers.bad" % self.db, p.stderr)
        self.assertTrue(os.path.exists(self.db + ".answers.bad"))
        self.assertEqual(self.scalar("SELECT state FROM outbox"), "sent")
        self.assertEqual(len(self.srv.messages), 1)

    def test_a_kept_answer_is_recorded_once_and_not_sent_again(self):
        # As a stop leaves it: the item 'sending', its answer in the file
        # (here twice, as a hand-made file might): recorded once, not sent.
        self.dexsync("send", "conv_0000001", "answered before the stop")
        self.execute("UPDATE outbox SET state = 'sending'")
        key = self.scalar("SELECT idempotency_key FROM outbox")
        entry = {"id": 1, "key": key, "asked": True, "status": 201, "outcome": "ok", "retry_after": -1,
                 "error": "", "body": None, "response": '{"id": "msg_kept", "timestamp": 1698228000}'}
        with open(self.db + ".answers", "w") as f:
            json.dump([entry, entry], f)
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("a second answer kept for it is left out", p.stderr)
        self.assertEqual(self.sql("SELECT state, remote_id FROM outbox"), [("sent", "msg_kept")])
        self.assertEqual(self.scalar("SELECT count(*) FROM conversation_events WHERE new_value = 'msg_kept'"), 1)
        self.assertEqual(self.srv.messages, [], "not sent again")
        self.assertFalse(os.path.exists(self.db + ".answers"))

    def test_a_kept_answer_of_an_item_retried_by_hand_is_left_out(self):
        self.dexsync("send", "conv_0000001", "retried by hand")
        key = self.scalar("SELECT idempotency_key FROM outbox")
        with open(self.db + ".answers", "w") as f:
            json.dump([{"id": 1, "key": key, "asked": True, "status": 201, "outcome": "ok", "retry_after": -1,
                        "error": "", "body": None, "response": '{"id": "msg_kept"}'}], f)
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("no longer 'sending'", p.stderr)
        self.assertEqual(self.scalar("SELECT state FROM outbox"), "sent")
        self.assertNotEqual(self.scalar("SELECT remote_id FROM outbox"), "msg_kept")
        self.assertFalse(os.path.exists(self.db + ".answers"))

    def test_jitter_differs_between_daemons(self):
        # Two daemons meeting the same outage must not retry in step: the
        # jitter comes from the kernel, not from an unseeded random().
        self.srv.fault("status", prefix="/messages", code=503, count=1000)
        delays = []
        for name in ("one", "two"):
            db = os.path.join(self.dir, name + ".db")
            conf = self.write_conf(name + ".conf", outbox="min-backoff = 100s\nmax-backoff = 1h")
            with open(conf) as f:
                text = f.read().replace(self.db, db)
            with open(conf, "w") as f:
                f.write(text)
            self.assertEqual(self.once(conf=conf).returncode, 0)
            for i in range(8):
                subprocess.run([DEXSYNC, "-d", db, "send", "conv_%07d" % (i + 1), "x"], check=True,
                               capture_output=True, timeout=10)
            self.once(conf=conf)
            con = sqlite3.connect(db)
            delays.append([d for (d,) in con.execute(
                "SELECT unixepoch(next_attempt_at) - unixepoch(sending_at) FROM outbox ORDER BY id")])
            con.close()
        self.assertTrue(all(100 <= d <= 202 for d in delays[0] + delays[1]), delays)
        self.assertNotEqual(delays[0], delays[1])

    def log_of(self, proc):
        """What proc wrote to stderr so far (read without waiting)."""
        fd = proc.stderr.fileno()
        os.set_blocking(fd, False)
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            chunk = b""
        self._log = getattr(self, "_log", b"") + chunk
        return self._log.decode(errors="replace")

    def test_one_daemon_whatever_the_name(self):
        link = os.path.join(self.dir, "link.db")
        os.symlink(self.db, link)
        first = self.service()
        self.wait_for(lambda: os.path.exists(self.db + ".lock"), 10, "the lock")
        time.sleep(0.5)
        other = self.write_conf("link.conf", base_url=self.srv.url)
        with open(other) as f:
            text = f.read().replace(self.db, link)
        with open(other, "w") as f:
            f.write(text)
        p = self.once(conf=other)
        self.assertEqual(p.returncode, 1)
        self.assertIn("is served by dexsyncd (pid %d)" % first.pid, p.stderr)
        # A lock file removed under the idle daemon is made again at once.
        os.remove(self.db + ".lock")
        self.wait_for(lambda: os.path.exists(self.db + ".lock"), 3, "the lock made again")
        p = self.once()
        self.assertEqual(p.returncode, 1)
        self.assertIn("is served by dexsyncd (pid %d)" % first.pid, p.stderr)
        self.stop(first)

    def test_a_lock_file_removed_during_a_long_walk_is_made_again(self):
        # Pages come slowly: the walk lasts about 10 s.  Its lock file,
        # removed meanwhile, is made again within seconds, not after the
        # walk: a second daemon started then is refused, and sends nothing.
        self.srv.on_page = lambda server, n: time.sleep(1)
        first = self.service(sync="interval = 1h\npage-size = 2")
        self.wait_for(lambda: self.scalar("SELECT count(*) FROM sync_runs WHERE outcome = 'running'") == 1,
                      10, "the walk")
        os.remove(self.db + ".lock")
        self.wait_for(lambda: os.path.exists(self.db + ".lock"), 4, "the lock made again during the walk")
        self.assertEqual(self.scalar("SELECT count(*) FROM sync_runs WHERE outcome = 'running'"), 1)
        p = self.once()
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("is served by dexsyncd (pid %d)" % first.pid, p.stderr)
        self.srv.on_page = None
        err = self.stop(first)
        self.assertIn("%s.lock was removed or replaced while dexsyncd held it" % self.db, err)

    def test_heads_lost_by_hand_are_found(self):
        # Edits the triggers see: the head deleted, an item moved to another target.
        self.srv.fault("status", prefix="/messages", code=503, count=1000)
        for text in ("a1", "a2", "a3"):
            self.dexsync("send", "conv_0000001", text)
        self.once()
        self.srv.clear_faults()
        con = sqlite3.connect(self.db, timeout=10)
        with con:
            con.execute("DELETE FROM outbox WHERE id = 1")
            con.execute("UPDATE outbox SET target = 'conv_0000002',"
                        " payload = json_set(payload, '$.conversation_id', 'conv_0000002') WHERE id = 3")
        con.close()
        self.assertEqual(self.scalar("SELECT count(*) FROM outbox WHERE next_attempt_at IS NULL"), 0)
        self.drain_until_done(timeout=20)
        self.assertEqual(sorted(m["doc"]["content"] for m in self.srv.messages), ["a2", "a3"])
        # An edit they do not see (a head's time cleared or garbled): the
        # daemon's sweep at start finds it.
        self.dexsync("send", "conv_0000003", "b1")
        self.dexsync("send", "conv_0000004", "c1")
        self.execute("UPDATE outbox SET next_attempt_at = NULL WHERE state = 'pending' AND target = 'conv_0000003'")
        self.execute("UPDATE outbox SET next_attempt_at = 'soon' WHERE state = 'pending' AND target = 'conv_0000004'")
        p = self.once()
        self.assertIn("2 queues had lost their due time", p.stderr)
        self.assertEqual(self.scalar("SELECT count(*) FROM outbox WHERE state <> 'sent'"), 0)

    def test_queuing_never_adopts_another_file(self):
        other = os.path.join(self.dir, "other.db")
        con = sqlite3.connect(other)
        con.execute("CREATE TABLE t(a)")
        con.commit()
        con.close()
        junk = os.path.join(self.dir, "junk.db")
        with open(junk, "w") as f:
            f.write("x")
        for path in (other, junk):
            with open(path, "rb") as f:
                before = f.read()
            p = subprocess.run([DEXSYNC, "-d", path, "send", "conv_1", "hi"], capture_output=True,
                               text=True, timeout=10)
            self.outputs += [p.stdout, p.stderr]
            self.assertEqual(p.returncode, 1, p.stdout)
            self.assertIn("not a dexsync mirror", p.stderr)
            with open(path, "rb") as f:
                self.assertEqual(f.read(), before)
            self.assertFalse(os.path.exists(path + "-wal"))
        # Nor does the daemon take a database that holds other tables, nor a
        # file that is not a database: both are left as they are.
        for path, why in ((other, "not a dexsync mirror"), (junk, "not an SQLite database")):
            with open(path, "rb") as f:
                before = f.read()
            conf = self.write_conf("other.conf")
            with open(conf) as f:
                text = f.read().replace(self.db, path)
            with open(conf, "w") as f:
                f.write(text)
            p = self.once(conf=conf)
            self.assertEqual(p.returncode, 1)
            self.assertIn(why, p.stderr)
            with open(path, "rb") as f:
                self.assertEqual(f.read(), before, path)
            self.assertFalse(os.path.exists(path + "-wal"))

    def test_a_key_the_server_echoes_is_blanked(self):
        from harness import KEY
        escaped = KEY[:5] + "\\u%04x" % ord(KEY[5]) + KEY[6:-1] + "\\u%04X" % ord(KEY[-1])
        self.srv.fault("status", prefix="/messages", code=401, body='{"error": "bad token Bearer %s"}' % KEY)
        self.srv.fault("status", prefix="/messages", code=401, body='{"error": "bad token %s"}' % escaped)
        self.dexsync("send", "conv_0000001", "x")
        self.dexsync("send", "conv_0000002", "y")
        p = self.once()
        errors = [e for (e,) in self.sql("SELECT last_error FROM outbox ORDER BY id")]
        self.assertIn("bad token Bearer " + "*" * len(KEY), errors[0])
        self.assertIn("bad token " + "*" * (len(KEY) + 8), errors[1])
        self.assertIn("*" * len(KEY), p.stderr)
        # tearDown checks that the key is in no output and no database file.

    def test_an_id_with_a_nul_is_not_cut_into_another(self):
        # A created conversation's id holding a NUL would read, cut, as an
        # existing conversation: the message to outbox:N must not go there.
        p = self.dexsync("new-conversation", "u_1", "--subject", "s")
        self.assertEqual(p.returncode, 0, p.stderr)
        ref = p.stdout.strip()
        self.assertEqual(self.dexsync("send", ref, "to the new one").returncode, 0)
        self.srv.fault("malformed", prefix="/conversations", method="POST",
                       body='{"id": "conv_0000003\\u0000evil", "status": "open"}')
        self.drain_until_done()
        self.assertEqual(self.sql("SELECT kind, state, remote_id FROM outbox ORDER BY id"),
                         [("conversation", "sent", None), ("message", "failed", None)])
        self.assertIn("answer has no id (or one holding a NUL)", "".join(self.outputs))
        self.assertEqual(self.srv.messages, [])

    def test_a_key_with_a_nul_is_refused(self):
        con = sqlite3.connect(self.db, timeout=10)
        with self.assertRaises(sqlite3.IntegrityError):
            with con:
                con.execute("INSERT INTO outbox(kind, payload, idempotency_key) VALUES ('message', ?,"
                            " 'abc' || char(0) || char(13) || char(10) || 'X-Evil: 1')",
                            (json.dumps({"conversation_id": "conv_0000001", "content": "x"}),))
        con.close()

    def test_status_flags_a_sending_item_of_unknown_age(self):
        self.dexsync("send", "conv_0000001", "x")
        self.execute("UPDATE outbox SET state = 'sending', sending_at = NULL")
        p = self.dexsync("status")
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("item 1 is sending since an unknown time", p.stdout + p.stderr)


if __name__ == "__main__":
    tap.main()
