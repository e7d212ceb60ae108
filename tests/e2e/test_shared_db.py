#!/usr/bin/env python3
"""The database as a shared resource: locks held by others, a full disk,
power loss after a queue insert, and SIGKILL at any moment."""
import collections
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import DEXSYNC, OutboxTest, SANITIZED, hold_write_lock  # noqa: E402



class SharedDbTest(OutboxTest):
    conversations = 300

    def hold_lock(self, seconds):
        return hold_write_lock(self.db, seconds)

    def test_lock_held_longer_than_busy_timeout(self):
        self.dexsync("send", "conv_0000001", "waits for the lock")
        self.srv.change("conv_0000005", subject="changed while locked")
        holder = self.hold_lock(12)
        p = self.once(timeout=60)
        holder.wait(30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("database is locked", p.stderr)
        self.assertEqual(self.scalar("SELECT state FROM outbox"), "pending")
        self.assertEqual(self.srv.messages, [])
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.scalar("SELECT state FROM outbox"), "sent")
        self.assertEqual(self.scalar("SELECT subject FROM conversations WHERE id = 'conv_0000005'"),
                         "changed while locked")

    def test_no_lock_held_while_a_page_is_on_its_way(self):
        # Each page takes 0.5 s to come: a writer never waits on the network.
        self.srv.on_page = lambda s, n: time.sleep(0.5)
        proc = self.spawn("-n", "-1")
        waits = []
        for _ in range(4):
            time.sleep(0.2)
            t = time.time()
            self.assertEqual(self.dexsync("send", "conv_0000001", "queued mid-walk").returncode, 0)
            waits.append(time.time() - t)
        self.finish(proc)
        self.assertEqual(proc.returncode, 0)
        self.assertLess(max(waits), 0.45, "dexsync waited on the walk's lock: %r" % waits)
        self.assertEqual(self.scalar("SELECT pages FROM sync_runs ORDER BY id DESC LIMIT 1"), 3)

    @unittest.skipIf(SANITIZED, "about 10 s of a slow walk: the plain suite runs it")
    def test_writers_get_a_turn_while_pages_wait_to_be_stored(self):
        """Pages come faster than they are stored (a user's trigger makes
        each update slow): the walk's transactions follow one another, each
        up to a second, and SQLite's own busy handler, trying every 100 ms,
        never saw the lock free between two.  Queuing from the command line
        now waits at most for one of them, and the daemon's outbox sends
        during the walk (it waited 10 s and logged 'database is locked')."""
        con = sqlite3.connect(self.db)
        con.execute("CREATE TRIGGER slow AFTER UPDATE OF subject ON conversations BEGIN"
                    " SELECT count(*) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL"
                    " SELECT i + 1 FROM n WHERE i < 160000) SELECT i FROM n); END")
        con.close()
        for i in range(1, self.conversations + 1):
            self.srv.change("conv_%07d" % i, subject="changed %d" % i)
        self.srv.short_pages = 5     # each page stored in about 0.1 s
        proc = self.spawn("-n", "-1", "-l", "info")
        time.sleep(1)
        waits = []
        for _ in range(4):
            t = time.time()
            self.assertEqual(self.dexsync("send", "conv_0000001", "queued mid-walk").returncode, 0)
            waits.append(time.time() - t)
            time.sleep(0.5)
        self.wait_for(lambda: self.scalar("SELECT count(*) FROM outbox WHERE state = 'sent'") == 4,
                      timeout=20, what="the outbox to send the four")
        self.assertIsNone(proc.poll(), "the walk went on after the outbox sent")
        out, err = self.finish(proc, timeout=60)
        self.assertEqual(proc.returncode, 0, err)
        walk = float(re.search(r"walk completed: .* ([0-9.]+) s$", err, re.M).group(1))
        self.assertGreater(walk, 5, "the walk was too quick to tell: %s s" % walk)
        self.assertLess(max(waits), 2.5, "dexsync waited out the walk: %r" % waits)
        self.assertNotIn("database is locked", err)

    def test_queue_insert_is_synced(self):
        if not shutil.which("strace"):
            self.skipTest("strace not installed")
        # LeakSanitizer cannot run under ptrace: off for this one process.
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
        p = subprocess.run(["strace", "-f", "-e", "trace=fsync,fdatasync", DEXSYNC, "-d", self.db, "send",
                            "conv_0000001", "durable"], capture_output=True, text=True, timeout=30, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        syncs = [l for l in p.stderr.splitlines() if "sync(" in l]
        self.assertGreaterEqual(len(syncs), 1, "synchronous=FULL: the WAL is synced at commit")

    def test_full_disk(self):
        small = os.path.join(self.dir, "small")
        os.mkdir(small)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3072k", "tmpfs", small],
                          capture_output=True).returncode != 0:
            self.skipTest("cannot mount a small tmpfs here")
        try:
            self.db = os.path.join(small, "mirror.db")
            conf = self.write_conf("small.conf")
            self.assertEqual(self.once(conf=conf).returncode, 0)
            p = self.dexsync("send", "conv_0000001", "queued before the disk filled")
            self.assertEqual(p.returncode, 0, "the disk is not full yet: " + p.stderr)
            for n in range(1000, 1600):
                self.srv.add({"id": "conv_fill_%d" % n, "status": "open", "subject": "s" * 2000,
                              "created_at": "2026-01-01T00:00:00Z", "user_id": "u",
                              "last_message": {"id": "m_fill_%d" % n, "text": "t" * 2000}})
            p = self.once(conf=conf)
            self.assertEqual(p.returncode, 1)
            # The line names the statement refused, not SQLite's words alone.
            self.assertRegex(p.stderr, r"database or disk is full \(in (INSERT|UPDATE|COMMIT)")
            self.assertEqual(self.scalar("PRAGMA integrity_check"), "ok")
            self.assertIn(self.scalar("SELECT state FROM outbox"), ("pending", "sent"))
            self.assertGreaterEqual(self.scalar("SELECT count(*) FROM conversations"), 300)
            subprocess.run(["mount", "-o", "remount,size=64m", small], check=True)
            p = self.once(conf=conf)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(self.scalar("SELECT count(*) FROM conversations"), 300 + 600)
            self.assertEqual(self.scalar("SELECT state FROM outbox"), "sent")
            self.assertEqual(len(self.srv.messages), 1)
        finally:
            self.db = os.path.join(self.dir, "mirror.db")
            subprocess.run(["umount", "-l", small])

    @unittest.skipIf(SANITIZED, "twice 20 s of the stop's grace: the plain suite runs it")
    def test_a_full_disk_at_the_stop_keeps_the_answers_in_the_reserve(self):
        """The disk fills while a message is on its way: its answer cannot
        be recorded, nor a new file of kept answers written.  The reserve
        made at the start is written over instead, and the next start
        records the answer rather than sending the message again."""
        small = os.path.join(self.dir, "small")
        os.mkdir(small)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", small],
                          capture_output=True).returncode != 0:
            self.skipTest("cannot mount a small tmpfs here")
        filler = os.path.join(small, "filler")

        def fill(server, headers):
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                while True:
                    os.write(fd, b"x" * 4096)
            except OSError:
                pass
            finally:
                os.close(fd)
        try:
            self.db = os.path.join(small, "mirror.db")
            reserve = self.db + ".answers-reserve"
            conf = self.write_conf("small.conf")
            self.assertEqual(self.once(conf=conf).returncode, 0)
            self.assertEqual(os.path.getsize(reserve), 1 << 20)
            self.assertEqual(self.dexsync("send", "conv_0000001", "the disk fills").returncode, 0)
            self.srv.on_write = fill
            p = self.once(conf=conf, timeout=90)
            self.srv.on_write = None
            self.assertEqual(len(self.srv.messages), 1)
            self.assertIn("written over the reserve", p.stderr)
            self.assertIn("kept in", p.stderr)
            # Each try of the stop was refused: said once, then counted.
            # (each statement refused is said once: the walk's two, the outbox's)
            full = [l for l in p.stderr.splitlines() if "database or disk is full (in " in l
                    and not l.startswith("dexsyncd: error: (the error")]
            self.assertGreaterEqual(len(full), 1, p.stderr)
            self.assertLessEqual(len(full), 4, p.stderr)
            self.assertRegex(p.stderr, r"\(the error \"outbox: .*disk is full.*\" came \d+ more times\)")
            self.assertFalse(os.path.exists(reserve))
            self.assertTrue(os.path.exists(self.db + ".answers"))
            # A start on a disk with no room for a new reserve takes them
            # and cannot record them (here a trigger refuses: SQLite may
            # still write into the blocks its WAL has), the disk fills, and
            # the stop keeps them again: the file it took became the
            # reserve.
            os.unlink(filler)
            self.sql("CREATE TRIGGER refuse BEFORE UPDATE OF state ON outbox"
                     " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
            fill(None, None)
            os.truncate(filler, os.path.getsize(filler) - 256 * 1024)
            self.srv.on_page = lambda server, n: fill(None, None)
            p = self.once(conf=conf, timeout=90)
            self.srv.on_page = None
            self.assertIn("may not fit", p.stderr)
            self.assertIn("taken from", p.stderr)
            self.assertIn("written over the reserve", p.stderr)
            self.assertTrue(os.path.exists(self.db + ".answers"), p.stderr)
            self.assertEqual(len(self.srv.messages), 1)
            os.unlink(filler)
            self.sql("DROP TRIGGER refuse")
            p = self.once(conf=conf)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(self.scalar("SELECT state FROM outbox"), "sent")
            self.assertEqual(len(self.srv.messages), 1, "sent again: " + p.stderr)
            self.assertFalse(os.path.exists(self.db + ".answers"))
            self.assertEqual(os.path.getsize(reserve), 1 << 20, "made again")
        finally:
            self.db = os.path.join(self.dir, "mirror.db")
            subprocess.run(["umount", "-l", small])

    def test_sigkill_at_random_points_20_times(self):
        rnd = random.Random(7)
        for n in range(2000, 2600):
            self.srv.add(n)
        con = sqlite3.connect(self.db)
        with con:
            for i in range(300):
                con.execute("INSERT INTO outbox(kind, payload) VALUES ('message', json_object("
                            "'conversation_id', ?, 'content', ?))", ("conv_%07d" % (i % 30 + 1), "m %d" % i))
        con.close()
        self.srv.on_page = lambda s, i: time.sleep(0.02)
        self.srv.write_delay = 0.003
        for round_ in range(20):
            if round_ % 5 == 0:
                self.srv.change("conv_%07d" % (round_ + 1), subject="round %d" % round_)
            proc = self.spawn("-n", "-1")
            time.sleep(rnd.uniform(0.05, 0.6))
            proc.send_signal(signal.SIGKILL)
            self.finish(proc)
            self.assertEqual(self.scalar("PRAGMA integrity_check"), "ok", "round %d" % round_)
            self.assertEqual(self.scalar("SELECT count(*) FROM outbox"), 300, "no item lost")
        self.srv.on_page = None
        self.srv.write_delay = 0
        self.drain_until_done()
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        got = collections.defaultdict(set)
        for m in self.srv.messages:
            got[m["doc"]["content"]].add(m["key"])
        self.assertEqual(len(got), 300, "every item delivered")
        self.assertTrue(all(len(k) == 1 for k in got.values()), "a repeat carries the same key")
        expected = sorted((c["id"], c["subject"]) for c in self.srv.convs.values())
        self.assertEqual(self.sql("SELECT id, subject FROM conversations WHERE gone_at IS NULL ORDER BY id"), expected)


if __name__ == "__main__":
    tap.main()
