#!/usr/bin/env python3
"""The walk, the drain, the service loop and the CLI under valgrind: no
memory error, no definite or indirect leak, on success and on error paths."""
import os
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import DEXSYNC, DEXSYNCD, OutboxTest  # noqa: E402

VALGRIND = ["valgrind", "-q", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
            "--error-exitcode=99"]
SKIP = (not shutil.which("valgrind") and "valgrind not installed") or \
       (os.environ.get("SANITIZERS", "no") != "no" and "built with sanitizers")


@unittest.skipIf(SKIP, SKIP or "")
class ValgrindTest(OutboxTest):
    conversations = 300

    def vg(self, *args, expect=(0,)):
        p = subprocess.run(VALGRIND + list(args), capture_output=True, text=True, timeout=300, env=self.env())
        self.outputs += [p.stdout, p.stderr]
        self.assertNotEqual(p.returncode, 99, p.stderr[-3000:])
        self.assertIn(p.returncode, expect, p.stderr[-3000:])
        return p

    def test_walk_and_drain_with_faults(self):
        conf = self.write_conf("vg.conf", sync="fetch-details = true\nmax-details = 20",
                               outbox="min-backoff = 1s\nmax-backoff = 1s")
        self.vg(DEXSYNCD, "-f", conf, "-n", "-1")
        for args in (["send", "conv_0000001", "hi"], ["update-user", "u_1", "plan=pro", "ltv=3"],
                     ["new-conversation", "u_1", "--tag", "a"], ["send", "outbox:3", "x"]):
            self.vg(DEXSYNC, "-d", self.db, *args)
        self.srv.fault("status", code=500, prefix="/messages")
        self.srv.fault("malformed", prefix="/conversations", method="GET")  # the walk's page
        self.vg(DEXSYNCD, "-f", conf, "-n", "-1", expect=(1,))
        self.srv.fault("drop")
        self.srv.fault("status", code=404, prefix="/conversations/")
        self.srv.change("conv_0000009", subject="new")
        self.vg(DEXSYNCD, "-f", conf, "-n", "-1", expect=(0, 1))
        # the retry of the message that met the 500
        self.wait_for(lambda: self.scalar(
            "SELECT count(*) FROM outbox WHERE state = 'pending'"
            " AND next_attempt_at > strftime('%Y-%m-%dT%H:%M:%SZ', 'now')") == 0, 10, "the retry to fall due")
        self.vg(DEXSYNCD, "-f", conf, "-n", "-1")
        self.assertEqual(self.scalar("SELECT count(*) FROM outbox WHERE state = 'sent'"), 4)

    def test_cli_reports_and_refusals(self):
        for r in ("daily", "backlog", "outbox", "by-status", "sync-history", "user-attribute"):
            self.vg(DEXSYNC, "-d", self.db, "report", r, "--format", "json")
        self.vg(DEXSYNC, "-d", self.db, "report", "--format", "html")
        self.vg(DEXSYNC, "-d", self.db, "report", "daily", "--format", "table")
        self.vg(DEXSYNC, "-d", self.db, "report", "daily", "--format", "csv", "--since", "2025-12-01")
        self.vg(DEXSYNC, "-d", self.db, "report", "daily", "--since", "bad", expect=(1,))
        self.vg(DEXSYNC, "-d", self.db, "status", expect=(0,))
        self.vg(DEXSYNC, "-d", self.db, "outbox")
        self.vg(DEXSYNC, "-d", self.db, "cancel", "1", "99", expect=(1,))
        self.vg(DEXSYNC, "-d", self.db, "update-user", "u_1", "bad", expect=(1,))
        self.vg(DEXSYNC, "-d", os.path.join(self.dir, "nope.db"), "status", expect=(1,))
        # search: the second thread's connection, the rows' snapshot, a
        # malformed query, nothing found, output lost.
        self.vg(DEXSYNC, "-d", self.db, "search", "hello OR billing", "--limit", "5", "--format", "json")
        self.vg(DEXSYNC, "-d", self.db, "search", "hello", "--status", "open", "--format", "csv")
        self.vg(DEXSYNC, "-d", self.db, "search", "text:hello OR x:y", expect=(2,))
        self.vg(DEXSYNC, "-d", self.db, "search", "zzzqqq", expect=(1,))
        with open("/dev/full", "w") as full:
            p = subprocess.run(VALGRIND + [DEXSYNC, "-d", self.db, "search", "hello OR billing"], stdout=full,
                               stderr=subprocess.PIPE, text=True, timeout=300, env=self.env())
        self.assertEqual(p.returncode, 2, p.stderr[-3000:])
        bad = self.write_conf("bad.conf", sync="page-size = 0")
        self.vg(DEXSYNCD, "-t", "-f", bad, expect=(1,))
        secret = self.write_conf("secret.conf", api="api-key = SECRET1 SECRET2")
        self.vg(DEXSYNCD, "-t", "-f", secret, expect=(1,))
        self.vg(DEXSYNCD, "-t", "-f", self.conf)

    def test_service_loop_reload_and_stop(self):
        conf = self.write_conf("loop.conf", sync="interval = 1h", outbox="poll-interval = 1s")
        proc = subprocess.Popen(VALGRIND + [DEXSYNCD, "-n", "-f", conf], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env())
        self.wait_for(lambda: self.scalar("SELECT count(*) FROM sync_runs WHERE outcome = 'ok'") >= 2, 60,
                      "the first walk under valgrind")
        self.dexsync("send", "conv_0000001", "hello")
        self.wait_for(lambda: len(self.srv.messages) == 1, 30, "delivery")
        proc.send_signal(signal.SIGHUP)
        time.sleep(3)
        proc.send_signal(signal.SIGUSR1)
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        self.outputs += [out, err]
        self.assertIn("configuration reloaded", err)
        self.assertEqual(proc.returncode, 0, err[-3000:])


if __name__ == "__main__":
    tap.main()
