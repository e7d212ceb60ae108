#!/usr/bin/env python3
"""CPU time of an idle dexsyncd over SECONDS (default 60), from /proc.

    python3 tests/bench/idle_cpu.py BUILD_DIR [SECONDS]

It starts the fake Dexra with 1,000 conversations, waits for the first walk,
then reads utime + stime of the daemon before and after the idle period."""
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fakedexra import FakeDexra  # noqa: E402


def cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    build, seconds = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 60
    with tempfile.TemporaryDirectory() as d:
        srv = FakeDexra(conversations=1000, key="idle-key").start()
        conf = os.path.join(d, "c.conf")
        with open(conf, "w") as f:
            f.write('database = "%s/m.db"\napi { base-url = "%s" api-key = "idle-key" }\n' % (d, srv.url))
        os.chmod(conf, 0o600)
        p = subprocess.Popen([os.path.join(build, "dexsyncd"), "-n", "-f", conf], stderr=subprocess.DEVNULL)
        db = os.path.join(d, "m.db")
        while True:
            try:
                if sqlite3.connect(db).execute("SELECT count(*) FROM sync_runs WHERE outcome = 'ok'").fetchone()[0]:
                    break
            except sqlite3.Error:
                pass
            time.sleep(0.1)
        time.sleep(1)
        before = cpu(p.pid)
        time.sleep(seconds)
        used = cpu(p.pid) - before
        p.terminate()
        p.wait()
        srv.stop()
        print("idle %.0f s (poll-interval 2s, interval 5m): %.0f ms of CPU" % (seconds, used * 1000))


if __name__ == "__main__":
    main()
