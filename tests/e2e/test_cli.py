#!/usr/bin/env python3
"""dexsync(1): queuing from the command line and from SQL, and every refusal."""
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import DEXSYNC, OutboxTest, hold_write_lock  # noqa: E402

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

    def test_output_lost_is_an_error(self):
        """A full disk (or a closed pipe with SIGPIPE ignored) under the
        output: the command fails, in one line, as any Unix tool does."""
        self.dexsync("send", "conv_0000001", "queued")
        for args, code in ((["status"], 1), (["outbox"], 1), (["report"], 1), (["report", "--format", "json"], 1),
                           (["history", "conv_0000001"], 1), (["search", "hello OR billing"], 2),
                           (["search", "hello OR billing", "--format", "json"], 2), (["check"], 1)):
            with open("/dev/full", "w") as full:
                p = subprocess.run([DEXSYNC, "-d", self.db] + args, stdout=full, stderr=subprocess.PIPE,
                                   text=True, timeout=30)
            self.assertEqual(p.returncode, code, args)
            # The system's reason when the last write failed, else coreutils' words.
            self.assertRegex(p.stderr, r"^dexsync: error: standard output: (No space left on device|write error)\n$")
        # A write queued all the same says so, with its reference: a
        # script must not queue it again.
        with open("/dev/full", "w") as full:
            p = subprocess.run([DEXSYNC, "-d", self.db, "send", "conv_0000001", "lost line"], stdout=full,
                               stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertEqual((p.returncode, p.stderr), (1, "dexsync: error: outbox:2 is queued, but standard output "
                                                       "failed: No space left on device\n"))
        self.assertEqual(self.item(2)[2]["content"], "lost line")
        # A pipe closed before the line: not killed by SIGPIPE unheard.
        r, w = os.pipe()
        os.close(r)
        p = subprocess.run([DEXSYNC, "-d", self.db, "send", "conv_0000001", "piped"], stdout=w,
                           stderr=subprocess.PIPE, text=True, timeout=30)
        os.close(w)
        self.assertEqual((p.returncode, p.stderr), (1, "dexsync: error: outbox:3 is queued, but standard output "
                                                       "failed: Broken pipe\n"))
        with open("/dev/full", "w") as full:
            p = subprocess.run([DEXSYNC, "--help"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)
        p = subprocess.run("trap '' PIPE; %s -d %s search 'hello OR billing' --limit 1000 | true"
                           % (DEXSYNC, self.db), shell=True, stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertRegex(p.stderr, r"^dexsync: error: standard output: (Broken pipe|write error)\n$")

    def test_a_name_starting_file_colon_is_a_file_not_a_uri(self):
        """SQLite reads "file:..." as a URI: the name is the file's own."""
        con = sqlite3.connect(self.db)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        shutil.copyfile(self.db, os.path.join(self.dir, "file:m.db"))
        with open(os.path.join(self.dir, "m.db"), "w") as f:
            f.write("not this one")

        def run(*args):
            return subprocess.run([DEXSYNC, "-d", "file:m.db"] + list(args), cwd=self.dir, capture_output=True,
                                  text=True, timeout=60)
        for args in (["status"], ["check"], ["search", "hello OR billing"], ["send", "conv_0000001", "hi"]):
            p = run(*args)
            self.assertEqual(p.returncode, 0, (args, p.stderr))
        p = run("backup", "file:b.db")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "b.db")))
        con = sqlite3.connect(os.path.join(self.dir, "file:b.db"))
        self.assertEqual(con.execute("SELECT count(*) FROM outbox").fetchone()[0], 1)
        con.close()
        with open(os.path.join(self.dir, "m.db")) as f:
            self.assertEqual(f.read(), "not this one")

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

    def test_a_database_dexsyncd_is_making_is_said_so(self):
        # The first start's migration is not committed yet: the file is
        # empty, or holds no schema, while the daemon's lock is held.
        import fcntl
        db = os.path.join(self.dir, "new.db")
        open(db, "w").close()
        with open(db + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            lock.write("4242\n")
            lock.flush()
            for args in (["send", "conv_0000001", "x"], ["status"]):
                p = subprocess.run([DEXSYNC, "-d", db] + args, capture_output=True, text=True, timeout=30)
                self.assertNotEqual(p.returncode, 0)
                self.assertEqual(p.stderr.strip().splitlines(),
                                 ["dexsync: error: database %s: dexsyncd (pid 4242) is making it; "
                                  "try again in a moment" % db], p.stderr)
        p = subprocess.run([DEXSYNC, "-d", db, "status"], capture_output=True, text=True, timeout=30)
        self.assertIn("not a dexsync mirror", p.stderr)

    def test_queue_from_sql(self):
        n = self.queue("message", None, {"conversation_id": "conv_0000001", "content": "from SQL"})
        row = self.sql("SELECT kind, target, state, attempts, next_attempt_at, created_at, idempotency_key"
                       " FROM outbox WHERE id = ?", n)[0]
        self.assertEqual(row[:4], ("message", "conv_0000001", "pending", 0))
        self.assertRegex(row[4], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", "the head of its queue is due")
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


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def as_nobody():
    os.setgid(65534)
    os.setgroups([])
    os.setuid(65534)


class ReadOnlyTest(OutboxTest):
    """outbox, status and report open the database read-only."""
    conversations = 5

    def run_cli(self, *args, db=None, **kw):
        cmd = [DEXSYNC, "-d", db or self.db] + list(args)
        start = time.monotonic()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw)
        self.outputs += [p.stdout, p.stderr]
        return p, time.monotonic() - start

    READERS = (["status"], ["outbox"], ["report", "by-status"], ["report", "outbox", "--format", "json"],
               ["report", "--format", "html"])

    def test_answers_at_once_while_the_write_lock_is_held(self):
        self.assertEqual(self.dexsync("send", "conv_0000001", "queued").returncode, 0)
        holder = hold_write_lock(self.db)
        try:
            for args in self.READERS:
                p, took = self.run_cli(*args)
                self.assertEqual(p.returncode, 0, (args, p.stdout, p.stderr))
                self.assertLess(took, 1.0, args)
            p, _ = self.run_cli("outbox")
            self.assertIn("conv_0000001", p.stdout)
        finally:
            holder.kill()
            holder.wait()

    def test_never_writes(self):
        self.assertEqual(self.dexsync("send", "conv_0000001", "queued").returncode, 0)
        before = {n: sha256(os.path.join(self.dir, n)) for n in os.listdir(self.dir) if n.startswith("mirror.db")}
        for args in self.READERS:
            self.assertEqual(self.run_cli(*args)[0].returncode, 0, args)
        after = {n: sha256(os.path.join(self.dir, n)) for n in os.listdir(self.dir)
                 if n.startswith("mirror.db") and os.path.getsize(os.path.join(self.dir, n))
                 and not n.endswith("-shm")}
        self.assertEqual({n: h for n, h in before.items() if n in after}, after)

    def test_works_on_a_file_it_cannot_write(self):
        """What a member of dexsync-read sees while the daemon runs: the
        database, its -wal and -shm readable, nothing writable."""
        self.assertEqual(self.dexsync("send", "conv_0000001", "queued").returncode, 0)
        daemon = sqlite3.connect(self.db)     # keeps -wal and -shm, as dexsyncd does
        daemon.execute("SELECT count(*) FROM outbox").fetchall()
        try:
            self.assert_readers_work_read_only()
        finally:
            daemon.close()

    def test_works_on_a_file_it_cannot_write_after_a_send_with_no_daemon(self):
        """The last connection to close used to take -wal and -shm with it
        when it was dexsync's: a reader who may not write the directory
        could then open nothing until the daemon ran again."""
        self.assertEqual(self.dexsync("send", "conv_0000001", "queued").returncode, 0)
        self.assert_readers_work_read_only()

    def assert_readers_work_read_only(self):
        names = ["mirror.db", "mirror.db-wal", "mirror.db-shm", "mirror.db.lock"]
        for n in names[:3]:
            self.assertTrue(os.path.exists(os.path.join(self.dir, n)), n)
        root = os.geteuid() == 0
        os.chmod(self.dir, 0o755 if root else 0o555)
        for n in names:
            if os.path.exists(os.path.join(self.dir, n)):
                os.chmod(os.path.join(self.dir, n), 0o644 if root else 0o444)
        kw = {"preexec_fn": as_nobody} if root else {}
        try:
            for args in self.READERS:
                p, _ = self.run_cli(*args, **kw)
                self.assertEqual(p.returncode, 0, (args, p.stdout, p.stderr))
                self.assertEqual(p.stderr, "")
            p, _ = self.run_cli("outbox", **kw)
            self.assertIn("conv_0000001", p.stdout)
            p, _ = self.run_cli("status", **kw)
            self.assertIn("1 pending", p.stdout)
            p, _ = self.run_cli("send", "conv_0000001", "hi", **kw)
            self.assertEqual(p.returncode, 1, "queuing needs write access")
            self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
        finally:
            os.chmod(self.dir, 0o700)
            for n in names:
                if os.path.exists(os.path.join(self.dir, n)):
                    os.chmod(os.path.join(self.dir, n), 0o600)

    def test_refuses_what_is_not_a_mirror_untouched(self):
        other = os.path.join(self.dir, "other.db")
        con = sqlite3.connect(other)
        con.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, text TEXT)")
        con.execute("INSERT INTO notes(text) VALUES ('mine')")
        con.commit()
        con.close()
        digest = sha256(other)
        for args in self.READERS:
            p, took = self.run_cli(*args, db=other)
            self.assertEqual(p.returncode, 1, args)
            self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
            self.assertIn("not a dexsync mirror", p.stderr)
            self.assertEqual(p.stdout, "")
        self.assertEqual(sha256(other), digest, "not a byte changed")
        with open(other, "rb") as f:
            self.assertEqual(f.read(20)[18:20], b"\x01\x01", "still a rollback-journal database, not WAL")
        self.assertEqual(sorted(n for n in os.listdir(self.dir) if n.startswith("other")), ["other.db"])

        older = os.path.join(self.dir, "older.db")
        con = sqlite3.connect(self.db)
        con.execute("VACUUM INTO ?", (older,))
        con.close()
        con = sqlite3.connect(older)
        con.execute("PRAGMA user_version = 2")
        con.close()
        digest = sha256(older)
        p, _ = self.run_cli("status", db=older)
        self.assertEqual(p.returncode, 1)
        self.assertIn("start dexsyncd once to migrate it", p.stderr)
        self.assertEqual(sha256(older), digest, "not migrated")


class SendingTest(OutboxTest):
    """Items stranded in 'sending': status warns, retry and cancel repair them
    while no daemon serves the database."""
    conversations = 5

    def setUp(self):
        super().setUp()
        for i in (1, 2, 3):
            self.assertEqual(self.dexsync("send", "conv_000000%d" % i, "text %d" % i).stdout, "outbox:%d\n" % i)

    def sending(self, item, seconds_ago):
        con = sqlite3.connect(self.db)
        with con:
            con.execute("UPDATE outbox SET state = 'sending', next_attempt_at = NULL,"
                        " sending_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', ?) WHERE id = ?",
                        ("-%d seconds" % seconds_ago, item))
        con.close()

    def status(self):
        return self.dexsync("status")

    def test_status_shows_sending_and_warns_after_ten_minutes(self):
        self.sending(1, 30)
        p = self.status()
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("2 pending, 1 sending", p.stdout)
        self.assertRegex(p.stdout, r"\nsending: +1 item, item 1 for (29|30|31|32) s")
        self.assertIn("daemon:        none running\n", p.stdout)
        self.assertIn("health:        ok\n", p.stdout)
        self.sending(2, 700)
        p = self.status()
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertRegex(p.stdout, r"\nsending: +2 items, item 2 for (699|70\d) s; no dexsyncd serves")
        self.assertRegex(p.stdout, r"\nhealth: +item 2 has been sending for \d+ s, over 10 minutes")
        con = sqlite3.connect(self.db)
        with con:
            con.execute("INSERT INTO sync_runs(started_at, finished_at, outcome, error) VALUES "
                        "(strftime('%Y-%m-%dT%H:%M:%SZ', 'now'), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'),"
                        " 'failed', 'HTTP 500')")
        con.close()
        p = self.status()
        self.assertEqual(p.returncode, 2, "a failed walk wins: " + p.stdout)
        self.assertRegex(p.stdout, r"\nhealth: +the last walk failed; item 2 has been sending")

    def test_status_counts_gone_conversations_by_index(self):
        """status counts the gone conversations from conversations_gone
        (0006), not by reading every row, and counts them right."""
        with sqlite3.connect(self.db) as con:
            plan = [r[3] for r in con.execute(
                "EXPLAIN QUERY PLAN SELECT count(*) FROM conversations WHERE gone_at IS NOT NULL")]
            con.execute("UPDATE conversations SET gone_at = '2026-01-01T00:00:00Z' "
                        "WHERE id IN ('conv_0000002', 'conv_0000003')")
        self.assertEqual(len(plan), 1)
        self.assertRegex(plan[0], r"^SEARCH conversations USING COVERING INDEX conversations_gone")
        self.assertRegex(self.status().stdout, r"\nconversations: \d+ live, 2 gone\n")

    def test_status_names_the_daemon(self):
        proc = self.spawn("-n")
        try:
            self.wait_for(lambda: "dexsyncd pid %d\n" % proc.pid in self.status().stdout, 20, "the daemon's pid")
        finally:
            self.kill(proc, signal.SIGTERM)
        self.assertIn("daemon:        none running\n", self.status().stdout)

    def test_status_warns_when_the_lock_file_cannot_be_read(self):
        """Whether a daemon runs is unknown: a problem (exit 1), not ok."""
        os.unlink(self.db + ".lock")
        os.symlink("/nonexistent", self.db + ".lock")
        try:
            p = self.status()
        finally:
            os.unlink(self.db + ".lock")    # (tearDown reads every file)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("daemon:        unknown (the lock file cannot be read)\n", p.stdout)
        self.assertIn("health:        whether a dexsyncd serves the database is unknown", p.stdout)
        self.assertIn(self.db + ".lock: a symbolic link, not a regular file", p.stderr)
        # A FIFO (whose open used to wait for a writer for ever) or a
        # directory in its place: the same, at once.
        for make, kind in ((os.mkfifo, "a FIFO"), (os.mkdir, "a directory")):
            make(self.db + ".lock")
            refused = "%s.lock: %s, not a regular file\n" % (self.db, kind)
            try:
                for cmd in ("status", "check"):
                    p = self.dexsync(cmd)
                    self.assertIn(refused, p.stderr, make)
                p = self.status()
                self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
                self.assertIn("daemon:        unknown (the lock file cannot be read)\n", p.stdout)
                p = self.dexsyncd("-n", "-1")
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn(refused, p.stderr)
            finally:
                (os.unlink if make is os.mkfifo else os.rmdir)(self.db + ".lock")

    def test_a_hard_link_as_the_lock_file_is_refused_not_written(self):
        """The daemon writes its pid into its lock file: another name of the
        database (or of any file) there would lose what it holds."""
        os.unlink(self.db + ".lock")
        con = sqlite3.connect(self.db)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        with open(self.db, "rb") as f:
            before = hashlib.sha256(f.read()).hexdigest()
        os.link(self.db, self.db + ".lock")
        try:
            p = self.dexsyncd("-n", "-1")
            q = self.status()
        finally:
            os.unlink(self.db + ".lock")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("%s.lock: has 2 names (a hard link), not a lock file of its own\n" % self.db, p.stderr)
        with open(self.db, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), before, "the database was written")
        self.assertEqual(q.returncode, 1, q.stdout + q.stderr)
        self.assertIn("daemon:        unknown (the lock file cannot be read)\n", q.stdout)

    def test_retry_and_cancel_stranded_items_only_without_a_daemon(self):
        proc = self.spawn("-n")
        try:
            self.wait_for(lambda: self.scalar("SELECT count(*) FROM outbox WHERE state = 'sent'") == 3, 20,
                          "the daemon to send the queue")
            for i in (4, 5):
                self.assertEqual(self.dexsync("send", "conv_0000004", "text").returncode, 0)
            self.sending(4, 900)
            self.sending(5, 900)
            self.wait_for(lambda: "dexsyncd pid %d" % proc.pid in self.status().stdout, 20, "the lock")
            for cmd in ("retry", "cancel"):
                p = self.dexsync(cmd, "4")
                self.assertEqual(p.returncode, 1, p.stdout)
                self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
                self.assertIn("item 4 is being sent by dexsyncd (pid %d)" % proc.pid, p.stderr)
            self.assertEqual(self.sql("SELECT state FROM outbox WHERE id IN (4, 5)"), [("sending",), ("sending",)])
        finally:
            self.kill(proc)             # SIGKILL: a crash, its lock goes with it
        p = self.dexsync("retry", "4")
        self.assertEqual((p.returncode, p.stdout), (0, "1 item back to pending\n"), p.stderr)
        state, attempts, due = self.sql("SELECT state, attempts, unixepoch(next_attempt_at) - unixepoch('now')"
                                        " FROM outbox WHERE id = 4")[0]
        self.assertEqual((state, attempts), ("pending", 0))
        self.assertIsNotNone(due, "due now, not NULL")
        self.assertLessEqual(abs(due), 2)
        p = self.dexsync("cancel", "5")
        self.assertEqual((p.returncode, p.stdout), (0, "1 item cancelled\n"), p.stderr)
        self.assertIn("daemon:        none running\n", self.status().stdout, "the CLI let the lock go")
        self.drain_until_done()
        self.assertEqual(self.sql("SELECT id, state FROM outbox WHERE id >= 4"), [(4, "sent"), (5, "cancelled")])

    def test_retry_sets_the_next_attempt(self):
        con = sqlite3.connect(self.db)
        with con:
            con.execute("UPDATE outbox SET state = 'failed', next_attempt_at = NULL WHERE id = 2")
        con.close()
        self.assertEqual(self.dexsync("retry", "2").returncode, 0)
        self.assertLessEqual(self.scalar("SELECT abs(unixepoch(next_attempt_at) - unixepoch('now'))"
                                         " FROM outbox WHERE id = 2"), 2)

    def test_ids_are_parsed_strictly(self):
        con = sqlite3.connect(self.db)
        with con:
            con.execute("UPDATE outbox SET state = 'failed'")
        con.close()
        for bad in ("99999999999999999999", "9223372036854775808", "-1", "+1", " 1", "1 ", "1x", "0", "",
                    "outbox:", "0x1", "1e3"):
            for cmd in ("retry", "cancel"):
                p = self.dexsync(cmd, bad)
                self.assertEqual(p.returncode, 1, (cmd, bad, p.stdout))
                self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
                self.assertIn("is not an outbox id", p.stderr, bad)
        self.assertEqual(self.scalar("SELECT count(*) FROM outbox WHERE state = 'failed'"), 3)
        p = self.dexsync("retry", "9223372036854775807")
        self.assertEqual(p.returncode, 1)
        self.assertIn("no outbox item 9223372036854775807", p.stderr)
        p = self.dexsync("retry", "1", "outbox:1", "001")
        self.assertEqual((p.returncode, p.stdout), (0, "1 item back to pending\n"), p.stderr)


class EscapeTest(OutboxTest):
    """Rows anyone can write and arguments anyone can pass never reach a
    terminal or a log raw."""
    conversations = 5
    HOSTILE = "conv_0000001\n\x1b[31mdexsync: FORGED\x1b]0;title\x07\x9b2J"

    def setUp(self):
        super().setUp()
        self.dexsync("send", "conv_0000001", "hi")
        con = sqlite3.connect(self.db)
        with con:
            # The schema refuses such a target, queued or updated; a row of an
            # older version (or one whose writer dropped the check) may hold it.
            con.execute("DROP TRIGGER outbox_check_target_update")
            con.execute("UPDATE outbox SET target = ?1, last_error = CAST(?2 AS TEXT),"
                        " payload = json_set(payload, '$.conversation_id', ?1) WHERE id = 1",
                        (self.HOSTILE, self.HOSTILE.encode() + b"\xff"))
        con.close()

    def assert_clean(self, text, lines=None):
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        for ch in text:
            self.assertFalse(ord(ch) < 0x20 and ch != "\n" or 0x7f <= ord(ch) <= 0x9f,
                             "raw control %r in %r" % (ch, text))
        self.assertNotIn("\ufffd", text, "not valid UTF-8")
        for line in text.splitlines():
            self.assertFalse(line.startswith("dexsync: FORGED"), text)
        if lines is not None:
            self.assertEqual(len(text.splitlines()), lines, text)

    def test_outbox_listing(self):
        p = subprocess.run([DEXSYNC, "-d", self.db, "outbox"], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assert_clean(p.stdout, lines=2)
        self.assertIn(b"conv_0000001\\n\\x1b[31mdexsync: FORGED\\x1b]0;title\\x07\\u009b2J ", p.stdout)
        self.assertIn(b"\\u009b2J\\xff\n", p.stdout)

    def test_daemon_log_lines(self):
        p = self.once()
        self.assertIn(p.returncode, (0, 1))
        self.assertIn("FORGED", p.stderr, "the item is named in a log line")
        self.assert_clean(p.stderr)
        self.assertIn("conv_0000001\\n\\x1b[31mdexsync: FORGED", p.stderr)

    def test_status_and_error_lines(self):
        con = sqlite3.connect(self.db)
        with con:
            con.execute("INSERT INTO sync_runs(started_at, finished_at, outcome, error) VALUES "
                        "(strftime('%Y-%m-%dT%H:%M:%SZ', 'now'), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'),"
                        " 'failed', ?)", ("HTTP 500\n\x1b[2Jhealth:        ok",))
        con.close()
        p = subprocess.run([DEXSYNC, "-d", self.db, "status"], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assert_clean(p.stdout)
        self.assertIn(b"HTTP 500\\n\\x1b[2Jhealth:", p.stdout)
        for args in ([b"send", b"conv\x1b[2J", b"hi"], [b"report", b"x\ny\x1b[2J"], [b"\x1b[2Jfrob"],
                     [b"send", b"--\x1b[2J", b"c", b"hi"], [b"outbox", b"--state", b"\x1b[2J"],
                     [b"send", b"c\xff", b"hi"], [b"report", b"daily", b"--since", b"\x9b2J"]):
            p = subprocess.run([DEXSYNC.encode(), b"-d", self.db.encode()] + args, capture_output=True,
                               timeout=30)
            self.assertIn(p.returncode, (1, 2), args)
            self.assert_clean(p.stderr, lines=1)
            self.assertIn(b"\\x1b[2J" if b"\x1b" in b"".join(args) else b"\\x", p.stderr)


class InputTest(OutboxTest):
    """Arguments that are not what they seem are refused, never changed."""
    conversations = 0

    def refused(self, *args, stdin=None, code=1, says=""):
        cmd = [DEXSYNC, "-d", self.db] + list(args)
        p = subprocess.run(cmd, capture_output=True, timeout=60, input=stdin)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        self.outputs += [out, err]
        self.assertEqual(p.returncode, code, (args[:3], out, err))
        self.assertEqual(out, "")
        self.assertEqual(len(err.strip().splitlines()), 1, "one line: " + err)
        self.assertIn(says, err)
        self.assertEqual(self.scalar("SELECT count(*) FROM outbox"), 0, "nothing queued")

    def payload(self, n=1):
        return json.loads(self.scalar("SELECT payload FROM outbox WHERE id = ?", n))

    def test_refused(self):
        r = self.refused
        r("new-conversation", "u_1", "--subject", b"caf\xe9", says="the subject is not valid UTF-8")
        r("new-conversation", "u_1", "--tag", b"\xffvip", says="the tag is not valid UTF-8")
        r("new-conversation", "u_1", "--subject", "two\nlines", says="the subject holds a control character")
        r("new-conversation", "u_1", "--subject", "  ", says="the subject is empty")
        r("new-conversation", "u_1", "--tag", "", says="the tag is empty")
        r("new-conversation", "u_1", "--subject", "a", "--subject", "b", says="--subject is given twice")
        r("new-conversation", "", says="'' is not a user id")
        r("new-conversation", "u\x1b[2J", says="is not a user id")
        r("new-conversation", "outbox:1", says="is not a user id")
        r("new-conversation", "u_1", "--subject", code=2, says="option '--subject' needs a value")
        r("send", "conv_1", "-", stdin=b"a\0b", says="the message text holds a NUL byte")
        r("send", "conv_1", stdin=b"\0", says="the message text holds a NUL byte")
        r("send", "conv_1", "-", stdin=b"caf\xe9", says="the message text is not valid UTF-8")
        r("send", "conv_1", "-", stdin=b" \t\r\n \n", says="the message text is empty")
        r("send", "conv_1", "red \x1b[31m", says="the message text holds a control character")
        r("send", "conv_1", "-", stdin=b"x" * (1 << 20) + b"y", says="larger than 1048576 bytes")
        r("send", "", "hi", says="'' is not a conversation id")
        r("send", "conv\x01", "hi", says="is not a conversation id")
        r("send", "outbox:01", "hi", says="is not a conversation id")
        r("send", "outbox:99999999999999999999", "hi", says="is not a conversation id")
        r("send", "--bogus", "conv_1", "hi", code=2, says="send: unknown option '--bogus'")
        r("send", "-x", "conv_1", "hi", code=2, says="send: unknown option '-x'")
        r("send", "--note=yes", "conv_1", "hi", code=2, says="option '--note' takes no value")
        r("update-user", "u_1", b"\xff=1", says="the attribute name in")
        r("update-user", "u_1", "a\tb=1", says="holds a control character")
        r("update-user", "u_1", " plan=x", says="starts or ends with a space")
        r("update-user", "u_1", b"plan=\xff", says="is not valid UTF-8")
        r("update-user", "u_1", "plan=\x1b[5m", says="holds a control character")
        r("update-user", "u_1", "n=99999999999999999999", says="too large")
        r("update-user", "u_1", 'o={"a":1,"a":2}', says="a key twice")
        r("update-user", "u_1", "a=1", "a=2", says="attribute 'a' is given twice")
        r("update-user", "u_1", "--email", b"j\xe9@example.com", says="is not an email address")
        r("update-user", "u_1", "--email", "a@b.example", "--email", "c@d.example", says="--email is given twice")
        r("update-user", "", "a=1", says="'' is not a user id")
        r("update-user", "u\n1", "a=1", says="is not a user id")
        r("--bogus", "status", code=2, says="dexsync: unknown option '--bogus'")
        r("-d", code=2, says="option '-d' needs a value")

    def test_accepted_whole(self):
        p = self.dexsync("update-user", "u_1", "ünï=1", "favourite colour=blue", "note=line 1\nline 2")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.payload(1), {"custom_attributes": {"ünï": 1, "favourite colour": "blue",
                                                                 "note": "line 1\nline 2"}})
        big = "é" * 60000 + "end"                               # 120 KB in one argument
        self.assertEqual(self.dexsync("send", "conv_1", big).returncode, 0)
        self.assertEqual(self.payload(2)["content"], big)
        self.assertEqual(self.dexsync("update-user", "u_2", "bio=" + big).returncode, 0)
        self.assertEqual(self.payload(3)["custom_attributes"]["bio"], big)
        text = ("x" * 1023 + "\n") * 1024                      # exactly 1 MiB from stdin
        p = subprocess.run([DEXSYNC, "-d", self.db, "send", "conv_1", "-"], input=text.encode(),
                           capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.payload(4)["content"], text)
        p = self.dexsync("new-conversation", "u_1", "--subject", "Ünïcødé 日本", "--tag", "vip")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.payload(5), {"subject": "Ünïcødé 日本", "tags": ["vip"], "user_id": "u_1"})
        self.assertEqual(self.dexsync("send", "conv_1", "two\r\nlines\tand a tab").returncode, 0)
        self.assertEqual(self.payload(6)["content"], "two\r\nlines\tand a tab")


if __name__ == "__main__":
    tap.main()
