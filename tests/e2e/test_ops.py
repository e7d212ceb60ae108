#!/usr/bin/env python3
"""Operations: the metrics file (checked by promtool and against the
database), dexsync backup while the daemon walks and delivers, dexsync
check, two workspaces side by side, and the two groups (dexsync reads and
queues, dexsync-read only reads, nobody else sees anything) as real
unprivileged uids over a directory laid out by the shipped tmpfiles.d."""
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from fakedexra import FakeDexra  # noqa: E402
from harness import DEXSYNC, DEXSYNCD, KEY, DexTest, OutboxTest  # noqa: E402

SRCDIR = os.environ.get("DEXSYNC_SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))
PROMTOOL = shutil.which("promtool")
SAMPLE = re.compile(r'^([a-z_]+)(?:\{([^}]*)\})? (\S+)$')


def parse_metrics(text):
    """{(name, frozenset of label pairs but database): value}."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        labels = frozenset(tuple(kv.split("=", 1)) for kv in re.findall(r'[a-z_]+="[^"]*"', m.group(2) or "")
                           if not kv.startswith("database="))
        out[(m.group(1), frozenset((k, v.strip('"')) for k, v in labels))] = float(m.group(3))
    return out


def metric(values, name, **labels):
    return values[(name, frozenset(labels.items()))]


class MetricsTest(OutboxTest):
    conversations = 120

    def setUp(self):
        super().setUp()
        self.prom = os.path.join(self.dir, "dexsyncd.prom")
        self.conf = self.write_conf(top='metrics-file = "%s"' % self.prom,
                                    outbox="min-backoff = 1s\nmax-backoff = 1s")

    def read_metrics(self):
        with open(self.prom) as f:
            text = f.read()
        self.outputs.append(text)
        if PROMTOOL:
            p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn('database="%s"' % self.db, text)
        return parse_metrics(text)

    def test_after_a_walk(self):
        self.srv.change("conv_0000003", subject="changed")
        self.srv.add(500)
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(oct(os.stat(self.prom).st_mode & 0o777), "0o644")
        m = self.read_metrics()
        self.assertEqual(metric(m, "dexsync_walks_total", outcome="ok"), 1)
        self.assertEqual(metric(m, "dexsync_walks_total", outcome="failed"), 0)
        self.assertEqual(metric(m, "dexsync_conversations_inserted_total"), 1)
        self.assertEqual(metric(m, "dexsync_conversations_changed_total"), 1)
        self.assertEqual(metric(m, "dexsync_mirror_rows", table="conversations"),
                         self.scalar("SELECT count(*) FROM conversations"))
        self.assertEqual(metric(m, "dexsync_last_successful_walk_timestamp_seconds"),
                         self.scalar("SELECT unixepoch(finished_at) FROM sync_runs ORDER BY id DESC LIMIT 1"))
        self.assertGreaterEqual(metric(m, "dexsync_requests_total", outcome="ok"),
                                self.scalar("SELECT requests FROM sync_runs ORDER BY id DESC LIMIT 1"))
        self.assertGreater(metric(m, "dexsync_last_walk_duration_seconds"), 0)
        self.assertEqual([n for n in os.listdir(self.dir) if n.startswith("dexsyncd.prom.")], [],
                         "a temporary file left behind")

    def test_after_a_drain(self):
        for i in range(3):
            self.assertEqual(self.dexsync("send", "conv_000000%d" % (i + 1), "hello").returncode, 0)
        self.srv.fault("status", code=400, count=1, prefix="/messages")
        self.assertEqual(self.dexsync("send", "conv_0000009", "refused").returncode, 0)
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        m = self.read_metrics()
        self.assertEqual(metric(m, "dexsync_outbox_sent_total"), 3)
        self.assertEqual(metric(m, "dexsync_outbox_failed_total"), 1)
        for state in ("sent", "failed", "pending"):
            self.assertEqual(metric(m, "dexsync_outbox_items", kind="message", state=state),
                             self.scalar("SELECT count(*) FROM outbox WHERE state = ?", state), state)
        self.assertEqual(self.scalar("SELECT count(*) FROM outbox WHERE state = 'failed'"), 1)
        self.assertEqual(metric(m, "dexsync_outbox_oldest_pending_age_seconds"), 0)

    def test_after_a_failed_walk_and_a_pending_item(self):
        self.assertEqual(self.once().returncode, 0)
        ok_at = self.scalar("SELECT unixepoch(finished_at) FROM sync_runs WHERE outcome = 'ok' "
                            "ORDER BY id DESC LIMIT 1")
        with sqlite3.connect(self.db) as con:
            con.execute("INSERT INTO outbox(kind, payload, created_at, next_attempt_at) VALUES ('message', "
                        "'{\"conversation_id\": \"conv_0000001\", \"content\": \"later\"}', "
                        "strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-2 hours'), '2999-01-01T00:00:00Z')")
        self.srv.fault("status", code=500, count=50, prefix="/conversations")
        p = self.once()
        self.assertEqual(p.returncode, 1, p.stderr)
        m = self.read_metrics()
        self.assertEqual(metric(m, "dexsync_walks_total", outcome="failed"), 1)
        self.assertEqual(metric(m, "dexsync_walks_total", outcome="ok"), 0)
        self.assertGreaterEqual(metric(m, "dexsync_requests_total", outcome="transient"), 1)
        self.assertGreaterEqual(metric(m, "dexsync_retries_total", of="walk"), 1)
        self.assertEqual(metric(m, "dexsync_last_successful_walk_timestamp_seconds"), ok_at)
        self.assertEqual(metric(m, "dexsync_outbox_items", kind="message", state="pending"), 1)
        self.assertAlmostEqual(metric(m, "dexsync_outbox_oldest_pending_age_seconds"), 7200, delta=60)

    def test_counters_rise_across_a_reload(self):
        self.conf = self.write_conf(top='metrics-file = "%s"' % self.prom,
                                    outbox="poll-interval = 1s\nmin-backoff = 1s\nmax-backoff = 1s")
        proc = self.spawn("-n")
        try:
            self.wait_for(lambda: os.path.exists(self.prom) and
                          parse_metrics(open(self.prom).read()).get(
                              ("dexsync_walks_total", frozenset({("outcome", "ok")}))) == 1,
                          timeout=20, what="the first walk's metrics")
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            proc.send_signal(signal.SIGUSR1)
            self.wait_for(lambda: parse_metrics(open(self.prom).read()).get(
                ("dexsync_walks_total", frozenset({("outcome", "ok")}))) == 2,
                timeout=20, what="a second walk counted after the reload")
            self.assertEqual(self.dexsync("send", "conv_0000002", "while it runs").returncode, 0)
            self.wait_for(lambda: parse_metrics(open(self.prom).read()).get(
                ("dexsync_outbox_sent_total", frozenset())) == 1,
                timeout=20, what="the drain in the metrics file")
        finally:
            self.kill(proc, signal.SIGTERM)
        self.assertEqual(proc.returncode, 0)
        self.read_metrics()

    def test_unwritable_metrics_file_is_logged_not_fatal(self):
        self.conf = self.write_conf(top='metrics-file = "%s/no/such/dir/x.prom"' % self.dir)
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("x.prom: cannot write it", p.stderr)


class BackupCheckTest(OutboxTest):
    conversations = 2000

    def copy_rows(self, path, query):
        con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        try:
            return con.execute(query).fetchall()
        finally:
            con.close()

    def write(self, query):
        con = sqlite3.connect(self.db, timeout=10)
        with con:
            con.execute(query)
        con.close()

    def test_check_during_an_interrupted_initial_mirror(self):
        """The full-text indexes of an initial mirror are built at its end:
        stopped before it, check says so rather than 'malformed'."""
        self.db = os.path.join(self.dir, "fresh.db")
        self.conf = self.write_conf(sync="page-size = 20")
        self.srv.on_page = lambda s, n: time.sleep(0.1)
        proc = self.spawn("-n", "-1")
        self.wait_for(lambda: os.path.exists(self.db) and self.count() >= 200, 30, "pages stored")
        proc.send_signal(signal.SIGTERM)
        self.finish(proc)
        p = self.dexsync("check")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        for t in ("conversations_fts", "messages_fts"):
            self.assertIn("search index %s: not built yet" % t, p.stdout)
        self.srv.on_page = None
        self.assertEqual(self.once().returncode, 0)
        p = self.dexsync("check")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("search index conversations_fts: ok", p.stdout)

    def count(self):
        try:
            return self.scalar("SELECT count(*) FROM conversations")
        except Exception:
            return 0

    def test_backup_while_walking_and_delivering(self):
        self.conf = self.write_conf(sync="page-size = 20",
                                    outbox="poll-interval = 1s\nmin-backoff = 1s\nmax-backoff = 1s")
        for n in range(2000, 3000):
            self.srv.add({"id": "conv_new_%d" % n, "status": "open", "subject": "new %d" % n,
                          "created_at": "2026-02-01T00:00:00Z"})
        self.srv.on_page = lambda s, n: time.sleep(0.1)
        for i in range(20):
            self.assertEqual(self.dexsync("send", "conv_%07d" % (i + 1), "before").returncode, 0)
        proc = self.spawn("-n")
        try:
            self.wait_for(lambda: self.scalar("SELECT count(*) FROM conversations") > 2100,
                          timeout=30, what="the walk under way")
            before_ids = {r[0] for r in self.sql("SELECT id FROM conversations")}
            sent_before = {r[0] for r in self.sql("SELECT id FROM outbox WHERE state = 'sent'")}
            backup = os.path.join(self.dir, "copy.db")
            p = subprocess.run([DEXSYNC, "-d", self.db, "backup", backup], capture_output=True, text=True,
                               timeout=120)
            self.outputs += [p.stdout, p.stderr]
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("integrity ok", p.stdout)
            self.assertTrue(proc.poll() is None, "the daemon kept running")
        finally:
            self.kill(proc, signal.SIGTERM)
        self.assertEqual(oct(os.stat(backup).st_mode & 0o777), "0o600")
        self.assertEqual(self.copy_rows(backup, "PRAGMA integrity_check"), [("ok",)])
        self.assertEqual(self.copy_rows(backup, "PRAGMA journal_mode"), [("delete",)])
        copied = {r[0] for r in self.copy_rows(backup, "SELECT id FROM conversations")}
        self.assertLessEqual(before_ids, copied, "a row committed before the backup is missing")
        self.assertLessEqual(sent_before, {r[0] for r in self.copy_rows(
            backup, "SELECT id FROM outbox WHERE state = 'sent'")})
        # The copy is a mirror dexsync itself reads; an existing file is refused.
        p = self.dexsync("-d", backup, "check", db=False)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        size = os.path.getsize(backup)
        p = self.dexsync("backup", backup)
        self.assertEqual(p.returncode, 1)
        self.assertIn("exists", p.stderr)
        self.assertEqual(os.path.getsize(backup), size)
        self.assertEqual([n for n in os.listdir(self.dir) if ".tmp-" in n], [])

    def test_check_healthy(self):
        p = self.dexsync("check")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("integrity: ok", p.stdout)
        self.assertIn("rows: conversations 2000 (2000 live", p.stdout)
        self.assertIn("check: ok", p.stdout)
        self.assertEqual(p.stderr, "")

    def test_check_stranded_item(self):
        self.assertEqual(self.dexsync("send", "conv_0000001", "stuck").returncode, 0)
        self.write("UPDATE outbox SET state = 'sending', sending_at = '2026-01-01T00:00:00Z'")
        p = self.dexsync("check")
        self.assertEqual(p.returncode, 1)
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertIn("item 1 is stranded in 'sending'", lines[0])

    def test_check_zeroed_page(self):
        con = sqlite3.connect(self.db)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        pages = os.path.getsize(self.db) // 4096
        self.assertGreater(pages, 50)
        with open(self.db, "r+b") as f:
            f.seek(4096 * (pages // 2))
            f.write(b"\0" * 4096)
        p = self.dexsync("check")
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertTrue(p.stderr.strip(), "no problem reported")
        self.assertIn("dexsync: error: integrity: ", p.stderr)
        for line in p.stderr.splitlines():
            self.assertTrue(line.startswith("dexsync: error: "), line)
        self.assertIn("check: %d problem" % len(p.stderr.splitlines()), p.stdout)
        p = self.dexsync("backup", os.path.join(self.dir, "bad-copy.db"))
        self.assertEqual(p.returncode, 1)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "bad-copy.db")))
        self.assertEqual([n for n in os.listdir(self.dir) if ".tmp-" in n], [])

    def test_check_search_index(self):
        tables = [r[0] for r in self.sql("SELECT name FROM sqlite_schema WHERE sql LIKE "
                                         "'CREATE VIRTUAL TABLE%fts5%'")]
        if not tables:
            self.skipTest("no full-text search tables in this schema")
        self.assertIn("search index", self.dexsync("check").stdout)
        # An index entry that its row does not have: FTS5's integrity-check finds it.
        self.write("INSERT INTO conversations_fts(conversations_fts, rowid, subject, last_message_text) "
                 "VALUES ('delete', 1, 'zzz', 'qqq')")
        p = self.dexsync("check")
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("conversations_fts", p.stderr)


class TwoWorkspacesTest(DexTest):
    def test_two_configs_two_mirrors(self):
        other = FakeDexra(conversations=7, key=KEY, seed=2).start()
        for n in (1, 2, 3):
            self.srv.add(n)
        try:
            confs = {}
            for name, srv in (("a", self.srv), ("b", other)):
                os.mkdir(os.path.join(self.dir, name))
                self.db = os.path.join(self.dir, name, "mirror.db")
                confs[name] = self.write_conf("%s.conf" % name, base_url=srv.url,
                                              top='metrics-file = "%s/%s.prom"' % (self.dir, name))
            procs = [subprocess.Popen([DEXSYNCD, "-n", "-1", "-f", confs[n]], stderr=subprocess.PIPE, text=True)
                     for n in ("a", "b")]
            for p in procs:
                _, err = p.communicate(timeout=60)
                self.outputs.append(err)
                self.assertEqual(p.returncode, 0, err)
            for name, n in (("a", 3), ("b", 7)):
                p = subprocess.run([DEXSYNC, "-f", confs[name], "check"], capture_output=True, text=True,
                                   timeout=30)
                self.outputs += [p.stdout, p.stderr]
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn("rows: conversations %d " % n, p.stdout)
                with open(os.path.join(self.dir, "%s.prom" % name)) as f:
                    self.assertIn('database="%s/%s/mirror.db"' % (self.dir, name), f.read())
        finally:
            other.stop()


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv") and shutil.which("systemd-tmpfiles")
                     and shutil.which("sqlite3"), "needs root, setpriv, systemd-tmpfiles and sqlite3")
class GroupsTest(unittest.TestCase):
    """uids and gids no one uses: the daemon's, dexsync's, dexsync-read's."""
    DAEMON, SENDERS, READERS, READER, SENDER, NOBODY = 61001, 61001, 61002, 61003, 61004, 61005

    def setUp(self):
        self.base = tempfile.mkdtemp(prefix="dexsync-groups-")
        os.chmod(self.base, 0o755)
        self.state = os.path.join(self.base, "state")
        with open(os.path.join(SRCDIR, "systemd", "dexsyncd.tmpfiles")) as f:
            lines = [l for l in f if l.startswith(("d /var/lib/dexsyncd", "a+ /var/lib/dexsyncd"))]
        self.assertEqual(len(lines), 2, "the tmpfiles.d lines of the state directory")
        snippet = "".join(lines).replace("/var/lib/dexsyncd", "@STATE@") \
            .replace("dexsync-read", str(self.READERS)).replace("dexsync", str(self.SENDERS)) \
            .replace("@STATE@", self.state)
        path = os.path.join(self.base, "tmpfiles.conf")
        with open(path, "w") as f:
            f.write(snippet)
        p = subprocess.run(["systemd-tmpfiles", "--create", path], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.srv = FakeDexra(conversations=600, key=KEY).start()
        self.db = os.path.join(self.state, "mirror.db")
        self.conf = os.path.join(self.base, "dexsyncd.conf")
        with open(self.conf, "w") as f:
            f.write('database = "%s"\napi {\n base-url = "%s"\n max-rate = 0\n}\n'
                    'sync {\n page-size = 20\n fetch-details = false\n}\n' % (self.db, self.srv.url))
        os.chmod(self.conf, 0o644)

    def tearDown(self):
        self.srv.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def run_as(self, uid, groups, *cmd, umask=None):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/",
               "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "")}
        pre = ["setpriv", "--reuid", str(uid), "--regid", str(uid)]
        pre += ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
        p = subprocess.run(pre + list(cmd), capture_output=True, text=True, timeout=60, env=env)
        self.assertNotIn(KEY, p.stdout + p.stderr)
        return p

    def test_readers_senders_and_nobody(self):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DEXRA_API_KEY": KEY,
               "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "")}
        self.srv.on_page = lambda s, n: time.sleep(0.15)
        daemon = subprocess.Popen(["setpriv", "--reuid", str(self.DAEMON), "--regid", str(self.DAEMON),
                                   "--clear-groups", "sh", "-c", 'umask 0007; exec "$0" -n -f "$1"',
                                   DEXSYNCD, self.conf], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 20
            while time.time() < deadline and not os.path.exists(self.db + "-shm") and daemon.poll() is None:
                time.sleep(0.05)
            time.sleep(0.5)
            self.assertIsNone(daemon.poll(), daemon.poll() is not None and daemon.communicate()[1])
            self.assertEqual(oct(os.stat(self.db).st_mode & 0o770), "0o660", "the database is group-writable")
            # The reader queries while the daemon walks...
            p = self.run_as(self.READER, [self.READERS], "sqlite3", self.db, "SELECT count(*) FROM conversations")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertLess(int(p.stdout), 600, "the walk was over already")
            p = self.run_as(self.READER, [self.READERS], DEXSYNC, "-d", self.db, "report", "by-status")
            self.assertEqual(p.returncode, 0, p.stderr)
            p = self.run_as(self.READER, [self.READERS], DEXSYNC, "-d", self.db, "status")
            self.assertRegex(p.stdout, r"daemon: +dexsyncd pid %d" % daemon.pid, p.stderr)
            # ... and is refused when it queues, with SQL or with dexsync.
            p = self.run_as(self.READER, [self.READERS], DEXSYNC, "-d", self.db, "send", "conv_0000001", "no")
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("dexsync: error:", p.stderr)
            p = self.run_as(self.READER, [self.READERS], "sqlite3", self.db,
                            "INSERT INTO outbox(kind, payload) VALUES ('message', "
                            "'{\"conversation_id\": \"conv_0000001\", \"content\": \"no\"}')")
            self.assertNotEqual(p.returncode, 0)
            # The sender queues.
            p = self.run_as(self.SENDER, [self.SENDERS], DEXSYNC, "-d", self.db, "send", "conv_0000001", "yes")
            self.assertEqual(p.returncode, 0, p.stderr)
            # Nobody else reads anything.
            p = self.run_as(self.NOBODY, [], "sqlite3", self.db, "SELECT count(*) FROM conversations")
            self.assertNotEqual(p.returncode, 0)
            p = self.run_as(self.NOBODY, [], DEXSYNC, "-d", self.db, "status")
            self.assertNotEqual(p.returncode, 0)
            self.assertEqual(p.stdout, "")
        finally:
            daemon.send_signal(signal.SIGTERM)
            out, err = daemon.communicate(timeout=30)
        self.assertEqual(daemon.returncode, 0, err)
        self.assertNotIn(KEY, out + err)
        con = sqlite3.connect(self.db)
        self.assertEqual(con.execute("SELECT count(*) FROM outbox").fetchone()[0], 1)
        con.close()


if __name__ == "__main__":
    tap.main()
