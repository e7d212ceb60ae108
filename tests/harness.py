"""Shared pieces of dexsync's end-to-end tests: a fake Dexra per test, a
temporary directory with a config and a key file, the real dexsyncd run as a
subprocess, and a check that the API key never shows up in anything we saw."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fakedexra import FakeDexra  # noqa: E402

KEY = "dx_test_k3y_SECRET_7f3a9"
DEXSYNCD = os.environ.get("DEXSYNCD", "dexsyncd")
DEXSYNC = os.environ.get("DEXSYNC", "dexsync")
VALGRIND = os.environ.get("DEXSYNC_VALGRIND", "").split()
# Under a sanitizer or valgrind: tests that take long for what they add skip.
SANITIZED = bool(os.environ.get("SANITIZERS", "").strip() not in ("", "no")) or bool(VALGRIND)


# Holds the write lock (BEGIN IMMEDIATE, as the daemon's transactions do,
# with a page written) for argv[2] seconds; prints "locked" once it has it.
HOLD_WRITE_LOCK = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
con.execute("UPDATE outbox SET attempts = attempts WHERE id = 0")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("COMMIT")
"""


def daemon_pids(conf):
    """The pids of the dexsyncd processes started with "-f conf" (a detached
    daemon is no child of ours): their command lines read from /proc, the
    arguments compared whole, where pgrep -f would match any process whose
    command line merely contains the text."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")[:-1]
        except OSError:
            continue            # gone meanwhile, or not ours to read
        args = [a.decode(errors="replace") for a in argv]
        if (args and os.path.basename(args[0]) == "dexsyncd"
                and any(args[i] == "-f" and args[i + 1] == conf for i in range(len(args) - 1))):
            pids.append(int(entry))
    return pids


def hold_write_lock(db, seconds=60):
    """Another process holding db's write lock; returns its Popen once it does."""
    p = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, db, str(seconds)],
                         stdout=subprocess.PIPE, text=True)
    if p.stdout.readline().strip() != "locked":
        p.kill()
        raise RuntimeError("could not take the write lock of " + db)
    return p


class DexTest(unittest.TestCase):
    conversations = 0
    server_kwargs = {}

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="dexsync-e2e-")
        self.srv = FakeDexra(conversations=self.conversations, key=KEY, **self.server_kwargs).start()
        self.db = os.path.join(self.dir, "mirror.db")
        self.keyfile = os.path.join(self.dir, "api-key")
        with open(os.open(self.keyfile, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(KEY + "\n")
        self.outputs = []
        self.conf = self.write_conf()

    def tearDown(self):
        self.srv.stop()
        try:
            # What the server saw, but the Authorization header itself.
            for r in self.srv.requests:
                seen = dict(r["headers"])
                seen.pop("Authorization", None)
                self.assertNotIn(KEY, json.dumps(seen) + r["path"] + json.dumps(r["query"]), "key in a request")
                self.assertNotIn(KEY.encode(), r["body"], "key in a request body")
            for text in self.outputs:
                self.assertNotIn(KEY, text, "the API key leaked into output")
                for report in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                               "WARNING: ThreadSanitizer"):
                    self.assertNotIn(report, text, "a sanitizer report")
            for name in os.listdir(self.dir):
                if name.startswith("mirror.db"):
                    with open(os.path.join(self.dir, name), "rb") as f:
                        self.assertNotIn(KEY.encode(), f.read(), "the API key leaked into " + name)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def write_conf(self, name="dexsyncd.conf", top="", api="", sync="", outbox="", base_url=None):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write('database = "%s"\n%s\n' % (self.db, top))
            f.write('api {\n base-url = "%s"\n api-key-file = "%s"\n max-rate = 0\n'
                    ' connect-timeout = 5s\n timeout = 20s\n%s\n}\n'
                    % (base_url or self.srv.url, self.keyfile, api))
            f.write("sync {\n fetch-details = false\n%s\n}\n" % sync)
            f.write("outbox {\n%s\n}\n" % outbox)
        os.chmod(path, 0o600)
        return path

    def env(self, extra=None):
        env = {k: v for k, v in os.environ.items() if k not in ("DEXRA_API_KEY", "CREDENTIALS_DIRECTORY")}
        env.update(extra or {})
        return env

    def dexsyncd(self, *args, conf=None, timeout=120, env=None):
        """Run dexsyncd to completion; returns the CompletedProcess (text)."""
        cmd = VALGRIND + [DEXSYNCD, "-f", conf or self.conf] + list(args)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env(env))
        self.outputs += [p.stdout, p.stderr]
        return p

    def once(self, *args, **kw):
        return self.dexsyncd("-n", "-1", *args, **kw)

    def spawn(self, *args, conf=None, env=None):
        """Start dexsyncd in the background; returns the Popen."""
        cmd = VALGRIND + [DEXSYNCD, "-f", conf or self.conf] + list(args)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env(env))
        # A test that fails half-way must not leave a daemon running.
        self.addCleanup(lambda: proc.poll() is not None or (proc.kill(), proc.wait()))
        return proc

    def finish(self, proc, timeout=30):
        out, err = proc.communicate(timeout=timeout)
        self.outputs += [out, err]
        return out, err

    def sql(self, query, *params):
        con = sqlite3.connect(self.db, timeout=10)
        try:
            return con.execute(query, params).fetchall()
        finally:
            con.close()

    def scalar(self, query, *params):
        return self.sql(query, *params)[0][0]

    def wait_for(self, predicate, timeout=10, what="condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        self.fail("timed out waiting for " + what)

    def kill(self, proc, sig=signal.SIGKILL):
        proc.send_signal(sig)
        self.finish(proc)


class OutboxTest(DexTest):
    """A DexTest with a database made by a first walk, and outbox helpers."""
    conversations = 20

    def setUp(self):
        super().setUp()
        self.conf = self.write_conf(outbox="min-backoff = 1s\nmax-backoff = 1s")
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.srv.requests.clear()

    def dexsync(self, *args, stdin=None, db=True):
        cmd = [DEXSYNC] + (["-d", self.db] if db else []) + list(args)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, input=stdin)
        self.outputs += [p.stdout, p.stderr]
        return p

    def queue(self, kind, target, payload):
        con = sqlite3.connect(self.db, timeout=10)
        with con:
            cur = con.execute("INSERT INTO outbox(kind, target, payload) VALUES (?, ?, ?)",
                              (kind, target, json.dumps(payload)))
        con.close()
        return cur.lastrowid

    def drain_until_done(self, timeout=60, conf=None):
        """Run dexsyncd -1 until nothing is pending or sending."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            p = self.once(conf=conf)
            self.assertIn(p.returncode, (0, 1), p.stderr)
            if self.scalar("SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending')") == 0:
                return
            time.sleep(0.2)
        self.fail("outbox not drained in %d s" % timeout)

    def posts(self, path="/messages"):
        return [r for r in self.srv.requests if r["method"] != "GET" and r["path"] == path]
