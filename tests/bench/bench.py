#!/usr/bin/env python3
"""dexsync's benchmark: the real dexsyncd against the floors of this machine.

    python3 tests/bench/bench.py BUILD_DIR [--sizes 100000,1000000] [--runs 3]

For each size N it generates N conversations as pages (once, kept in the
work directory), serves them with its own nginx on 127.0.0.1 (the cursor is
the page's file name, so the server is never the bottleneck), and measures,
as medians of --runs runs:
  fetch floor    one curl fetching every page over one keep-alive connection
  store floor    store_floor.c: Jansson parse + one prepared INSERT, one transaction
  parse          the same without SQLite (the parse part of the floor)
  reference      reference.py: http.client + json + sqlite3 upsert per page
  dexsyncd -1    into an empty database; then again over unchanged data
                 (rows written, bytes written from rusage = /proc/PID/io)
plus, once a size: the initial walk again with 20,000 messages draining
beside it (the walk's own seconds, from its log line, against the same
figure alone), and the longest a queuing client waited for the write lock
during an initial walk (a probe taking BEGIN IMMEDIATE every 20 ms); and
once: the outbox drain of 20,000 messages over nginx (and the TCP
connections it used), and the detail-fetch rate of 10,000 details."""
import argparse
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))

NGINX_CONF = """
worker_processes 1;
daemon off;
pid %(work)s/nginx.pid;
error_log %(work)s/nginx-error.log;
events { worker_connections 64; }
http {
    access_log off;
    log_format conn '$connection';
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    default_type application/json;
    server {
        listen 127.0.0.1:%(port)d;
        root %(work)s;
        location ~ ^/n(?<size>[0-9]+)/v1/conversations$ {
            set $page p0;
            if ($arg_cursor != "") { set $page $arg_cursor; }
            rewrite ^ /pages-$size/$page.json break;
        }
        location ~ ^/changed(?<size>[0-9]+)/v1/conversations$ {
            set $page p0;
            if ($arg_cursor != "") { set $page $arg_cursor; }
            rewrite ^ /pages-$size-changed/$page.json break;
        }
        location ~ ^/n[0-9]+/v1/conversations/(?<cid>[^/]+)$ {
            return 200 '{"id":"$cid","status":"open","participants":[{"type":"user","id":"u_1"},{"type":"admin","id":"admin_1"}]}';
        }
        location = /empty/v1/conversations {
            return 200 '{"data":[],"meta":{"total":0,"next_cursor":null}}';
        }
        location ~ ^/(n[0-9]+|empty)/v1/messages$ {
            access_log %(work)s/messages.log conn;
            return 201 '{"id":"msg_$request_id","conversation_id":"c","status":"sent","timestamp":1698228000}';
        }
    }
}
"""


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def timed(cmd, log=None, **kw):
    """Wall seconds, peak RSS KiB and bytes written (rusage) of cmd; its
    stderr appended to the list log, if given."""
    t = time.time()
    p = subprocess.run(["/usr/bin/time", "-f", "@@ %M %O"] + cmd, capture_output=True, text=True, **kw)
    wall = time.time() - t
    if p.returncode:
        sys.exit("failed: %s\n%s" % (" ".join(cmd), p.stderr[-2000:]))
    if log is not None:
        log.append(p.stderr)
    rss, out = p.stderr.rsplit("@@ ", 1)[1].split()[:2]
    return wall, int(rss), int(out) * 512


def conf(work, base, db, details=False, max_details=1000):
    path = os.path.join(work, "dexsyncd.conf")
    with open(path, "w") as f:
        f.write('database = "%s"\nlog-level = warning\n'
                'api { base-url = "%s" api-key = "bench" max-rate = 0 }\n'
                'sync { fetch-details = %s max-details = %d }\n'
                % (db, base, "true" if details else "false", max_details))
    os.chmod(path, 0o600)
    return path


def walk_seconds(stderr):
    """The seconds of the walk's own log line."""
    m = re.search(r"walk completed: .* ([0-9.]+) s$", stderr, re.M)
    assert m, stderr[-2000:]
    return float(m.group(1))


def queue_messages(db, n):
    con = sqlite3.connect(db)
    with con:
        con.executemany("INSERT INTO outbox(kind, payload) VALUES ('message', json_object("
                        "'conversation_id', ?, 'content', ?))",
                        (("conv_%d" % (i % 500), "message %d" % i) for i in range(n)))
    con.close()


def initial_with(dexsyncd, work, base, db, messages=0, probe=False):
    """An initial walk (schema made first against the empty list), with
    messages queued beside it; returns the walk's seconds, the messages
    sent by the time the walk ended with their rate (over the walk, or over
    the seconds from the first claim to the last answer when all went
    before its end), and the longest wait of a probe for
    the write lock (None without probe)."""
    fresh(db)
    empty = base.rsplit("/n", 1)[0] + "/empty/v1"
    sh([dexsyncd, "-f", conf(work, empty, db), "-1"])
    queue_messages(db, messages)
    longest, stop = [0.0], threading.Event()

    def prober():
        con = sqlite3.connect(db, timeout=120, isolation_level=None)
        while not stop.is_set():
            t = time.time()
            con.execute("BEGIN IMMEDIATE")
            con.execute("COMMIT")
            longest[0] = max(longest[0], time.time() - t)
            time.sleep(0.02)
        con.close()

    th = threading.Thread(target=prober)
    if probe:
        th.start()
    p = subprocess.run([dexsyncd, "-f", conf(work, base, db), "-1", "-l", "info"],
                       capture_output=True, text=True)
    stop.set()
    if probe:
        th.join()
    assert p.returncode == 0, p.stderr[-2000:]
    con = sqlite3.connect(db)
    sent, span = con.execute(
        "SELECT count(*), unixepoch(max(sent_at)) - unixepoch(min(sending_at)) + 1 FROM outbox "
        "WHERE sent_at <= (SELECT max(finished_at) FROM sync_runs)").fetchone()
    con.close()
    walk = walk_seconds(p.stderr)
    # All sent before the walk's end: the rate is over the seconds they took.
    rate = sent / (span if sent == messages and span else walk)
    return walk, (sent, rate), longest[0] if probe else None


def fresh(path):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--changed-walks", type=int, default=10,
                    help="10 %% changed walks before the history reports are timed")
    ap.add_argument("--work", default="/tmp/dexsync-bench")
    ap.add_argument("--port", type=int, default=18089)
    ap.add_argument("--ten-million", action="store_true",
                    help="then one run at 10,000,000 (3.8 GB of pages, about an hour)")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    dexsyncd = os.path.join(build, "dexsyncd")
    work = a.work
    os.makedirs(work, exist_ok=True)
    floor_bin = os.path.join(work, "store_floor")
    sh(["sh", "-c", "cc -O2 -o %s %s/store_floor.c $(pkg-config --cflags --libs jansson sqlite3)"
        % (floor_bin, HERE)])
    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF % {"work": work, "port": a.port})
    nginx = subprocess.Popen(["nginx", "-c", os.path.join(work, "nginx.conf"), "-p", work])
    time.sleep(0.5)
    rows, a.walks = [], {}
    try:
        for n in [int(s) for s in a.sizes.split(",")]:
            rows += bench_size(a, n, work, dexsyncd, floor_bin)
        rows += bench_drain(a, work, dexsyncd)
        if a.ten_million:
            rows += bench_ten_million(a, work, dexsyncd, floor_bin)
    finally:
        nginx.terminate()
        nginx.wait()
    print()
    print("%-44s %12s %14s %10s" % ("what", "median", "per second", "peak RSS"))
    for r in rows:
        print("%-44s %12s %14s %10s" % r)


def pages_of(a, n, work):
    """The pages of n conversations (made once), their MB, the API's base
    URL and a curl config fetching them all."""
    pages_dir = os.path.join(work, "pages-%d" % n)
    pages = (n + 99) // 100
    if not os.path.exists(os.path.join(pages_dir, "p%d.json" % (pages - 1))):
        print("generating %d conversations ..." % n, flush=True)
        sh([sys.executable, os.path.join(HERE, "gen_pages.py"), str(n), pages_dir])
    mb = sum(os.path.getsize(os.path.join(pages_dir, f)) for f in os.listdir(pages_dir)) / 1e6
    base = "http://127.0.0.1:%d/n%d/v1" % (a.port, n)
    curl_cfg = os.path.join(work, "curl-%d.cfg" % n)
    with open(curl_cfg, "w") as f:
        for p in range(pages):
            f.write('url = "%s/conversations?limit=100%s"\noutput = "/dev/null"\n'
                    % (base, "&cursor=p%d" % p if p else ""))
    return pages_dir, pages, mb, base, curl_cfg


def bench_size(a, n, work, dexsyncd, floor_bin):
    pages_dir, pages, mb, base, curl_cfg = pages_of(a, n, work)
    db = os.path.join(work, "bench.db")
    res = {k: [] for k in ("fetch", "store", "parse", "ref", "ref2", "d1", "d2", "rss1", "rss2", "bytes2")}
    for run in range(a.runs):
        print("N=%d run %d ..." % (n, run + 1), flush=True)
        res["fetch"].append(timed(["curl", "-s", "--http1.1", "-K", curl_cfg])[0])
        fresh(db)
        res["store"].append(timed([floor_bin, db, pages_dir, str(pages)])[0])
        res["parse"].append(timed([floor_bin, "--parse-only", db, pages_dir, str(pages)])[0])
        fresh(db)
        res["ref"].append(timed([sys.executable, os.path.join(HERE, "reference.py"), base, db])[0])
        res["ref2"].append(timed([sys.executable, os.path.join(HERE, "reference.py"), base, db])[0])
        fresh(db)
        c = conf(work, base, db)
        wall, rss, _ = timed([dexsyncd, "-f", c, "-1"])
        res["d1"].append(wall)
        res["rss1"].append(rss)
        wall, rss, written = timed([dexsyncd, "-f", c, "-1"])
        res["d2"].append(wall)
        res["rss2"].append(rss)
        res["bytes2"].append(written)
        con = sqlite3.connect(db)
        last = con.execute("SELECT inserted, changed, unchanged FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone()
        count = con.execute("SELECT count(*) FROM conversations").fetchone()[0]
        con.close()
        assert count == n and last[0] == 0 and last[1] == 0 and last[2] == n, (count, last)
    m = {k: statistics.median(v) for k, v in res.items()}
    a.walks[n] = (m["d1"], m["d2"])
    fmt = lambda s: "%.2f s" % s  # noqa: E731
    rate = lambda s: "%.0f conv/s" % (n / s)  # noqa: E731
    rows = [
        ("N=%d (%.0f MB of pages)" % (n, mb), "", "", ""),
        ("  fetch floor (curl, keep-alive)", fmt(m["fetch"]), rate(m["fetch"]), ""),
        ("  store floor (Jansson + 1 INSERT, 1 txn)", fmt(m["store"]), rate(m["store"]), ""),
        ("    of which parsing", fmt(m["parse"]), "", ""),
        ("  python reference, empty db", fmt(m["ref"]), rate(m["ref"]), ""),
        ("  python reference, unchanged", fmt(m["ref2"]), rate(m["ref2"]), ""),
        ("  dexsyncd -1, empty db", fmt(m["d1"]), rate(m["d1"]), "%.1f MiB" % (m["rss1"] / 1024)),
        ("    / store floor, / reference", "%.2f x" % (m["d1"] / m["store"]), "%.2f x" % (m["d1"] / m["ref"]), ""),
        ("  dexsyncd -1, unchanged (0 rows written)", fmt(m["d2"]), rate(m["d2"]), "%.1f MiB" % (m["rss2"] / 1024)),
        ("    bytes written (rusage)", "%.1f MB" % (m["bytes2"] / 1e6), "", ""),
        ("    / (fetch + parse)", "%.2f x" % (m["d2"] / (m["fetch"] + m["parse"])), "", ""),
    ]
    rows += bench_changed(a, n, work, dexsyncd, db, m["d2"])
    alone, _, _ = initial_with(dexsyncd, work, base, db)
    busy, (sent, msg_rate), _ = initial_with(dexsyncd, work, base, db, messages=20000)
    _, _, longest = initial_with(dexsyncd, work, base, db, probe=True)
    rows += [
        ("  initial walk alone (its log line)", fmt(alone), rate(alone), ""),
        ("  initial walk, 20,000 messages beside it", fmt(busy), rate(busy), ""),
        ("    messages sent by its end (to the second)", "%d" % sent, "%.0f msg/s" % msg_rate, ""),
        ("    / alone", "%.2f x" % (busy / alone), "", ""),
        ("  longest wait for the write lock (probe)", "%.2f s" % longest, "", ""),
    ]
    rows += bench_search(a, work, dexsyncd, base, db, m["store"])
    if n <= 100000:
        rows += bench_details(a, n, work, dexsyncd, base, db, m["d1"])
    return rows


def bench_search(a, work, dexsyncd, base, db, store):
    """The full-text index: its build at the end of an initial mirror (the
    log lines' times), the database with and without it, and dexsync search
    for a common word (in most rows) and a rare one (10 rows), warm."""
    dexsync = os.path.join(os.path.dirname(dexsyncd), "dexsync")
    builds, common, rare = [], [], []
    for run in range(a.runs):
        fresh(db)
        p = subprocess.run([dexsyncd, "-f", conf(work, base, db), "-1", "-l", "info"],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
        # Built two at once: the whole build's time, not the sum of each.
        built = re.findall(r"the 2 deferred full-text indexes are built in ([0-9.]+) s", p.stderr)
        assert len(built) == 1, p.stderr[-2000:]
        builds.append(float(built[0]))
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("UPDATE conversations SET subject = subject || ' zeppelin' "
                "WHERE rowid IN (SELECT rowid FROM conversations ORDER BY rowid LIMIT 10)")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    with_index = os.path.getsize(db)
    bare = db + ".bare"
    fresh(bare)
    shutil.copyfile(db, bare)
    con = sqlite3.connect(bare, isolation_level=None)
    con.executescript("DROP TABLE conversations_fts; DROP TABLE messages_fts; VACUUM;")
    con.close()
    without = os.path.getsize(bare)
    fresh(bare)
    for word, times in (("refund", common), ("zeppelin", rare)):
        cmd = [dexsync, "-d", db, "search", word]
        sh(cmd)     # warm
        for run in range(max(a.runs, 5)):
            times.append(timed(cmd)[0])
    fmt = lambda s: "%.2f s" % s  # noqa: E731
    build = statistics.median(builds)
    return [
        ("  full-text index build (end of initial)", fmt(build), "", ""),
        ("    / store floor", "%.2f x" % (build / store), "", ""),
        ("  database with / without the index", "%.0f MB" % (with_index / 1e6),
         "%.0f MB" % (without / 1e6), ""),
        ("  dexsync search, common word (warm)", "%.0f ms" % (statistics.median(common) * 1000), "", ""),
        ("  dexsync search, rare word (warm)", "%.0f ms" % (statistics.median(rare) * 1000), "", ""),
    ]


def bench_ten_million(a, work, dexsyncd, floor_bin):
    """One run at 10,000,000: the floors, the initial mirror (its full-text
    builds from the log) and the unchanged re-walk with their peak RSS and
    their ratio to the 1,000,000 figures of this run, the database's bytes
    per conversation, and status, every built-in report and a search,
    warm."""
    n = 10000000
    pages_dir, pages, mb, base, curl_cfg = pages_of(a, n, work)
    db = os.path.join(work, "bench.db")
    print("N=%d ..." % n, flush=True)
    fetch = timed(["curl", "-s", "--http1.1", "-K", curl_cfg])[0]
    fresh(db)
    store = timed([floor_bin, db, pages_dir, str(pages)])[0]
    parse = timed([floor_bin, "--parse-only", db, pages_dir, str(pages)])[0]
    fresh(db)
    c = conf(work, base, db)
    log = []
    d1, rss1, _ = timed([dexsyncd, "-f", c, "-1", "-l", "info"], log=log)
    built = re.findall(r"built the deferred full-text index (\w+) in ([0-9.]+) s", log[0])
    whole = float(re.findall(r"the 2 deferred full-text indexes are built in ([0-9.]+) s", log[0])[0])
    d2, rss2, _ = timed([dexsyncd, "-f", c, "-1"])
    con = sqlite3.connect(db, isolation_level=None)
    last = con.execute("SELECT inserted, changed, unchanged FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone()
    assert last == (0, 0, n), last
    con.execute("UPDATE conversations SET subject = subject || ' zeppelin' "
                "WHERE rowid IN (SELECT rowid FROM conversations ORDER BY rowid LIMIT 10)")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    size = os.path.getsize(db)
    fmt = lambda s: "%.2f s" % s  # noqa: E731
    ratio = lambda t, i: "%.1f x the 1,000,000" % (t / a.walks[1000000][i]) if 1000000 in a.walks else ""  # noqa: E731
    rows = [
        ("N=%d (%.0f MB of pages, one run)" % (n, mb), "", "", ""),
        ("  fetch floor (curl, keep-alive)", fmt(fetch), "", ""),
        ("  store floor (Jansson + 1 INSERT, 1 txn)", fmt(store), "", ""),
        ("    of which parsing", fmt(parse), "", ""),
        ("  dexsyncd -1, empty db", fmt(d1), ratio(d1, 0), "%.1f MiB" % (rss1 / 1024)),
        ("    / store floor", "%.2f x" % (d1 / store), "", ""),
        ("    mirror ready (less the full-text builds) / store floor",
         "%.2f x" % ((d1 - whole) / store), "", ""),
        ("    full-text build, both at once", "%.2f s" % whole, "", ""),
    ] + [("      %s" % name, "%s s" % secs, "", "") for name, secs in built] + [
        ("  dexsyncd -1, unchanged (0 rows written)", fmt(d2), ratio(d2, 1), "%.1f MiB" % (rss2 / 1024)),
        ("    / (fetch + parse)", "%.2f x" % (d2 / (fetch + parse)), "", ""),
        ("  database", "%.2f GB" % (size / 1e9), "%.0f B/conv" % (size / n), ""),
    ]
    dexsync = os.path.join(os.path.dirname(dexsyncd), "dexsync")
    names = ["by-status", "daily", "backlog", "backlog-daily", "time-to-close", "reopened", "changes",
             "outbox", "sync-history"]
    for what, cmd in ([("status", ["status"])] +
                      [("report " + r, ["report", r, "--format", "csv"]) for r in names] +
                      [("search, rare word", ["search", "zeppelin"]),
                       ("search, common word", ["search", "refund"])]):
        cmd = [dexsync, "-d", db] + cmd
        sh(cmd)     # warm
        times = [timed(cmd)[0] for run in range(3)]
        rows.append(("  dexsync %s (warm)" % what, "%.2f s" % statistics.median(times), "", ""))
    return rows


def bench_changed(a, n, work, dexsyncd, db, unchanged):
    """--changed-walks walks (ten by default), each finding another 10 % of the conversations changed
    (gen_pages.py N DIR K), over the mirror the runs above left; then the
    history reports over it, and the bytes an event takes."""
    pages_dir = os.path.join(work, "pages-%d-changed" % n)
    base = "http://127.0.0.1:%d/changed%d/v1" % (a.port, n)
    c = conf(work, base, db)
    con = sqlite3.connect(db)
    before = con.execute("SELECT count(*) FROM conversation_events").fetchone()[0]
    con.close()
    walks = []
    for k in range(1, a.changed_walks + 1):
        print("N=%d changed walk %d ..." % (n, k), flush=True)
        shutil.rmtree(pages_dir, ignore_errors=True)
        sh([sys.executable, os.path.join(HERE, "gen_pages.py"), str(n), pages_dir, str(k)])
        wall, _, _ = timed([dexsyncd, "-f", c, "-1"])
        con = sqlite3.connect(db)
        changed = con.execute("SELECT changed FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone()[0]
        events = con.execute("SELECT count(*) FROM conversation_events").fetchone()[0]
        con.close()
        assert changed == n // 10, (changed, n)
        walks.append((wall, events - before))
        before = events
    wall, events = walks[0]
    rows = [("  dexsyncd -1, 10 %% changed (%d events)" % events, "%.2f s" % wall, "%.0f conv/s" % (n / wall), ""),
            ("    / unchanged", "%.2f x" % (wall / unchanged), "", ""),
            ("    median of %d such walks" % len(walks), "%.2f s" % statistics.median(w for w, _ in walks), "", "")]
    out = sh(["sqlite3", db, "SELECT count(*), (SELECT sum(pgsize) FROM dbstat WHERE name GLOB "
              "'conversation_events*') FROM conversation_events"]).stdout.split("|")
    rows.append(("    bytes per event, with its indexes", "%.0f B" % (int(out[1]) / int(out[0])),
                 "%s events" % out[0].strip(), ""))
    dexsync = os.path.join(os.path.dirname(dexsyncd), "dexsync")
    for name in ("backlog-daily", "time-to-close", "reopened", "changes"):
        t = time.time()
        sh([dexsync, "-d", db, "report", name, "--format", "csv"])
        rows.append(("    report %s" % name, "%.2f s" % (time.time() - t), "", ""))
    t = time.time()
    sh([dexsync, "-d", db, "report", "--format", "html"])
    rows.append(("    report --format html (all)", "%.2f s" % (time.time() - t), "", ""))
    shutil.rmtree(pages_dir, ignore_errors=True)
    return rows


def bench_details(a, n, work, dexsyncd, base, db, walk):
    times = []
    for run in range(a.runs):
        fresh(db)
        times.append(timed([dexsyncd, "-f", conf(work, base, db, True, 10000), "-1"])[0])
    d = statistics.median(times) - walk
    return [("  detail fetch, 10,000 (keep-alive)", "%.2f s" % d, "%.0f req/s" % (10000 / d), "")]


def bench_drain(a, work, dexsyncd):
    db = os.path.join(work, "drain.db")
    base = "http://127.0.0.1:%d/empty/v1" % a.port
    c = conf(work, base, db)
    times, conns, rss = [], [], []
    for run in range(a.runs):
        fresh(db)
        timed([dexsyncd, "-f", c, "-1"])
        con = sqlite3.connect(db)
        with con:
            con.executemany("INSERT INTO outbox(kind, payload) VALUES ('message', json_object("
                            "'conversation_id', ?, 'content', ?))",
                            (("conv_%d" % (i % 500), "message %d" % i) for i in range(20000)))
        con.close()
        log = os.path.join(work, "messages.log")
        open(log, "w").close()
        wall, r, _ = timed([dexsyncd, "-f", c, "-1"])
        times.append(wall)
        rss.append(r)
        with open(log) as f:
            conns.append(len(set(f.read().split())))
        con = sqlite3.connect(db)
        sent = con.execute("SELECT count(*) FROM outbox WHERE state = 'sent'").fetchone()[0]
        con.close()
        assert sent == 20000, sent
    t = statistics.median(times)
    return [("outbox drain, 20,000 messages", "%.2f s" % t, "%.0f msg/s" % (20000 / t),
             "%.1f MiB" % (statistics.median(rss) / 1024)),
            ("  TCP connections used", "%d" % max(conns), "", "")]


if __name__ == "__main__":
    main()
