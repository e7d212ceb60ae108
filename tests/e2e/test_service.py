#!/usr/bin/env python3
"""dexsyncd as a service: the loop, signals, reload, sd_notify."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import DEXSYNC, KEY, DexTest, daemon_pids  # noqa: E402


def count_in_file(path, needle, chunk=1 << 22):
    """Occurrences of needle in a file, read a chunk at a time; the last
    len(needle) - 1 bytes are carried over, so a match across two chunks
    counts, and none counts twice (it cannot fit in the carried bytes)."""
    n, tail = 0, b""
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                return n
            data = tail + block
            n += data.count(needle)
            tail = data[-(len(needle) - 1):]


class Daemon:
    """dexsyncd -n in the background, its stderr collected by a thread."""

    def __init__(self, test, env=None, conf=None):
        self.test = test
        self.proc = test.spawn("-n", conf=conf, env=env)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    def text(self):
        return "".join(self.lines)

    def wait_log(self, needle, timeout=10, start=0):
        self.test.wait_for(lambda: needle in "".join(self.lines[start:]), timeout, repr(needle))

    def stop(self, sig=signal.SIGTERM, timeout=10):
        t = time.time()
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self.reader.join(5)
        self.test.outputs.append(self.text())
        return rc, time.time() - t


class ServiceTest(DexTest):
    conversations = 250

    def setUp(self):
        super().setUp()
        self.conf = self.write_conf(sync="interval = 1h", outbox="poll-interval = 1s")
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
        super().tearDown()

    def start(self, **kw):
        d = Daemon(self, **kw)
        self.daemons.append(d)
        return d

    def runs(self):
        try:
            return self.scalar("SELECT count(*) FROM sync_runs WHERE outcome = 'ok'")
        except Exception:
            return 0

    def test_first_walk_send_usr1_term(self):
        d = self.start()
        self.wait_for(lambda: self.runs() == 1, 10, "the first walk")
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations"), 250)
        p = subprocess.run([DEXSYNC, "-d", self.db, "send", "conv_0000001", "hello from the queue"],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        t = time.time()
        self.wait_for(lambda: len(self.srv.messages) == 1, 5, "delivery")
        self.assertLess(time.time() - t, 2.0, "delivered within 2 poll intervals")
        os.kill(d.proc.pid, signal.SIGUSR1)
        self.wait_for(lambda: self.runs() == 2, 10, "a walk on SIGUSR1")
        rc, took = d.stop()
        self.assertEqual(rc, 0)
        self.assertLess(took, 2.0)
        self.assertIn("stopping on a signal", d.text())

    def test_retry_picked_up_at_its_time(self):
        conf = self.write_conf("fast.conf", sync="interval = 1h",
                               outbox="poll-interval = 1h\nmin-backoff = 2s\nmax-backoff = 2s")
        d = self.start(conf=conf)
        self.wait_for(lambda: self.runs() == 1, 10, "the first walk")
        subprocess.run([DEXSYNC, "-d", self.db, "send", "conv_0000001", "x"], check=True, timeout=10,
                       capture_output=True)
        self.srv.fault("status", code=503, prefix="/messages")
        os.kill(d.proc.pid, signal.SIGUSR1)   # the outbox is looked at after a walk
        self.wait_for(lambda: len([r for r in self.srv.requests if r["path"] == "/messages"]) == 1, 10, "attempt 1")
        self.wait_for(lambda: len(self.srv.messages) == 1, 8, "the retry, without waiting for poll-interval")
        d.stop()

    def test_sighup_reload(self):
        d = self.start()
        self.wait_for(lambda: self.runs() == 1, 10, "the first walk")
        self.assertNotIn("debug:", d.text())
        self.write_conf(top="log-level = debug", sync="interval = 1h", outbox="poll-interval = 1s")
        n = len(d.lines)
        os.kill(d.proc.pid, signal.SIGHUP)
        d.wait_log("configuration reloaded", start=n)
        os.kill(d.proc.pid, signal.SIGUSR1)
        d.wait_log("debug: GET /conversations?limit=100", start=n)
        # The same database spelled another way is the one this daemon
        # serves, not "served by dexsyncd" (itself).
        other = os.path.join(self.dir, "..", os.path.basename(self.dir), os.path.basename(self.db))
        with open(self.conf) as f:
            text = f.read()
        with open(self.conf, "w") as f:
            f.write(text.replace('database = "%s"' % self.db, 'database = "%s"' % other))
        n = len(d.lines)
        os.kill(d.proc.pid, signal.SIGHUP)
        d.wait_log("configuration reloaded", start=n)
        self.assertNotIn("served by", "".join(d.lines[n:]))
        # A broken config is refused and the daemon goes on with the old one.
        with open(self.conf, "a") as f:
            f.write("sync { page-size = 500 }\n")
        n = len(d.lines)
        os.kill(d.proc.pid, signal.SIGHUP)
        d.wait_log("keeping the running configuration", start=n)
        self.assertIn("page-size", "".join(d.lines[n:]))
        self.assertIsNone(d.proc.poll())
        os.kill(d.proc.pid, signal.SIGUSR1)
        self.wait_for(lambda: self.runs() == 3, 10, "a walk after the broken reload")
        # A new key takes effect on reload.
        self.write_conf(sync="interval = 1h", outbox="poll-interval = 1s")
        with open(self.keyfile, "w") as f:
            f.write("revoked-key\n")
        n = len(d.lines)
        os.kill(d.proc.pid, signal.SIGHUP)
        d.wait_log("configuration reloaded", start=n)
        os.kill(d.proc.pid, signal.SIGUSR1)
        d.wait_log("HTTP 401", start=n)
        self.assertEqual(d.stop()[0], 0)

    def test_sigterm_mid_walk_with_slow_server_then_resume(self):
        self.srv.stop()
        self.srv = type(self.srv)(conversations=2500, key=KEY).start()
        self.conf = self.write_conf(sync="interval = 1h", outbox="poll-interval = 1s")
        self.srv.on_page = lambda s, n: time.sleep(0.25)
        d = self.start()
        # Pages are stored ten at a time: wait for the first batch.
        self.wait_for(lambda: self.scalar_or_zero("SELECT count(*) FROM conversations") >= 1000, 20,
                      "a batch stored")
        time.sleep(0.1)   # now inside a slow request
        rc, took = d.stop()
        self.assertEqual(rc, 0)
        self.assertLess(took, 2.0)
        self.assertEqual(self.scalar("SELECT outcome FROM sync_runs"), "interrupted")
        self.assertEqual(self.scalar("PRAGMA integrity_check"), "ok")
        stored = self.scalar("SELECT count(*) FROM conversations")
        self.assertLess(stored, 2500)
        self.assertEqual(stored % 100, 0, "whole pages only")
        self.srv.on_page = None
        self.srv.requests.clear()
        d = self.start()
        self.wait_for(lambda: self.runs() == 1, 20, "the resumed walk")
        self.assertIn("cursor", self.srv.requests[0]["query"])
        self.assertEqual(self.scalar("SELECT resumed FROM sync_runs ORDER BY id DESC LIMIT 1"), 1)
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations"), 2500)
        d.stop()

    def scalar_or_zero(self, q):
        try:
            return self.scalar(q)
        except Exception:
            return 0

    def test_sd_notify(self):
        path = os.path.join(self.dir, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(10)
        d = self.start(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
        got = []

        def until(prefix):
            while True:
                msg = sock.recv(4096).decode()
                got.append(msg)
                if msg.startswith(prefix):
                    return msg
        until("READY=1")
        status = until("STATUS=last walk ok")
        self.assertIn("250 seen", status)
        self.assertIn("outbox: 0 pending", status)
        until("WATCHDOG=1")
        os.kill(d.proc.pid, signal.SIGHUP)
        until("RELOADING=1")
        until("READY=1")
        d.proc.send_signal(signal.SIGTERM)
        until("STOPPING=1")
        self.assertEqual(d.proc.wait(10), 0)
        sock.close()

    @unittest.skipUnless(shutil.which("gcore"), "gcore (gdb) not installed")
    @unittest.skipIf(os.environ.get("SANITIZERS", "no") != "no",
                     "built with sanitizers: a core image includes terabytes of shadow memory")
    def test_old_key_wiped_from_memory_on_reload(self):
        d = self.start()
        self.wait_for(lambda: self.runs() == 1, 10, "the first walk")
        new = "dx_rotated_key_for_the_wipe_test_0001"
        with open(self.keyfile, "w") as f:
            f.write(new + "\n")
        self.srv.key = new
        n = len(d.lines)
        os.kill(d.proc.pid, signal.SIGHUP)
        d.wait_log("configuration reloaded", start=n)
        os.kill(d.proc.pid, signal.SIGUSR1)
        self.wait_for(lambda: self.runs() == 2, 10, "a walk with the new key")
        core = os.path.join(self.dir, "core")
        subprocess.run(["gcore", "-o", core, str(d.proc.pid)], capture_output=True, timeout=60)
        path = "%s.%d" % (core, d.proc.pid)
        old_copies, new_copies = count_in_file(path, KEY.encode()), count_in_file(path, new.encode())
        os.remove(path)
        self.assertEqual(old_copies, 0, "the old key is wiped")
        self.assertGreaterEqual(new_copies, 1)
        d.stop()

    def test_detaches_without_n(self):
        p = subprocess.run([os.environ.get("DEXSYNCD", "dexsyncd"), "-f", self.conf], capture_output=True,
                           text=True, timeout=10, env=self.env())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.wait_for(lambda: self.runs() == 1, 10, "the detached daemon's walk")
        pids = daemon_pids(self.conf)
        self.assertEqual(len(pids), 1)
        os.kill(pids[0], signal.SIGTERM)
        self.wait_for(lambda: not daemon_pids(self.conf), 5, "exit")

    def test_idle_cpu(self):
        d = self.start()
        self.wait_for(lambda: self.runs() == 1, 10, "the first walk")
        time.sleep(0.5)

        def cpu():
            with open("/proc/%d/stat" % d.proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        before = cpu()
        time.sleep(10)
        used = cpu() - before
        self.assertLess(used, 0.05 * 10 / 60 + 0.02, "idle CPU over 10 s: %.3f s" % used)
        d.stop()


if __name__ == "__main__":
    tap.main()
