#!/usr/bin/env python3
"""Rates of the real dexsyncd against the fake Dexra (python, so the server
is the slower side: these are end-to-end figures, not dexsyncd's ceiling;
the nginx benchmark of issue 6 measures that).

    python3 tests/bench/fake_rates.py BUILD_DIR [N ...]

For each N: conversations/s and peak RSS of `dexsyncd -1` into an empty
database; then the drain rate of 5,000 queued messages and the number of
TCP connections it used."""
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fakedexra import FakeDexra  # noqa: E402

KEY = "bench-key-not-secret"


def conf(d, url):
    path = os.path.join(d, "dexsyncd.conf")
    with open(path, "w") as f:
        f.write('database = "%s/mirror.db"\napi { base-url = "%s" api-key = "%s" max-rate = 0 }\n'
                'sync { fetch-details = false }\n' % (d, url, KEY))
    os.chmod(path, 0o600)
    return path


def once(build, path):
    t = time.time()
    p = subprocess.run(["/usr/bin/time", "-v", os.path.join(build, "dexsyncd"), "-f", path, "-1", "-l", "err"],
                       capture_output=True, text=True)
    wall = time.time() - t
    if p.returncode:
        sys.exit(p.stderr)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return wall, rss


def main():
    build = sys.argv[1]
    for n in [int(a) for a in sys.argv[2:]] or [2500, 25000]:
        with tempfile.TemporaryDirectory() as d:
            srv = FakeDexra(conversations=n, key=KEY).start()
            wall, rss = once(build, conf(d, srv.url))
            print("walk of %7d conversations: %6.2f s, %8.0f conversations/s, peak RSS %5.1f MiB"
                  % (n, wall, n / wall, rss / 1024))
            srv.stop()
    with tempfile.TemporaryDirectory() as d:
        srv = FakeDexra(conversations=20, key=KEY).start()
        path = conf(d, srv.url)
        once(build, path)
        con = sqlite3.connect(os.path.join(d, "mirror.db"))
        with con:
            con.executemany("INSERT INTO outbox(kind, payload) VALUES ('message', json_object("
                            "'conversation_id', ?, 'content', ?))",
                            (("conv_%07d" % (i % 20 + 1), "bench %d" % i) for i in range(5000)))
        con.close()
        srv.connections.clear()
        wall, rss = once(build, path)
        print("drain of 5000 messages:       %6.2f s, %8.0f messages/s, %d TCP connection(s), peak RSS %.1f MiB"
              % (wall, 5000 / wall, len(srv.connections), rss / 1024))
        srv.stop()


if __name__ == "__main__":
    main()
